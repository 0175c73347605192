"""The deps-sync messages and the rules for tree entries, shared by master and dispatcher.

A deps tree travels as a manifest: one entry per file, directory and symlink, sorted by path
(so a directory always comes before what it holds). Its id is the SHA-256 of the manifest, so
a host that already holds a complete tree with that id needs nothing more: the no-op re-sync
is one small request and one small reply.

A sync on the wire (every frame carries the request's `rid`):

    master                              dispatcher
    SyncOffer(tree id)          ->
                                <-      SyncState(ready, path, fsid, base)   ready: done
    SyncEntries(chunk) ...      ->      the manifest, or if the master remembers `base`:
    SyncEntries(chunk, last)    ->      SyncDelta(base, removed, changed) ..., last
                                <-      SyncWant(bitmap of files to send, files reused)
    SyncData(file, offset) ...  ->      (only the wanted files, in 256 KiB chunks;
    SyncFiles(count, data) ...  ->       small ones whole, many to a frame)
    SyncCommit                  ->
                                <-      SyncDone(path, error)      also early, on any error

Entries are `[path, kind, mode, size, mtime_ns, digest]`: `path` is bytes (any file name
survives), `digest` the SHA-256 of a file's content or a symlink's target. `check_entry` is the
one judge of what is acceptable, applied by the master before sending and by the dispatcher
again on receipt, so a buggy or hostile master still cannot write outside the tree.

Python 3.8+, stdlib + msgpack only: this module runs on the end machines too.
"""

from __future__ import annotations

import hashlib
import posixpath
import struct

from .protocol import (
    DISPATCHER,
    MASTER,
    MAX_NAME,
    MAX_PATH,
    MAX_TEXT,
    OUTPUT_CHUNK,
    Message,
    bounded,
    message,
)
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, List, Optional, Set

FILE = 0
DIR = 1
LINK = 2
KINDS = (FILE, DIR, LINK)
MODE_BITS = 0o7777

ENTRIES_PER_FRAME = 2000
"""Manifest entries per SyncEntries frame: a few hundred KiB at most, under MAX_FRAME."""
SMALL_FILE = 64 << 10
"""Files up to this size travel whole, several to a SyncFiles frame."""
MAX_FILES_FRAME = OUTPUT_CHUNK + SMALL_FILE
"""A SyncFiles frame's data: filled to OUTPUT_CHUNK, the last file may pass it."""


@message
@frozen
class SyncOffer(Message):
    """Master -> dispatcher: "do you hold tree `tree` (a manifest digest)?"."""

    CODE = 11
    SENDER = MASTER
    rid: int
    tree: bytes
    entries: int
    size: int


@message
@frozen
class SyncState(Message):
    """Dispatcher -> master: the answer to SyncOffer.

    `fsid` names the file system holding the tree store: hosts that share one (an NFS home)
    report the same id, so the master syncs it once and lets the others wait.
    """

    CODE = 12
    SENDER = DISPATCHER
    rid: int
    ready: bool
    path: bytes = bounded(length=MAX_PATH)
    fsid: str = bounded(length=MAX_NAME)
    base: bytes = bounded(length=32)
    """When not ready: the id of the tree the host would build from (its newest), b"" if it
    holds none. A master that remembers that manifest sends only the difference."""


@message
@frozen
class SyncEntries(Message):
    """Master -> dispatcher: a chunk of the manifest; `last` ends it."""

    CODE = 13
    SENDER = MASTER
    rid: int
    tree: bytes
    entries: list
    last: bool


@message
@frozen
class SyncDelta(Message):
    """Master -> dispatcher: the manifest as its difference from tree `base` (the one the
    host named in SyncState): `removed` paths of `base` and the `entries` that are new or
    changed, in chunks; `last` ends it, and the merged manifest's digest must equal `tree`.
    A one-file change then costs one entry on the wire, not 10,000."""

    CODE = 30
    SENDER = MASTER
    rid: int
    tree: bytes
    base: bytes
    removed: list
    entries: list
    last: bool


@message
@frozen
class SyncWant(Message):
    """Dispatcher -> master: bit i of `want` set = send file entry i; `reused` files were
    found in earlier trees on the host and need no transfer."""

    CODE = 14
    SENDER = DISPATCHER
    rid: int
    want: bytes
    reused: int = bounded(0)


