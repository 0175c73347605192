"""Which job runs where: pure logic, no I/O, no clock of its own.

The master feeds it events (a host is ready, a host is lost, an attempt ended) and asks it for
decisions (`next_runs`), which it returns as values for the I/O layer to carry out. Jobs are pulled
from the batch iterator only when a host has room, so memory follows the work in flight.

Each host gets `slots` running jobs plus a look-ahead queue on the dispatcher (`lookahead`), so a
core that finishes a job starts the next one without waiting a network round trip.
Invariant 2 lives here: when a host is lost, its attempts go back to the front of the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count

from .batch import Job


@dataclass(slots=True)
class Attempt:
    """One try of a job on one host; `aid` is unique within the master's run."""

    aid: int
    job: Job
    host: str
    number: int


@dataclass(slots=True)
class _Host:
    name: str
    slots: int
    capacity: int
    attempts: set[int] = field(default_factory=set)

    @property
    def room(self) -> int:
        return self.capacity - len(self.attempts)


def default_lookahead(slots: int) -> int:
    """Jobs queued on a host beyond its slots: enough to hide a round trip behind short jobs."""
    return max(2, slots)


class Scheduler:
    """Job queue, host table and the attempts in flight."""

    def __init__(self, jobs: Iterator[Job]) -> None:
        self._source = jobs
        self._source_done = False
        self._requeued: deque[Job] = deque()
        self._hosts: dict[str, _Host] = {}
        self._attempts: dict[int, Attempt] = {}
        self._tries: dict[int, int] = {}  # job id -> attempts started
        self._aids = count()

    # -- events -----------------------------------------------------------------------------

    def host_ready(self, name: str, slots: int, lookahead: int | None = None) -> None:
        extra = default_lookahead(slots) if lookahead is None else lookahead
        known = self._hosts.get(name)
        if known is not None:  # announced again: new size, same attempts in flight
            known.slots, known.capacity = slots, slots + extra
        else:
            self._hosts[name] = _Host(name, slots, slots + extra)

    def host_lost(self, name: str) -> list[Attempt]:
        """Forget the host; its attempts go back to the queue, first in line. Returns them."""
        host = self._hosts.pop(name, None)
        if host is None:
            return []
        lost = sorted((self._attempts.pop(aid) for aid in host.attempts), key=lambda a: a.job.id)
        self._requeued.extendleft(attempt.job for attempt in reversed(lost))
        return lost

    def attempt_ended(self, aid: int) -> Attempt | None:
        """The attempt is over (whatever its outcome); None if it was already forgotten."""
        attempt = self._attempts.pop(aid, None)
        if attempt is not None:
            host = self._hosts.get(attempt.host)
            if host is not None:
                host.attempts.discard(aid)
        return attempt

    # -- decisions --------------------------------------------------------------------------

    def next_runs(self) -> list[Attempt]:
        """Fill every host's room, one job per host per round, so hosts start evenly."""
        runs: list[Attempt] = []
        while True:
            hosts = [h for h in self._hosts.values() if h.room > 0]
            if not hosts:
                return runs
            hosts.sort(key=lambda h: -h.room)
            for host in hosts:
                job = self._next_job()
                if job is None:
                    return runs
                runs.append(self._start(job, host))

    def _next_job(self) -> Job | None:
        if self._requeued:
            return self._requeued.popleft()
        if self._source_done:
            return None
        job = next(self._source, None)
        if job is None:
            self._source_done = True
        return job

    def _start(self, job: Job, host: _Host) -> Attempt:
        number = self._tries.get(job.id, 0) + 1
        self._tries[job.id] = number
        attempt = Attempt(next(self._aids), job, host.name, number)
        self._attempts[attempt.aid] = attempt
        host.attempts.add(attempt.aid)
        return attempt

    def job_done(self, job_id: int) -> None:
        """The job has its final result: drop its bookkeeping."""
        self._tries.pop(job_id, None)

    # -- state ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    @property
    def finished(self) -> bool:
        """Every job was handed out and every attempt has ended."""
        return self._source_done and not self._requeued and not self._attempts

    @property
    def has_pending(self) -> bool:
        """Work that has no host yet (cheap check; may pull nothing from the source)."""
        return bool(self._requeued) or not self._source_done

    def attempt(self, aid: int) -> Attempt | None:
        return self._attempts.get(aid)
