"""The host's cache of dispatcher payloads: one zip per anet version, kept while it is used.

Each anet version ships its dispatcher to a host once, as `dispatcher-<digest>.zip` in the
cache folder, and every later boot of that version runs from it. Nothing removed them: every
upgrade (and, for whoever works on anet, every edit) left 0.6 MB on every host for good.

A dispatcher marks its own zip used at its boot (its mtime) and holds a shared lock on it
while it runs: its deps and housekeeping modules load from the zip later, so the zip must
outlive it, however long a pool keeps it. At its exit it removes the zips that no boot used
for KEEP_DAYS and that no running dispatcher holds (an exclusive lock taken without
waiting, and the mtime looked at again under it), and the downloads a crash left half
written. Removing one costs only that version's next start a copy of its payload. Every
failure (a file system without locks, a folder it cannot read) leaves the files as they are.
"""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Optional

KEEP_DAYS = 30
TEMP_AGE = 3600
"""Seconds after which a download's temporary file is taken for one a crash left."""
PREFIX = "dispatcher-"


def own_zip(module_file: str) -> Optional[str]:
    """The payload zip this dispatcher runs from (`module_file` is a module's `__file__`
    inside it); None when it runs from a source tree."""
    path = os.path.dirname(os.path.dirname(module_file))
    return path if path.endswith(".zip") and os.path.isfile(path) else None


def hold(path: str) -> Optional[int]:
    """Mark the zip used, and hold it while this process lives (the fd stays open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.utime(fd)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a tidy checking it lets go at once
    except OSError:
        pass  # just used: no tidy removes it for KEEP_DAYS anyway
    return fd


def tidy(folder: str, own: str) -> None:
    """Remove the zips of other versions unused for KEEP_DAYS and held by no dispatcher,
    and stale downloads."""
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith(PREFIX) or path == own:
            continue
        try:
            age = now - os.stat(path).st_mtime
            if name.endswith(".tmp") and age > TEMP_AGE:
                os.unlink(path)
            elif name.endswith(".zip") and age > KEEP_DAYS * 86400:
                _remove_unheld(path, now)
        except OSError:
            continue


def _remove_unheld(path: str, now: float) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a dispatcher runs it
        if now - os.fstat(fd).st_mtime > KEEP_DAYS * 86400:  # no boot marked it meanwhile
            os.unlink(path)
    finally:
        os.close(fd)
