"""Polite mode: run jobs without taking a shared machine from the people and programs on it.

`--nice N` runs every job at niceness N at least. The kernel derives a process's I/O priority
from its CPU niceness when it has asked for none (best-effort class, level (nice + 20) / 5 under
the CFQ and BFQ schedulers), so a niced job is also a low best-effort I/O user, without an
`ioprio_set` call that Python has no wrapper for.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

MAX_NICE = 19
"""The highest (kindest) niceness Linux and the BSDs have."""


@dataclass(frozen=True)
class Polite:
    """How politely a host's jobs run; the defaults change nothing.

    `nice`: the jobs' niceness, at least (0: as the dispatcher's own).
    """

    nice: int = 0


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
