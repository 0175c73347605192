"""What a test leaves behind: processes, threads and open file descriptors.

The conftest takes a :class:`Snapshot` before each test and asks :func:`leftovers` after it.
Anything new that is still there after a short grace is a leak: a job or dispatcher that
outlives its run, a reader thread never joined, a socket, pipe or event loop never closed.
Each of them holds resources for the rest of the session and, worse, can act on a later test
(a stray job writing into a reused directory, a thread reading someone else's pipe).

Processes are found two ways, so a daemonised one does not slip out: the descendants of the
test process, and every process whose environment carries the test's own marker (the conftest
puts ``MARK_ENV`` into ``os.environ``, so every process the test starts inherits it, however it
detaches).  Processes on the sshd hosts are not ours to judge here: sshd gives its sessions a
fresh environment, and the ``no_leftover_processes`` fixture checks them by their ANET_HOME.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sshd_hosts import _cmdline, _read_stat

MARK_ENV = "ANET_TEST_MARK"
"""The variable whose value names one test; it is removed again once the test is over."""

GRACE = 5.0
"""How long a process, thread or fd that is already on its way out may take to go: sshd
sessions end a moment after their client hung up, an exiting job after its kill."""

Proc = tuple[int, int]
"""(pid, start time in clock ticks): a recycled pid is another process."""


@dataclass(frozen=True)
class Snapshot:
    """What the test process had open and running before a test."""

    last_pid: int
    """The newest pid on the machine then: only a process with a pid made since can be new."""
    threads: frozenset[threading.Thread]
    fds: dict[int, str] = field(hash=False)


@dataclass
class Leftovers:
    """What a test left behind; true if anything."""

    procs: dict[Proc, str]
    threads: list[threading.Thread]
    fds: dict[int, str]

    def __bool__(self) -> bool:
        return bool(self.procs or self.threads or self.fds)

    def describe(self) -> str:
        parts = []
        if self.procs:
            listed = ", ".join(f"{pid} {cmd!r}" for (pid, _), cmd in sorted(self.procs.items()))
            parts.append(f"processes: {listed}")
        if self.threads:
            parts.append(f"threads: {', '.join(t.name for t in self.threads)}")
        if self.fds:
            parts.append(f"fds: {', '.join(f'{fd} -> {t}' for fd, t in sorted(self.fds.items()))}")
        return "; ".join(parts)


def snapshot() -> Snapshot:
    return Snapshot(_last_pid(), frozenset(threading.enumerate()), _open_fds())


def leftovers(
    before: Snapshot, mark: str, spared: frozenset[int] = frozenset(), grace: float = GRACE
) -> Leftovers:
    """What is new since ``before`` and still there after up to ``grace`` seconds; the pids in
    ``spared`` are processes the session owns (a shared sshd host restarted during the test).

    The common case, nothing left, costs one look; the garbage collector runs once before
    anything counts as leaked, since a file object only unreachable is not a leak."""
    deadline = time.monotonic() + grace
    collected = False
    while True:
        left = _new_since(before, mark, spared)
        if not left or time.monotonic() >= deadline:
            return left
        if not collected:
            gc.collect()
            collected = True
            continue
        for thread in left.threads:
            thread.join(timeout=0.05)
        time.sleep(0.05)


def kill(procs: dict[Proc, str]) -> None:
    """SIGKILL the leaked processes, so one leak fails one test, not every later one."""
    for pid, start in procs:
        stat = _read_stat(pid)
        if stat is not None and stat[2] == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _new_since(before: Snapshot, mark: str, spared: frozenset[int]) -> Leftovers:
    procs = _new_processes(before.last_pid, mark)
    procs = {proc: cmd for proc, cmd in procs.items() if proc[0] not in spared}
    threads = [t for t in threading.enumerate() if t not in before.threads and t.is_alive()]
    fds = {fd: what for fd, what in _open_fds().items() if before.fds.get(fd) != what}
    return Leftovers(procs, threads, fds)


def _new_processes(last_pid: int, mark: str) -> dict[Proc, str]:
    """Running (not zombie) processes made since ``last_pid`` that descend from this process
    or carry ``mark`` in their environment: (pid, start) -> command line.

    Reading every process's stat and environment after each test costs a quarter of a second
    on a busy machine; the pids handed out since the test began are few, and a process older
    than the test cannot be its leak."""
    newest = _last_pid()
    entry = f"{MARK_ENV}={mark}".encode()
    found = {}
    for pid in _pids_made_between(last_pid, newest):
        stat = _read_stat(pid)
        if stat is None or stat[1] in "ZX":
            continue
        if (_descends_from_us(pid) or _has_env(pid, entry)) and _leads_its_group(pid):
            found[(pid, stat[2])] = _cmdline(pid)
    return found


def _leads_its_group(pid: int) -> bool:
    """Whether ``pid`` is a process, not another thread of one: /proc answers for a thread's
    id too, though it lists only processes."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return f"\nTgid:\t{pid}\n" in status


def _last_pid() -> int:
    """The pid the kernel handed out last (the last field of /proc/loadavg)."""
    return int(Path("/proc/loadavg").read_text().split()[-1])


PROBED = 512
"""Up to this many pids handed out during a test, each is looked up in /proc by itself; past
it, /proc is listed once (a quiet test makes a few, listing /proc reads hundreds)."""


def _pids_made_between(last_pid: int, newest: int) -> list[int]:
    """The live pids handed out after ``last_pid``, up to ``newest`` (pids wrap around)."""
    count = newest - last_pid if last_pid <= newest else PROBED + 1
    if count <= PROBED:
        made = range(last_pid + 1, newest + 1)
        return [pid for pid in made if os.path.exists(f"/proc/{pid}")]
    return [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and _made_between(int(name), last_pid, newest)
    ]


def _made_between(pid: int, last_pid: int, newest: int) -> bool:
    """Whether ``pid`` was handed out after ``last_pid``, up to ``newest``; pids wrap around."""
    if last_pid <= newest:
        return last_pid < pid <= newest
    return pid > last_pid or pid <= newest


def _descends_from_us(pid: int) -> bool:
    us = os.getpid()
    while pid > 1:
        stat = _read_stat(pid)
        if stat is None:
            return False
        pid = stat[0]
        if pid == us:
            return True
    return False


def _has_env(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def _open_fds() -> dict[int, str]:
    """fd -> what it points at (``pipe:[1234]``, a path): a closed and reopened fd differs."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found
