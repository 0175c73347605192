"""Whether a stored tree needs its per-file check: only once a job may have run in it.

A no-op re-sync used to `lstat` every file of the tree (10,000 on the benchmark's tree) to
notice one a job had modified: the bulk of the host's work in a sync with nothing to do. Only
jobs change a tree (anet writes a tree once, in staging, and jobs are told to treat their
deps as read-only), so the store remembers, per tree, that it was checked whole and that no
job has started in it since: `trees/<id>.jobs`, one byte long when that holds, empty when not.

- A dispatcher empties the file before it starts its first job in the tree, and holds a shared
  `flock` on it for as long as it lives: its jobs (or what they leave running) may still be
  writing.
- The byte is written only under the exclusive lock, taken (without waiting) before the
  full check begins and kept until the byte is in: never while a dispatcher that started jobs
  there lives, and never for a check that a job could have raced.

Python 3.8+, stdlib only: this module runs on the end machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Iterator, Optional

_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW


def is_clean(marker: bytes) -> bool:
    """Checked whole, and no job has started in the tree since: no per-file check needed."""
    try:
        return os.stat(marker, follow_symlinks=False).st_size == 1
    except OSError:
        return False


@contextlib.contextmanager
def checking(marker: bytes) -> Iterator["Optional[int]"]:
    """Around a full check of the tree: yields an fd holding the exclusive lock (pass it to
    `mark_clean` once the check passed), or None when a dispatcher whose jobs run in the
    tree holds it: the check then counts for this sync only."""
    try:
        fd = os.open(marker, _OPEN, 0o600)
    except OSError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def mark_clean(fd: Optional[int]) -> None:
    """The check that `checking` locked for passed: the next no-op sync may skip it."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 1)


def hold_for_jobs(marker: bytes) -> int:
    """Before the first job in the tree: mark it as needing a check, and keep it marked (the
    shared lock) while this process lives. The fd to keep open, -1 if the marker cannot be
    opened (then it is removed, so the tree is checked next time all the same)."""
    try:
        fd = os.open(marker, _OPEN, 0o600)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(marker)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a check in progress: milliseconds
        os.ftruncate(fd, 0)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(marker)
        return -1
    return fd
