"""A small manifest delta applied to a clean base tree in time proportional to the change.

The usual re-sync is an edit of a few files in a big tree. The general path (syncstore.py,
treeupdate.py) handles any delta, but walks all of the base's entries six times over (merge,
check, plan, clear, assemble, commit): about 60 ms of Python per host for a one-file change
to a 10,000-file tree, where rsync does a few syscalls. When the base tree is clean (no job
ran in it since its files were checked, treeclean.py), every name the delta does not touch is
already right, on disk as in the manifest, so only the touched names need any work:

- `merge` builds the new manifest from the sorted base by bisection (the base is copied as a
  list, not rebuilt entry by entry) and checks only what the delta can have broken;
- `Touched` says which names of the base go and which parent folders' mode and mtime must be
  set again once names in them changed (a rename in a folder changes its mtime);
- the store applies that to the base renamed into staging, and falls back to the general path
  for anything else (a big delta, a base a job ran in, a base another run uses).

Python 3.8+, stdlib only: this module runs on the end machines.
"""

from __future__ import annotations

import bisect
import os

from .syncproto import DIR, FILE, EntryError, check_entry, encode_manifest, show_path
from .treeupdate import drop

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Dict, List, Optional, Set, Tuple

MAX_CHANGES = 512
"""Removed plus changed entries up to which a delta takes this path: each costs a bisection
and a shift of the entry list (microseconds); past it the general path's passes are cheaper."""


class Touched:
    """What a delta changes of its base: the paths it names, and what they were in the base."""

    def __init__(self, base: List[List[Any]], merged: List[List[Any]], paths: Set[bytes]) -> None:
        self.paths = paths
        self.merged = merged
        base_paths = self.base_paths = [entry[0] for entry in base]
        self.was: Dict[bytes, List[Any]] = {}
        for path in paths:
            at = bisect.bisect_left(base_paths, path)
            if at < len(base) and base_paths[at] == path:
                self.was[path] = base[at]
        self.now = {entry[0]: entry for entry in merged if entry[0] in paths}

    def in_base(self, path: bytes) -> bool:
        at = bisect.bisect_left(self.base_paths, path)
        return at < len(self.base_paths) and self.base_paths[at] == path

    def lost_files(self) -> int:
        """Files of the base that the new tree does not keep as they are."""
        return sum(1 for entry in self.was.values() if entry[1] == FILE)

    def stale(self) -> List[bytes]:
        """Names of the base to remove, parents first: every touched one except a folder that
        stays a folder (only its mode or mtime changed; what it holds stays)."""
        return sorted(
            path
            for path, old in self.was.items()
            if not (old[1] == DIR and self.now.get(path, (b"", -1))[1] == DIR)
        )

    def new(self) -> List[Tuple[int, List[Any]]]:
        """(index in the new manifest, entry) of each entry to make, parents first: every
        touched one but a folder that was a folder already."""
        paths = [entry[0] for entry in self.merged]
        made = []
        for path in sorted(self.now):
            entry, old = self.now[path], self.was.get(path)
            if entry[1] == DIR and old is not None and old[1] == DIR:
                continue
            made.append((bisect.bisect_left(paths, path), entry))
        return made

    def folders(self) -> List[List[Any]]:
        """The folder entries whose mode and mtime must be set, deepest first: the touched
        folders and every folder in which a name came or went."""
        paths = set()
        for path in self.paths:
            parent = path.rpartition(b"/")[0]
            if parent:
                paths.add(parent)
            entry = self.now.get(path)
            if entry is not None and entry[1] == DIR:
                paths.add(path)
        merged_paths = [entry[0] for entry in self.merged]
        found = []
        for path in sorted(paths, reverse=True):
            at = bisect.bisect_left(merged_paths, path)
            # a folder turned into a file keeps the file's mode
            if at < len(self.merged) and merged_paths[at] == path and self.merged[at][1] == DIR:
                found.append(self.merged[at])
        return found


