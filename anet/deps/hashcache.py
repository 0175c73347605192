"""Content digests of local files, remembered across runs so a big deps tree is hashed once.

A file's digest is reused while its (device, inode, size, mtime, ctime) are unchanged: ctime
moves on any write or chmod, even one that restores the mtime, so an edited file is never
taken for the old one. The digests of one deps argument are one file under
$XDG_CACHE_HOME/anet/hashes/, named by the argument's absolute path and read whole with
`marshal` (10 ms for 10,000 files on a busy box, where a SQLite query building the same
table took 20-26 ms of every re-sync). Losing it only costs one re-hash, so every error with
it degrades to hashing, never to a failed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import marshal
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..logs import get_logger

log = get_logger()

READ_SIZE = 1 << 20
FORMAT = 2
"""Bumped when the records' layout changes: an older file is then ignored (one re-hash)."""
MAX_RECORDS = 32
"""Appended records after which the file is written anew: each costs a `marshal.load`."""
KEEP_DAYS = 30
"""A deps argument's digests unused this long are dropped (its next sync hashes it again)."""
MAX_FILES = 64
"""Digest files kept at most, the most recently written: each holds up to a megabyte."""
TEMP_AGE = 3600
"""Seconds after which a save's temporary file is taken for one a crash left behind."""

Key = tuple[int, int, int, int, int]


def default_cache_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "~"), ".cache")
    return Path(os.path.expanduser(base)) / "anet" / "hashes"


def stat_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: bytes) -> bytes:
    """SHA-256 of a file's content, read in bounded chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            digest.update(chunk)
    return digest.digest()


Entry = tuple[int, int, int, int, int, bytes]
"""A file's stat key and its digest."""


class HashCache:
    """Digest lookups for one deps argument (`load` it first).

    Its file is a run of marshal records `(FORMAT, root, {path: entry}, tree id)`, read in
    order, later ones updating earlier ones: a scan that hashed a few files appends them
    (a one-file change writes about 100 bytes, not the 800 KB of a 10,000-file table), and
    the file is written anew, holding only the files this scan looked up, once appends pile
    up or many files have left the tree.
    """

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._root = b""
        self._known: dict[bytes, Entry] = {}
        self._seen: dict[bytes, Entry] = {}
        self._new: dict[bytes, Entry] = {}
        self._records = 0
        self.hashed = 0
        self.previous = b""
        """The tree id of the argument's last scan (b"" if none); `scan` sets this one's."""
        self._loaded_previous = b""

    def _file(self, root: bytes) -> Path | None:
        if self._folder is None:
            return None
        return self._folder / hashlib.sha256(root).hexdigest()[:32]

    def load(self, root: bytes) -> None:
        """Read every remembered digest of `root` (an absolute path) and under it."""
        self._root, self._known, self._seen, self._new, self._records = root, {}, {}, {}, 0
        self.previous = self._loaded_previous = b""
        path = self._file(root)
        if path is None:
            return
        try:
            stream = io.BytesIO(path.read_bytes())
        except OSError:
            return  # none yet: hash
        while True:
            at_end = stream.tell() == len(stream.getbuffer())
            try:
                form, owner, table, previous = marshal.load(stream)
                if form != FORMAT or owner != root or not isinstance(table, dict):
                    raise ValueError("another layout")
            except (EOFError, ValueError, TypeError):
                if not at_end:  # a damaged or torn record: what came before stands, and the
                    self._records = 0  # next save writes the file anew, not after it
                return
            self._known.update(table)
            self.previous = self._loaded_previous = previous
            self._records += 1

    def digest(self, path: bytes, st: os.stat_result) -> bytes:
        key = stat_key(st)
        known = self._known.get(path)
        if known is not None and known[:5] == key:
            self._seen[path] = known
            return known[5]
        digest = file_digest(path)
        self.hashed += 1
        self._seen[path] = self._new[path] = (*key, digest)
        return digest

    def save(self) -> None:
        path = self._file(self._root)
        if path is None or not (self._new or self.previous != self._loaded_previous):
            return
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _drop_older_cache(path.parent)
            if self._worth_rewriting():
                tmp = path.with_name(f".{path.name}.{os.getpid()}")
                tmp.write_bytes(marshal.dumps((FORMAT, self._root, self._seen, self.previous)))
                tmp.replace(path)
                self._records = 1
                _prune(path.parent, path)
            else:  # one write(2) in append mode: two runs' records do not interleave
                with open(path, "ab") as f:
                    f.write(marshal.dumps((FORMAT, self._root, self._new, self.previous)))
                self._records += 1
        except (OSError, ValueError) as exc:
            log.info(f"cannot save file digests ({exc}); the next run hashes again")
        self._new = {}
        self._loaded_previous = self.previous

    def _worth_rewriting(self) -> bool:
        """No file yet, many appends, or many remembered files that this scan did not see."""
        if not self._records or self._records >= MAX_RECORDS:
            return True
        gone = len(self._known) - sum(1 for path in self._seen if path in self._known)
        return gone > max(64, len(self._seen) // 10)

    def close(self) -> None:
        self._known = {}


def _drop_older_cache(folder: Path) -> None:
    """An older anet kept every digest in one SQLite file beside `folder`, which nothing
    reads now: removed once, when the folder that replaces it is made."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            folder.with_name(f"{folder.name}.sqlite{suffix}").unlink()


def _prune(folder: Path, own: Path) -> None:
    """Drop the digests of deps arguments not synced for KEEP_DAYS, those past the MAX_FILES
    most recent, and saves a crash left half-written: one file per argument ever synced would
    otherwise stay in the user's cache for good. Run when a file is written anew (its first
    save, then every MAX_RECORDS appends), so a re-sync that changed nothing pays nothing."""
    now, kept = time.time(), []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name == own.name or not entry.is_file(follow_symlinks=False):
                    continue
                age = now - entry.stat(follow_symlinks=False).st_mtime
                if not entry.name.startswith("."):
                    kept.append((age, entry.path))
                elif age > TEMP_AGE:  # another run's save in progress is younger
                    os.unlink(entry.path)
    kept.sort()
    for rank, (age, path) in enumerate(kept, start=1):  # this argument's own is the newest
        if age > KEEP_DAYS * 86400 or rank >= MAX_FILES:
            with contextlib.suppress(OSError):
                os.unlink(path)


@contextlib.contextmanager
def open_cache(path: Path | None) -> Iterator[HashCache]:
    cache = HashCache(path)
    try:
        yield cache
        cache.save()
    finally:
        cache.close()