@message
@frozen
class SyncData(Message):
    """Master -> dispatcher: bytes of file entry `index` at `offset`, in order."""

    CODE = 15
    SENDER = MASTER
    rid: int
    index: int
    offset: int
    data: bytes


@message
@frozen
class SyncFiles(Message):
    """Master -> dispatcher: the next `count` wanted files whole, their contents one after
    the other in `data` (each entry's size says where one ends). A 20 KB file sent alone
    costs a frame, an SSH packet and a pipe write on each side, much as its bytes do: in
    256 KiB frames, 10,000 of them cost an eighth of that."""

    CODE = 31
    SENDER = MASTER
    rid: int
    count: int = bounded(1)
    data: bytes = bounded(length=MAX_FILES_FRAME)


@message
@frozen
class SyncCommit(Message):
    """Master -> dispatcher: every wanted byte was sent; verify and switch the tree in."""

    CODE = 16
    SENDER = MASTER
    rid: int


@message
@frozen
class SyncDone(Message):
    """Dispatcher -> master: the sync's end: `path` of the ready tree, or `error` (one line)."""

    CODE = 17
    SENDER = DISPATCHER
    rid: int
    path: bytes = bounded(length=MAX_PATH)
    error: str = bounded(length=MAX_TEXT)


class EntryError(ValueError):
    """A manifest entry that must not be written: it would escape the tree or is malformed."""


def show_path(path: Any) -> str:
    """A path for a one-line message: quoted text, odd bytes escaped."""
    if isinstance(path, bytes):
        return repr(path.decode("utf-8", "backslashreplace"))
    return repr(path)


def check_path(path: Any) -> None:
    """A relative path whose every component is a real name: no '', '.', '..', NUL, or '/'."""
    if not isinstance(path, bytes) or not path or len(path) > MAX_PATH:
        raise EntryError("empty, non-bytes or over-long path")
    if path.startswith(b"/") or b"\0" in path:
        raise EntryError("absolute path or NUL byte: %s" % show_path(path))
    for part in path.split(b"/"):
        if part in (b"", b".", b".."):
            raise EntryError("path escapes the tree or is not normal: %s" % show_path(path))


