"""Content digests of local files, remembered across runs so a big deps tree is hashed once.

A file's digest is reused while its (device, inode, size, mtime, ctime) are unchanged: ctime
moves on any write or chmod, even one that restores the mtime, so an edited file is never
taken for the old one. The cache is one SQLite file under $XDG_CACHE_HOME/anet; losing it only
costs one re-hash, so every error with it degrades to hashing, never to a failed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..logs import get_logger

log = get_logger()

READ_SIZE = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    path BLOB PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,
    mtime_ns INTEGER, ctime_ns INTEGER, digest BLOB
)
"""

Key = tuple[int, int, int, int, int]


def default_cache_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "~"), ".cache")
    return Path(os.path.expanduser(base)) / "anet" / "hashes.sqlite"


def stat_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: bytes) -> bytes:
    """SHA-256 of a file's content, read in bounded chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            digest.update(chunk)
    return digest.digest()


class HashCache:
    """Digest lookups for one tree: everything under `root` is loaded in one query."""

    def __init__(self, path: Path | None) -> None:
        self._db: sqlite3.Connection | None = None
        self._known: dict[bytes, tuple[Key, bytes]] = {}
        self._new: list[tuple[bytes, Key, bytes]] = []
        self.hashed = 0
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, timeout=5.0)
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            log.info(f"hash cache unavailable ({exc}); hashing every file")
            self._db = None

    def load(self, root: bytes) -> None:
        """Read every cached digest of `root` and under it (paths are absolute bytes)."""
        if self._db is None:
            return
        prefix = root.rstrip(b"/") + b"/"
        upper = prefix[:-1] + b"0"  # "/" + 1: every path under the prefix sorts before it
        with contextlib.suppress(sqlite3.Error):
            rows = self._db.execute(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM digests "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (root, prefix, upper),
            )
            for path, dev, ino, size, mtime_ns, ctime_ns, digest in rows:
                self._known[path] = ((dev, ino, size, mtime_ns, ctime_ns), digest)

    def digest(self, path: bytes, st: os.stat_result) -> bytes:
        key = stat_key(st)
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        digest = file_digest(path)
        self.hashed += 1
        self._new.append((path, key, digest))
        return digest

    def save(self) -> None:
        if self._db is None or not self._new:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((p, *k, d) for p, k, d in self._new),
                )
        except sqlite3.Error as exc:
            log.info(f"cannot save file digests ({exc}); the next run hashes again")
        self._new.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@contextlib.contextmanager
def open_cache(path: Path | None) -> Iterator[HashCache]:
    cache = HashCache(path)
    try:
        yield cache
        cache.save()
    finally:
        cache.close()
