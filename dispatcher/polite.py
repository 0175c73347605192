"""Polite mode: run jobs without taking a shared machine from the people and programs on it.

`--nice N` runs every job at niceness N at least. The kernel derives a process's I/O priority
from its CPU niceness when it has asked for none (best-effort class, level (nice + 20) / 5 under
the CFQ and BFQ schedulers), so a niced job is also a low best-effort I/O user, without an
`ioprio_set` call that Python has no wrapper for.

`--max-load L` starts no job while more than L threads of *other* processes are runnable. The
count is the kernel's own instantaneous one (the `R/T` field of /proc/loadavg: every runnable
thread of the whole machine, even from inside a container), minus the runnable threads of this
dispatcher's job groups and the dispatcher itself, which is running while it reads. Not the
1-minute load average: it trails by a minute, so subtracting the jobs running now from it is
wrong both ways (jobs just started are not in it yet, jobs just ended still are), and a held
host would wait a minute to see the load gone. A held job is only not started yet: it stays
queued, and the check is made again every `RECHECK` seconds; a running job is never touched.

`--memfree SIZE` starts no job while MemAvailable (/proc/meminfo: what the kernel can hand out
without swapping) is below SIZE, GNU parallel's meaning; held jobs wait as for the load. With
`--memfree-kill`, when MemAvailable falls below half of SIZE, the youngest running job is killed
(one per RECHECK seconds, so each kill's effect is seen before the next) and the master runs it
again, as any failed attempt, before the machine starts to swap or its OOM killer picks a
victim that may be someone else's. `ANET_MEMINFO` in the dispatcher's environment names
another file to read MemAvailable from: for tests, which cannot make a machine short of memory.

`--yield` suspends the running jobs (SIGSTOP of their groups) and starts none while a person
works at the machine (presence.py says when), and resumes them (SIGCONT) once the person has
been idle for `yield_idle` seconds. A job suspended longer than `yield_move` seconds is killed,
saying why on its stderr: the master then runs it again, preferably on another host.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import os
import time

from .presence import person_at
from .protocol import DISPATCHER, MAX_TEXT, Message, bounded, message
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Callable, Iterable, Optional, Set

MAX_NICE = 19
"""The highest (kindest) niceness Linux and the BSDs have."""
RECHECK = 1.0
"""Seconds between two looks at the load while jobs are held, and how long a look that let
jobs start holds good (a look costs a pass over /proc: not one per job started)."""
NO_LIMIT = -1.0
"""`max_load` when there is none."""


@frozen
class Polite:
    """How politely a host's jobs run; the defaults change nothing.

    `nice`: the jobs' niceness, at least (0: as the dispatcher's own). `max_load`: the most
    runnable threads of other processes under which a job still starts (NO_LIMIT: any).
    `memfree_kb`: the least MemAvailable, in KiB, with which a job still starts (0: any).
    `memfree_kill`: below half of it, kill the youngest job. `yield_idle` > 0: yield to a
    person active at the machine within that many seconds; `yield_move`: after that long
    suspended, a job is killed, to run elsewhere.
    """

    nice: int = 0
    max_load: float = NO_LIMIT
    memfree_kb: int = 0
    memfree_kill: bool = False
    yield_idle: float = 0.0
    yield_move: float = 0.0


@message
@frozen
class Held(Message):
    """Dispatcher -> master, when it changes: why no job may start here now ("": they may)."""

    CODE = 40
    SENDER = DISPATCHER
    reason: str = bounded(length=MAX_TEXT)


@message
@frozen
class Evicted(Message):
    """Dispatcher -> master, before the Exit of an attempt polite mode kills (--yield moves
    it, --memfree-kill): `reason` says why; the failure is not the job's, no retry is spent."""

    CODE = 41
    SENDER = DISPATCHER
    aid: int
    reason: str = bounded(length=MAX_TEXT)


def niceness_setter(nice: int) -> Optional[Callable[[], None]]:
    """What a job's child runs before `exec` to take niceness `nice`; None when nothing to do.

    Niceness only goes up: a job of a dispatcher already at 10 stays at 10 under `--nice 5`
    (a user may not lower it, and a job should not be less polite than its dispatcher). Set in
    the child, before exec, so the job and everything it forks start at that niceness.
    """
    if nice <= 0:
        return None
    target = min(nice, MAX_NICE)

    def set_niceness() -> None:
        # Only async-signal-safe work here: this runs between fork and exec.
        try:
            current = os.getpriority(os.PRIO_PROCESS, 0)
            if target > current:
                os.setpriority(os.PRIO_PROCESS, 0, target)
        except OSError:
            pass  # niceness is a courtesy: a job that cannot take it still runs

    return set_niceness


# -- the load of other processes ---------------------------------------------------------------


