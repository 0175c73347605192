"""Manifests of earlier scans, kept on the master so a re-sync can send only the difference.

A host that lacks the tree names the newest tree it holds (SyncState.base); if this machine
scanned that tree before, the master sends the new manifest as changes to it (SyncDelta), so
a one-file change costs one entry on the wire instead of the whole manifest. Each manifest
is a file named by its tree id, holding the canonical bytes whose SHA-256 is that id: a
damaged or foreign file is noticed and ignored. Losing them only costs a full manifest.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from dispatcher.syncproto import EntryError, decode_manifest, encode_manifest

from ..logs import get_logger

log = get_logger()

KEEP = 8
"""Manifests kept: the bases hosts may still name (each host keeps its newest trees)."""


def known_folder(hash_cache: Path) -> Path:
    """Next to the digest cache: both are the master's memory of deps it has scanned."""
    return hash_cache.parent / "manifests"


def remember(folder: Path, tree_id: bytes, entries: list[list[Any]], encoded: bytes = b"") -> None:
    """Keep this manifest (`encoded` if the caller has it: 7 ms of 10,000 entries), or mark
    it recent, and drop all but the KEEP most recent."""
    path = folder / tree_id.hex()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            os.utime(path)
        else:
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(encoded or encode_manifest(entries))
            tmp.replace(path)
        _prune(folder)
    except OSError as exc:
        log.info(f"cannot keep the deps manifest ({exc}); re-syncs send it whole")


def is_known(folder: Path | None, tree_id: bytes) -> bool:
    """Was this manifest kept by an earlier scan (which checked it)?"""
    return folder is not None and (folder / tree_id.hex()).is_file()


def recall(folder: Path | None, tree_id: bytes) -> list[list[Any]] | None:
    """The manifest of `tree_id` if this machine scanned it before and the file is sound."""
    if folder is None or len(tree_id) != 32:
        return None
    return _recall(folder, tree_id)


@functools.lru_cache(maxsize=4)
def _recall(folder: Path, tree_id: bytes) -> list[list[Any]] | None:
    """Read once per run, whatever the number of hosts that name this base (read-only)."""
    try:
        data = (folder / tree_id.hex()).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).digest() != tree_id:
        return None
    try:
        return decode_manifest(data)
    except EntryError:
        return None


def _prune(folder: Path) -> None:
    found = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            found.append((path.stat().st_mtime, path))
    for _, path in sorted(found, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):
            path.unlink()
