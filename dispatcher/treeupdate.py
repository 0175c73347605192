"""Turn the host's previous tree into the new one in place, touching only what changed.

A one-file change to a 10,000-file tree used to cost 10,000 hard links into a fresh staging
folder, then 10,000 unlinks when the oldest tree was collected. When no other run uses the
previous tree, the store instead renames it into staging and calls `clear_changes`: every
name the new manifest does not hold identically goes, and the rest stays where it is. The
store then checks each kept file against its entry (a job may have changed it) and fills in
the rest as for any new tree, so the result is exactly the new manifest's tree.

Only names are removed or added here, never an inode changed: a kept file may be a hard
link shared with another tree, which must not see a chmod or a write.

Python 3.8+, stdlib only: this module runs on the end machines.
"""

from __future__ import annotations

import os
import shutil
import stat

from .syncproto import DIR, FILE

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Dict, List, Sequence, Set


def _mode(path: bytes) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def drop(path: bytes) -> None:
    """Remove a name of the tree being built: a folder with what it holds, never following
    a symlink (a job may have put one anywhere)."""
    mode = _mode(path)
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    elif mode:
        os.unlink(path)


def clear_changes(
    root: bytes,
    old: List[List[Any]],
    new: List[List[Any]],
    tick: Callable[[], None],
    clean: Sequence[bytes] = (),
) -> Set[bytes]:
    """In `root` (the old tree, renamed into staging), keep the folders the new manifest
    still has and the files whose entry is identical; remove every other name, including
    what jobs added. Returns the kept paths, which the caller must still check.

    `clean` is for a tree no job has run in since it was checked (treeclean.py): it holds
    only its manifest's names and these few that anet adds, so the names to remove are
    known without listing its folders."""
    prefix = root + b"/"
    now: Dict[bytes, List[Any]] = {entry[0]: entry for entry in new}
    folders: Set[bytes] = {b""}
    for path, kind, *_ in old:  # sorted: parents first, so each is known real before its children
        if kind != DIR or path.rpartition(b"/")[0] not in folders:
            continue
        entry = now.get(path)
        if entry is not None and entry[1] == DIR and stat.S_ISDIR(_mode(prefix + path)):
            folders.add(path)  # lstat: a real folder, not a symlink a job put in its place
    kept = set(folders)
    for entry in old:
        path = entry[0]
        if entry[1] == FILE and path.rpartition(b"/")[0] in folders and now.get(path) == entry:
            kept.add(path)
    if clean:
        added = [path for path in clean if path not in kept]  # a kept deps entry of that name wins
        for path in [entry[0] for entry in old if entry[0] not in kept] + added:
            drop(prefix + path)  # gone already if inside a folder removed just before
        kept.discard(b"")
        return kept
    for number, folder in enumerate(sorted(folders)):
        if not number % 64:
            tick()
        where = prefix + folder if folder else root
        if not os.path.lexists(where):
            continue  # inside a folder removed just before
        for name in os.listdir(where):
            rel = folder + b"/" + name if folder else name
            if rel not in kept:
                drop(where + b"/" + name)
    kept.discard(b"")
    return kept


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class BaseTree:
    """The files of the base tree, reached by their own paths. Each folder is opened once,
    one component at a time with O_NOFOLLOW: a job may have swapped any of them for a
    symlink to look-alike files, which must not pass for the master's."""

    def __init__(self, root: bytes, entries: List[List[Any]]) -> None:
        self.root = root
        self.old = {entry[0]: entry for entry in entries if entry[1] == FILE}
        self.folders: Dict[bytes, int] = {}

    def _folder(self, path: bytes) -> int:
        """An fd of the folder `path` (b"" is the top), -1 if it cannot be opened."""
        fd = self.folders.get(path)
        if fd is None:
            up, _, name = path.rpartition(b"/")
            above = self._folder(up) if path else -1
            fd = -1
            try:
                if not path:
                    fd = os.open(self.root, _DIR_FLAGS)
                elif above >= 0:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=above)
            except OSError:
                pass  # gone, or a symlink now: its files are not reused by name
            self.folders[path] = fd
        return fd

    def _where(self, entry: List[Any]) -> "tuple[int, bytes]":
        parent, _, name = entry[0].rpartition(b"/")
        return self._folder(parent), name

    def holds(self, entry: List[Any], look: bool = True) -> bool:
        """Is this exact entry in the base tree, unmodified as far as lstat can tell (or,
        not `look`ing, as far as the base's manifest says: a tree no job has run in)?"""
        if self.old.get(entry[0]) != entry:
            return False
        if not look:
            return True
        folder, name = self._where(entry)
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False) if folder >= 0 else None
        except OSError:
            return False
        return st is not None and _looks_like(st, entry)

    def link(self, entry: List[Any], target: bytes) -> bool:
        """Hard-link this entry's file from the base tree to `target`, if it is unchanged.
        The check is made on the new name, which lives in our private staging folder."""
        if self.old.get(entry[0]) != entry:
            return False
        folder, name = self._where(entry)
        if folder < 0:
            return False
        try:
            os.link(name, target, src_dir_fd=folder, follow_symlinks=False)
        except OSError:
            return False  # gone, another file system, too many links
        if _looks_like(os.lstat(target), entry):
            return True
        os.unlink(target)  # modified since it was synced (or now a symlink): not trusted
        return False

    def close(self) -> None:
        for fd in self.folders.values():
            if fd >= 0:
                os.close(fd)
        self.folders.clear()


def _looks_like(st: os.stat_result, entry: List[Any]) -> bool:
    """A regular file with the entry's mode, size and mtime (`syncstore._stat_matches`)."""
    return (st.st_mode, st.st_size, st.st_mtime_ns) == (stat.S_IFREG | entry[2], *entry[3:5])