def runnable_threads(loadavg: str = "/proc/loadavg") -> int:
    """Runnable threads of the whole machine now, the reader included; -1 where unknown."""
    try:
        with open(loadavg) as f:
            return int(f.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return -1


def own_runnable(groups: Set[int], proc: str = "/proc") -> int:
    """Runnable threads of the processes in the process groups `groups` (the jobs')."""
    if not groups:
        return 0
    count = 0
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fields = _stat_fields("%s/%s/stat" % (proc, name))
        if len(fields) < 18 or int(fields[2]) not in groups:
            continue
        if fields[17] == b"1":  # one thread: the process's state is the thread's
            count += fields[0] == b"R"
        else:
            count += _runnable_tasks("%s/%s/task" % (proc, name))
    return count


def _runnable_tasks(task_dir: str) -> int:
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return 0
    states = (_stat_fields("%s/%s/stat" % (task_dir, tid))[:1] for tid in tasks)
    return sum(state == [b"R"] for state in states)


def _stat_fields(path: str) -> list:
    """The fields of a /proc stat file after the name (state, ppid, pgrp, ...); [] if gone."""
    try:
        with open(path, "rb") as f:
            return f.read().rpartition(b")")[2].split()
    except OSError:
        return []


def other_load(groups: Set[int]) -> int:
    """Runnable threads of processes other than this dispatcher and its jobs; 0 unknown."""
    total = runnable_threads()
    if total < 0:
        return 0  # no /proc/loadavg (not Linux): nothing is held, rather than everything
    try:
        ours = own_runnable(groups)
    except OSError:
        ours = 0
    return max(0, total - ours - 1)


def mem_available_kb(meminfo: str = "") -> int:
    """MemAvailable in KiB; -1 where unknown (not Linux, or a kernel older than 3.14)."""
    meminfo = meminfo or os.environ.get("ANET_MEMINFO") or "/proc/meminfo"
    try:
        with open(meminfo, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def _size(kb: int) -> str:
    return "%d MiB" % (kb // 1024) if kb < 1 << 20 else "%.1f GiB" % (kb / (1 << 20))


# -- the decision ----------------------------------------------------------------------------


class Gate:
    """Whether a job may start on this host now, from sources the tests may replace."""

    def __init__(
        self,
        polite: Polite,
        load: Callable[[Set[int]], int] = other_load,
        memory: Callable[[], int] = mem_available_kb,
        person: Callable[[float, float], str] = person_at,
    ) -> None:
        self.polite = polite
        self._load = load
        self._memory = memory
        self._person = person
        self._person_checked = float("-inf")
        self.person = ""
        """Who works at the machine now, as last seen (--yield); "" when nobody does."""
        self._open_until = float("-inf")
        self._starved_checked = float("-inf")
        self.reason = ""
        """Why jobs are held now ("": they are not); the dispatcher tells the master on change."""

    @property
    def active(self) -> bool:
        polite = self.polite
        return polite.max_load >= 0 or polite.memfree_kb > 0 or polite.yield_idle > 0

    def holds(self, now: float, groups: Iterable[int]) -> str:
        """Why no job may start now, or "" when one may; a "may" holds good for RECHECK s."""
        if not self.active or now < self._open_until:
            return ""
        self.reason = self._why(set(groups), now)
        if not self.reason:
            self._open_until = now + RECHECK
        return self.reason

    @property
    def next_starved_check(self) -> float:
        return self._starved_checked + RECHECK

    def starved(self, now: float) -> str:
        """Why the youngest job must go now (--memfree-kill), or "": at most once per RECHECK
        seconds, so that a kill's effect is seen before the next."""
        if not self.polite.memfree_kill or now < self.next_starved_check:
            return ""
        self._starved_checked = now
        want, free = self.polite.memfree_kb, self._memory()
        if 0 <= free < want // 2:
            self._open_until = float("-inf")  # a look that let jobs start holds no more
            return "only %s available, under half of --memfree %s" % (_size(free), _size(want))
        return ""

    def person_at(self, now: float, fresh: bool = False) -> str:
        """Who works at the machine (--yield), looked at once per RECHECK seconds at most
        (`fresh`: now, whenever it was last)."""
        if self.polite.yield_idle > 0 and (fresh or now >= self._person_checked + RECHECK):
            self._person_checked = now
            self.person = self._person(self.polite.yield_idle, time.time())
        return self.person

    def _why(self, groups: Set[int], now: float) -> str:
        if self.polite.yield_idle > 0:
            who = self.person_at(now, fresh=True)
            if who:
                return "yielding: %s" % who
        want = self.polite.memfree_kb
        if want > 0:
            free = self._memory()
            if 0 <= free < want:  # unknown (-1): nothing is held, rather than everything
                return "low memory: %s available < --memfree %s" % (_size(free), _size(want))
        limit = self.polite.max_load
        if limit >= 0:
            load = self._load(groups)
            if load > limit:
                return "loaded: %d runnable threads of other processes > --max-load %g" % (
                    load,
                    limit,
                )
        return ""
