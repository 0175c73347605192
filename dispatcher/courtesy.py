"""What polite mode does to jobs already running (dispatcher/polite.py decides when).

`--memfree-kill` kills the youngest job while memory is short; `--yield` stops every job while
a person works at the machine, continues them once the person is away, and kills one stopped
too long, so that the master runs it again elsewhere. Each kill says why on the job's stderr,
before its Exit (the user sees why an attempt failed), and in an Evicted frame before that: the
master then spends none of the job's retries on it.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import signal

from .polite import Evicted, Gate
from .protocol import STDERR, Message
from .runner import JobProcess, kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Callable, Iterable, List

MEMORY_KILL_GRACE = 2.0
"""Seconds between TERM and KILL for a job killed by --memfree-kill (the master's own grace)."""

if TYPE_CHECKING:
    Send = Callable[[Message], None]


def _running(jobs: Iterable[JobProcess]) -> List[JobProcess]:
    """The batch jobs (not onall commands, slot 0) still running that polite mode may touch."""
    return [job for job in jobs if job.slot and not job.exited and not job.doomed]


def kill_youngest_if_starved(
    gate: Gate, jobs: Iterable[JobProcess], send: Send, now: float
) -> None:
    """--memfree-kill: memory is under half of --memfree, so the youngest job goes (it lost
    the least work); the master runs it again as a failed attempt."""
    reason = gate.starved(now)
    candidates = [job for job in _running(jobs) if job.kill_at is None]
    if not reason or not candidates:
        return
    job = max(candidates, key=lambda j: j.started)
    job.doomed = True
    send(Evicted(job.aid, reason))
    send(job.output_message(STDERR, ("anet: killed: %s\n" % reason).encode()))
    kill_group(job.pid, signal.SIGTERM)
    job.kill_at = now + MEMORY_KILL_GRACE


def yield_to_person(gate: Gate, jobs: Iterable[JobProcess], send: Send, now: float) -> str:
    """--yield: stop the running jobs while a person works here (who is returned), continue
    them once the person is away; one stopped longer than `yield_move` is killed."""
    who, move_after = gate.person_at(now), gate.polite.yield_move
    for job in _running(jobs):
        if who and job.suspended_at is None:
            kill_group(job.pid, signal.SIGSTOP)
            job.suspended_at = now
        elif not who and job.suspended_at is not None:
            kill_group(job.pid, signal.SIGCONT)
            job.suspended_at = None
        elif job.suspended_at is not None and now - job.suspended_at > move_after:
            why = "suspended %ds for a person at the machine (%s)" % (now - job.suspended_at, who)
            send(Evicted(job.aid, why))
            send(job.output_message(STDERR, ("anet: killed: %s\n" % why).encode()))
            kill_group(job.pid, signal.SIGKILL)  # KILL reaches a stopped group; TERM would wait
            job.suspended_at = None
            job.doomed = True
    return who
