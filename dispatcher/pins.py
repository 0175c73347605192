"""Trees held for the master's runs: several runs at once, each in its own deps tree.

A dispatcher that serves one run (`anet BATCH DEPS`) runs its jobs in the tree of its last
sync (`SyncStore.job_cwd`). A resident master (`anet up`) runs several batches at once on one
dispatcher, each with its own deps, so each run's tree is named and held apart:

    master                       dispatcher
    Pin(tree)             ->     the tree is held for a run from when a sync finds it ready
    SyncOffer(tree) ...   ->     (the usual sync; it does not change `job_cwd`)
    Within(tree)          ->     the Runs that follow run in that tree ...
    Runs(...)             ->
    Within(b"")           ->     ... until another Within: b"" is the default place again
    Unpin(tree)           ->     the run ended: let go once no job of it is queued or running

A held tree keeps a shared `flock` on its manifest (as `job_cwd`'s does): no sync of another
run (of this dispatcher or another) updates it in place, and no clean-up deletes it. Jobs that
started there keep its `.jobs` marker emptied and locked (treeclean.py) until the tree is let
go, so a later sync checks its files. Everything is let go when the dispatcher ends (its fds
close), so a lost master leaves nothing held.

The binding is a frame of its own, not a field of each Run: a scheduling round's Runs to a
host are all one run's, so one Within per change of run costs nothing per job.

Python 3.8+, stdlib + msgpack only: this module runs on the end machines.
"""

from __future__ import annotations

import os

from .protocol import MASTER, Message, message
from .record import frozen
from .treeclean import hold_for_jobs

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Dict, Optional


@message
@frozen
class Pin(Message):
    """Master -> dispatcher, before the sync of a run's own tree: once a sync finds `tree`
    ready (or builds it), it is held for that run until the matching Unpin, and is not the
    default place of jobs (`job_cwd`). Pins of one tree add up (two runs with the same deps)."""

    CODE = 80
    SENDER = MASTER
    tree: bytes


@message
@frozen
class Unpin(Message):
    """Master -> dispatcher: a run that pinned `tree` has ended; the tree is let go once no
    other pin holds it and no job bound to it is queued or running."""

    CODE = 81
    SENDER = MASTER
    tree: bytes


@message
@frozen
class Within(Message):
    """Master -> dispatcher: the Runs after this frame run in `tree`, a tree held here (Pin
    and a sync); b"": in the default place (the last unpinned sync's tree, else Setup's cwd,
    else the work folder), as before any Within. A Run bound to a tree not held here fails
    (exit 127, a line on its stderr)."""

    CODE = 82
    SENDER = MASTER
    tree: bytes


class HeldTree:
    """One tree held here: for the master's runs (`pins`), for the jobs bound to it
    (`users`, queued or running), its locks."""

    __slots__ = ("jobs_fd", "lock_fd", "path", "pins", "tree", "users")

    def __init__(self, tree: bytes) -> None:
        self.tree = tree
        self.path = b""
        self.lock_fd: Optional[int] = None
        """A shared lock on its manifest, once a sync found it here: None, not (yet) here."""
        self.jobs_fd: Optional[int] = None
        """Its `.jobs` marker held (treeclean.hold_for_jobs) once a job started there."""
        self.pins = 0
        self.users = 0


class Pins:
    """The trees this dispatcher holds for the master's runs, by tree id."""

    def __init__(self) -> None:
        self.held: Dict[bytes, HeldTree] = {}

    def pin(self, tree: bytes) -> None:
        held = self.held.get(tree)
        if held is None:
            held = self.held[tree] = HeldTree(tree)
        held.pins += 1

    def unpin(self, tree: bytes) -> None:
        held = self.held.get(tree)
        if held is not None and held.pins > 0:
            held.pins -= 1
            self._let_go(held)

    def wants(self, tree: bytes) -> bool:
        """A run pinned the tree: a sync that finds it ready gives it to `hold`."""
        held = self.held.get(tree)
        return held is not None and held.pins > 0

    def hold(self, tree: bytes, path: bytes, lock_fd: int) -> None:
        """The tree is here, whole, and locked by `lock_fd` (kept; a second one is closed)."""
        held = self.held[tree]
        if held.lock_fd is not None:
            os.close(lock_fd)
            return
        held.path, held.lock_fd = path, lock_fd

    def enter(self, tree: bytes) -> Optional[HeldTree]:
        """A Run bound to the tree arrives: its HeldTree, counted as in use until `leave`; None
        when the tree is not held here (the Run then fails)."""
        held = self.held.get(tree)
        if held is None or held.lock_fd is None:
            return None
        held.users += 1
        return held

    def leave(self, held: HeldTree) -> None:
        """A Run bound to the tree ended (or never started)."""
        held.users -= 1
        self._let_go(held)

    @staticmethod
    def cwd(held: HeldTree) -> bytes:
        """Where a job bound to the tree runs; the first marks the tree as one jobs may
        change (treeclean.py), until it is let go."""
        if held.jobs_fd is None:
            held.jobs_fd = hold_for_jobs(held.path + b".jobs")
        return held.path

    def _let_go(self, held: HeldTree) -> None:
        if held.pins > 0 or held.users > 0:
            return
        del self.held[held.tree]
        self._close(held)

    def close(self) -> None:
        """Let every tree go (a test's store; a dispatcher's fds close with it anyway)."""
        for held in self.held.values():
            self._close(held)
        self.held.clear()

    @staticmethod
    def _close(held: HeldTree) -> None:
        for fd in (held.lock_fd, held.jobs_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        held.lock_fd = held.jobs_fd = None