def check_link(path: bytes, target: Any) -> None:
    """A symlink must point inside the tree, relative, however many '..' it climbs first."""
    if not isinstance(target, bytes) or not target or b"\0" in target:
        raise EntryError("bad symlink target for %s" % show_path(path))
    if target.startswith(b"/"):
        raise EntryError(
            "symlink %s points to an absolute path %s" % (show_path(path), show_path(target))
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == b".." or resolved.startswith(b"../"):
        raise EntryError(
            "symlink %s points outside the tree (%s)" % (show_path(path), show_path(target))
        )


def check_entry(entry: Any, dirs: Set[bytes], previous: Optional[bytes]) -> List[Any]:
    """Validate one entry in manifest order; `dirs` collects the directories seen so far.

    The parent of each entry must be the tree's root or a directory entry declared before it,
    never a symlink: that alone keeps every write inside the tree, on either side.
    """
    if not isinstance(entry, list) or len(entry) != 6:
        raise EntryError("malformed manifest entry")
    path, kind, mode, size, mtime_ns, digest = entry
    check_path(path)
    if previous is not None and path <= previous:
        raise EntryError("manifest not sorted at %s" % show_path(path))
    if kind not in KINDS or not isinstance(mode, int) or not 0 <= mode <= MODE_BITS:
        raise EntryError("bad kind or mode for %s" % show_path(path))
    if not isinstance(size, int) or not 0 <= size < 1 << 63:
        raise EntryError("bad size for %s" % show_path(path))
    if not isinstance(mtime_ns, int) or not -(1 << 63) <= mtime_ns < 1 << 63:
        raise EntryError("bad mtime for %s" % show_path(path))
    if not isinstance(digest, bytes) or len(digest) > MAX_PATH:
        raise EntryError("bad digest for %s" % show_path(path))
    parent = posixpath.dirname(path)
    if parent and parent not in dirs:
        raise EntryError("%s is not inside a directory of the tree" % show_path(path))
    if kind == DIR:
        dirs.add(path)
    elif kind == LINK:
        check_link(path, digest)
    elif len(digest) != 32:
        raise EntryError("bad content digest for %s" % show_path(path))
    return entry


def apply_delta(base: List[Any], removed: List[Any], changed: List[Any]) -> List[List[Any]]:
    """The manifest `base` becomes once `removed` paths are gone and `changed` entries are in,
    sorted. Only the shape is judged here: the caller checks the result (`check_manifest`)
    and its digest against the tree id."""
    by_path = {entry[0]: entry for entry in base}
    for path in removed:
        if not isinstance(path, bytes) or by_path.pop(path, None) is None:
            raise EntryError("the delta removes %s, which its base does not hold" % show_path(path))
    for entry in changed:
        if not isinstance(entry, list) or len(entry) != 6 or not isinstance(entry[0], bytes):
            raise EntryError("malformed manifest entry")
        by_path[entry[0]] = entry
    return [by_path[path] for path in sorted(by_path)]


def check_delta(merged: List[Any], changed: List[Any]) -> None:
    """`check_manifest` for a manifest merged from a sound base (`apply_delta`): the base's
    entries were checked when their tree was built, so only the `changed` ones are judged
    in full; every entry must still sit in a folder of the merged manifest."""
    dirs = {entry[0] for entry in merged if entry[1] == DIR}
    for entry in changed:
        check_entry(entry, dirs, None)
    for entry in merged:
        parent = entry[0].rpartition(b"/")[0]
        if parent and parent not in dirs:
            raise EntryError("%s is not inside a directory of the tree" % show_path(entry[0]))


def manifest_delta(base: List[Any], new: List[Any]) -> "tuple[List[bytes], List[Any]]":
    """(paths of `base` not in `new`, entries of `new` not identical in `base`): what
    `apply_delta` needs to turn `base` into `new`."""
    old = {entry[0]: entry for entry in base}
    changed = [entry for entry in new if old.get(entry[0]) != entry]
    kept = {entry[0] for entry in new}
    return [path for path in old if path not in kept], changed


def check_manifest(entries: List[Any]) -> None:
    """Validate a whole manifest; raises EntryError naming the first bad entry."""
    dirs: Set[bytes] = set()
    previous: Optional[bytes] = None
    for entry in entries:
        check_entry(entry, dirs, previous)
        previous = entry[0]


_HEAD = struct.Struct(">HBHQqH")
"""One manifest entry's fixed part in the canonical encoding: path length, kind, mode, size,
mtime_ns, digest length; the path and the digest follow."""


def encode_manifest(entries: List[Any]) -> bytes:
    """The canonical bytes of a (checked) manifest: the tree id is their SHA-256, and the host
    stores them as they are. A plain struct layout rather than msgpack, because the host runs
    msgpack's pure-Python fallback, 10x slower on a 10,000-entry manifest than this."""
    pack = _HEAD.pack
    return b"".join(
        pack(len(path), kind, mode, size, mtime, len(digest)) + path + digest
        for path, kind, mode, size, mtime, digest in entries
    )


def decode_manifest(data: bytes, starts: Optional[List[int]] = None) -> List[List[Any]]:
    """`encode_manifest` undone; EntryError if the bytes do not parse. The caller checks them
    against the tree id first, so this only guards against a truncated or foreign file.
    `starts`, if given, receives where each entry begins, then the end."""
    entries: List[List[Any]] = []
    unpack, fixed, at, end = _HEAD.unpack_from, _HEAD.size, 0, len(data)
    mark = starts.append if starts is not None else None
    try:
        while at < end:
            if mark is not None:
                mark(at)
            n, kind, mode, size, mtime, d = unpack(data, at)
            at += fixed
            path, at = data[at : at + n], at + n
            digest, at = data[at : at + d], at + d
            entries.append([path, kind, mode, size, mtime, digest])
    except struct.error:
        raise EntryError("truncated manifest") from None
    if at != end:
        raise EntryError("truncated manifest")
    if mark is not None:
        mark(end)
    return entries


def tree_id(entries: List[Any]) -> bytes:
    """The tree's identity: SHA-256 of its canonical manifest (both sides compute it alike)."""
    return hashlib.sha256(encode_manifest(entries)).digest()