def merge(
    base: List[List[Any]], removed: List[Any], changed: List[Any]
) -> Optional[Tuple[List[List[Any]], Set[bytes]]]:
    """The new manifest and the paths the delta touched, or None if this delta is not for
    this path (too big, or a path named twice: the general `apply_delta` judges those).

    Checks as `check_delta` does, but only where the delta can break the base's soundness:
    each changed entry in full, and that no entry is left inside a folder that went away."""
    if len(removed) + len(changed) > MAX_CHANGES:
        return None
    for entry in changed:
        if not isinstance(entry, list) or len(entry) != 6 or not isinstance(entry[0], bytes):
            raise EntryError("malformed manifest entry")
    gone = [path for path in removed if isinstance(path, bytes)]
    if len(gone) != len(removed):
        raise EntryError("the delta removes a path that is not bytes")
    gone_set, changed_set = set(gone), _paths(changed)
    if len(gone_set) != len(gone) or len(changed_set) != len(changed):
        return None
    touched = gone_set | changed_set
    merged = list(base)
    paths = [entry[0] for entry in base]
    for path in gone:
        at = bisect.bisect_left(paths, path)
        if at == len(paths) or paths[at] != path:
            raise EntryError("the delta removes %s, which its base does not hold" % show_path(path))
        del paths[at], merged[at]
    for entry in changed:
        at = bisect.bisect_left(paths, entry[0])
        if at < len(paths) and paths[at] == entry[0]:
            merged[at] = entry
        else:
            paths.insert(at, entry[0])
            merged.insert(at, entry)
    _check(base, merged, paths, changed, touched)
    return merged, touched


def _paths(entries: List[List[Any]]) -> Set[bytes]:
    return {entry[0] for entry in entries}


def _check(
    base: List[List[Any]],
    merged: List[List[Any]],
    paths: List[bytes],
    changed: List[Any],
    touched: Set[bytes],
) -> None:
    """Each changed entry judged in full against the new folders; no entry left inside a
    folder of the base that the delta removed or made a file or a symlink."""
    dirs = {entry[0] for entry in merged if entry[1] == DIR}
    for entry in changed:
        check_entry(entry, dirs, None)
    base_dirs = {entry[0] for entry in base if entry[1] == DIR and entry[0] in touched}
    for folder in base_dirs - dirs:
        inside = folder + b"/"
        at = bisect.bisect_left(paths, inside)
        if at < len(paths) and paths[at].startswith(inside):
            raise EntryError("%s is not inside a directory of the tree" % show_path(paths[at]))


def splice(data: bytes, starts: List[int], touched: Touched) -> bytes:
    """The new manifest's canonical bytes: the base's (`data`, each entry starting at
    `starts`, then its end) with the touched entries cut out and their new ones put in, in
    order. The caller checks the result against the tree id, as for any manifest."""
    pieces = []
    at = 0
    for path in sorted(touched.paths):
        where = bisect.bisect_left(touched.base_paths, path)
        pieces.append(data[at : starts[where]])
        at = starts[where + 1] if path in touched.was else starts[where]
        entry = touched.now.get(path)
        if entry is not None:
            pieces.append(encode_manifest([entry]))
    pieces.append(data[at:])
    return b"".join(pieces)


def clear(root: bytes, touched: Touched, anet_names: List[bytes]) -> None:
    """In `root` (the clean base, renamed into staging) remove the stale names and anet's own
    additions (`anet_names`, re-made on use)."""
    prefix = root + b"/"
    for path in touched.stale() + anet_names:
        drop(prefix + path)  # gone already if inside a folder removed just before


def set_folders(root: bytes, touched: Touched) -> None:
    """Mode and mtime of the folders the update touched, deepest first (setting them in a
    child changes nothing above, but a rename does)."""
    prefix = root + b"/"
    for path, _, mode, _, mtime_ns, _ in touched.folders():
        os.chmod(prefix + path, mode | 0o700)  # the owner must be able to clean it up
        os.utime(prefix + path, ns=(mtime_ns, mtime_ns))
