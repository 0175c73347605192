"""The jobs of a run that are not final yet, and which of them wait for a host.

Jobs are pulled from the batch only when a host has room (or a slow host's tail decision needs
to look ahead), so memory follows the work in flight, not the batch (invariant 4). A job that
must run again (failed, or lost with its host) waits first in line, before the batch's next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .batch import Job
from .readahead import NOT_YET


@dataclass(slots=True)
class PendingJob:
    """A job pulled from the batch and not final yet; dropped when it is."""

    job: Job
    tries: int = 0  # attempts started, whatever became of them: the next one's number
    failures: int = 0
    losses: int = 0
    failed_on: set[str] = field(default_factory=set)  # at most every host: bounded
    aids: set[int] = field(default_factory=set)  # its attempts in flight


class Backlog:
    """`jobs`: every job pulled and not final, by id; a queue of those waiting for a host."""

    def __init__(self, source: Iterator[Job]) -> None:
        self._source = source
        self.source_done = False
        self.starved = False  # the last pull found no job yet, and more may come (readahead.py)
        self.jobs: dict[int, PendingJob] = {}
        self._queue: deque[int] = deque()  # ids waiting for a host; those to run again first

    def again(self, job_ids: Iterable[int]) -> None:
        """These jobs run again before any other (in the order given)."""
        self._queue.extendleft(reversed(list(job_ids)))

    def next_for(self, host: str, names: frozenset[str]) -> PendingJob | None:
        """The first waiting job `host` may take, else a new one from the batch; a host where
        the job failed takes it only when every host in `names` has failed it."""
        for index, job_id in enumerate(self._queue):
            state = self.jobs[job_id]
            if host not in state.failed_on or names <= state.failed_on:
                del self._queue[index]
                return state
        return self._pull()

    def fewer_than(self, limit: int) -> bool:
        """Whether fewer than `limit` jobs are left to start, reading ahead in the batch as far
        as `limit` to know (the caller bounds it). A stream whose next job has not arrived
        counts as more to come."""
        while len(self._queue) < limit and (state := self._pull()) is not None:
            self._queue.append(state.job.id)
        return len(self._queue) < limit and not self.starved

    def close(self) -> None:
        """Nothing more is started: the batch is not read further, nothing waits."""
        self.source_done = True
        self._queue.clear()

    def _pull(self) -> PendingJob | None:
        job = None if self.source_done else next(self._source, None)
        self.starved = job is NOT_YET  # a stream's next job has not arrived yet
        if self.starved:
            return None
        self.source_done = job is None
        return None if job is None else self.jobs.setdefault(job.id, PendingJob(job))

    @property
    def drained(self) -> bool:
        """The batch is read to its end and no job waits for a host."""
        return self.source_done and not self._queue

    @property
    def has_pending(self) -> bool:
        """Work that has no host yet (cheap check; may pull nothing from the source)."""
        return bool(self._queue) or not self.source_done
