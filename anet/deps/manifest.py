"""A local deps folder (or file) as a manifest: what the end machines must hold, and its id.

`scan` follows rsync's rule for the argument: `deps/` (trailing slash) means the folder's
contents, `deps` the folder itself, a file just that file. Everything that could not be
reproduced safely on the far side (a symlink leaving the tree, a device file, an unreadable
file) is refused here, with the offending path, before anything is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.syncproto import (
    DIR,
    FILE,
    LINK,
    EntryError,
    check_delta,
    check_manifest,
    encode_manifest,
    manifest_delta,
)

from ..errors import UsageError
from ..logs import get_logger
from .hashcache import HashCache, default_cache_path, open_cache
from .known import is_known, known_folder, recall, remember

log = get_logger()


class DepsError(UsageError):
    """The deps argument cannot be synced as it is."""


@dataclass(frozen=True, slots=True)
class Tree:
    """A scanned deps tree: `root` is the local folder that entry paths are relative to."""

    root: bytes
    entries: list[list[Any]]
    id: bytes
    size: int
    files: int
    known: Path | None = None
    """Where manifests of earlier scans are kept (known.py), if anywhere."""
    encoded: bytes = b""
    """The canonical manifest (its SHA-256 is `id`), kept by `remember` as it is."""

    def local_path(self, index: int) -> bytes:
        return os.path.join(self.root, self.entries[index][0])


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def scan(argument: str | bytes, cache: HashCache, known: Path | None = None) -> Tree:
    """Build the manifest of `argument`; DepsError names what is missing or unsafe.

    A manifest remembered in `known` (known.py) passed these checks when it was kept, and
    one with the same id is the same bytes: it is not checked again. Otherwise only what
    changed since this argument's previous scan is (the digest cache names that scan).
    """
    raw = os.fsencode(argument)
    path = os.path.abspath(raw)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DepsError(f"deps {_show(raw)!r} does not exist") from None
    except OSError as exc:
        raise DepsError(f"cannot read deps {_show(raw)!r}: {exc.strerror}") from None
    entries: list[list[Any]] = []
    if stat.S_ISREG(st.st_mode):
        root, name = os.path.split(path)
        cache.load(path)
        entries.append(_entry(path, name, st, cache))
    elif stat.S_ISDIR(st.st_mode):
        if raw.endswith(b"/"):
            root, prefix = path, b""
        else:
            root, prefix = os.path.split(path)
            entries.append([prefix, DIR, stat.S_IMODE(st.st_mode), 0, st.st_mtime_ns, b""])
        cache.load(path)
        _walk(path, prefix, cache, entries)
    else:
        raise DepsError(f"deps {_show(raw)!r} is neither a file nor a folder")
    entries.sort(key=lambda e: e[0])
    try:
        encoded = encode_manifest(entries)
    except struct.error:  # a field the canonical form cannot hold: the check names it
        encoded = b""
    tree = hashlib.sha256(encoded).digest() if encoded else b""
    if not tree or not is_known(known, tree):
        try:
            _check(entries, recall(known, cache.previous) if cache.previous else None)
        except EntryError as exc:
            raise DepsError(f"deps {_show(raw)!r}: {exc}") from None
    cache.previous = tree
    files = [e for e in entries if e[1] == FILE]
    return Tree(root, entries, tree, sum(e[3] for e in files), len(files), encoded=encoded)


def _check(entries: list[list[Any]], previous: list[list[Any]] | None) -> None:
    """`check_manifest`, or when the previous scan of this argument is remembered (it passed
    it), `check_delta` of what changed since: a one-file edit checks one entry in full."""
    if previous is None:
        check_manifest(entries)
    else:
        check_delta(entries, manifest_delta(previous, entries)[1])


def scan_deps(argument: str, environ: Mapping[str, str]) -> Tree:
    """`scan` with the user's digest cache: a 10,000-file tree is hashed once, not per run."""
    hash_cache = default_cache_path(environ)
    folder = known_folder(hash_cache)
    with open_cache(hash_cache) as cache:
        tree = scan(argument, cache, folder)
    remember(folder, tree.id, tree.entries, tree.encoded)
    tree = dataclasses.replace(tree, known=folder, encoded=b"")
    log.info(
        f"deps {argument}: {len(tree.entries)} entries, {tree.size} bytes, "
        f"{cache.hashed} file(s) hashed",
        tree=tree.id.hex()[:16],
    )
    return tree


def start_scan(argument: str, environ: Mapping[str, str]) -> asyncio.Future[Tree]:
    """`scan_deps` in a worker thread: hashing a big tree overlaps the SSH handshakes. Await
    the future for the tree, or for the DepsError naming what is wrong with it."""
    return asyncio.get_running_loop().run_in_executor(None, scan_deps, argument, environ)


def _walk(folder: bytes, prefix: bytes, cache: HashCache, out: list[list[Any]]) -> None:
    """Every entry under `folder`, depth first. Bytes in, bytes out (no name is decoded) and
    the stat scandir already made: this loop is most of a no-op re-sync's scan."""
    try:
        with os.scandir(folder) as listing:
            children = sorted((child.name, child) for child in listing)
    except OSError as exc:
        raise DepsError(f"cannot read folder {_show(folder)!r}: {exc.strerror}") from None
    head = prefix + b"/" if prefix else b""
    for name, child in children:
        rel = head + name
        st = child.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            out.append([rel, DIR, stat.S_IMODE(st.st_mode), 0, st.st_mtime_ns, b""])
            _walk(child.path, rel, cache, out)
        else:
            out.append(_entry(child.path, rel, st, cache))


def _entry(full: bytes, rel: bytes, st: os.stat_result, cache: HashCache) -> list[Any]:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return [rel, LINK, 0o777, 0, st.st_mtime_ns, os.readlink(full)]
    if not stat.S_ISREG(st.st_mode):
        raise DepsError(f"{_show(full)!r} is a device, socket or pipe: only files can be synced")
    try:
        digest = cache.digest(full, st)
    except OSError as exc:
        raise DepsError(f"cannot read {_show(full)!r}: {exc.strerror}") from None
    return [rel, FILE, mode, st.st_size, st.st_mtime_ns, digest]
