"""The scheduler's attempts in flight: sent and not ended (killed ones until their Exit), and
those started and not being killed, in start order (what timeouts and speculation look at)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from .speculation import Running, Runtimes, Slots, Speculation, due, plan_speculation

if TYPE_CHECKING:
    from .backlog import PendingJob
    from .scheduler import Attempt, KillReason


@dataclass(slots=True)
class Flight:
    """One attempt in flight: when it started (the scheduler's clock), whether a kill was
    decided for it (`doom`), with the timeout that did (`limit`), and whether its host said it
    kills it for polite mode (`excuse`)."""

    attempt: Attempt
    started: float | None = None
    doom: KillReason | None = None
    limit: float = 0.0
    excuse: str | None = None  # why its host kills it for polite mode: no fault of its own

    @property
    def job_id(self) -> int:
        return self.attempt.job.id


class InFlight:
    """Attempts by aid; `jobs` are the backlog's (each attempt's job is there until final)."""

    def __init__(self, jobs: dict[int, PendingJob]) -> None:
        self._jobs = jobs
        self.runs: dict[int, Flight] = {}
        self._starts: OrderedDict[int, float] = OrderedDict()  # started, not being killed

    def add(self, attempt: Attempt) -> None:
        self.runs[attempt.aid] = Flight(attempt)

    def end(self, aid: int) -> Flight | None:
        """The attempt is over (ended, or lost with its host)."""
        self._starts.pop(aid, None)
        return self.runs.pop(aid, None)

    def start(self, aid: int, now: float) -> None:
        """The attempt started; `now` comes from a monotonic clock, so starts stay in order."""
        run = self.runs.get(aid)
        if run is not None and run.started is None:
            run.started = now
            if run.doom is None or run.doom.runs_on:  # it runs on: timed, as any
                self._starts[aid] = now

    def doom(self, run: Flight, reason: KillReason) -> None:
        """A kill was decided: the attempt no longer counts as running for timeouts or copies."""
        run.doom = reason
        self._starts.pop(run.attempt.aid, None)

    def job(self, aid: int) -> PendingJob:
        return self._jobs[self.runs[aid].job_id]

    def view(self, aid: int) -> Running:
        """What speculation needs to know of one attempt."""
        run = self.runs[aid]
        state = self.job(aid)
        avoid = frozenset(state.failed_on | {self.runs[a].attempt.host for a in state.aids})
        return Running(aid, run.attempt.host, run.started, len(state.aids) == 1, avoid)

    def started(self, alone: bool = False) -> Iterator[tuple[int, str, float]]:
        """`(aid, host, started)` of started attempts not being killed (and, if `alone`, the only
        attempt of their job), in start order."""
        for aid, started in self._starts.items():
            if not alone or len(self.job(aid).aids) == 1:
                yield aid, self.runs[aid].attempt.host, started

    def copies(
        self,
        spec: Speculation,
        runtimes: Runtimes,
        hosts: list[Slots],
        usable: list[Slots],
        now: float,
        drained: bool,
    ) -> list[tuple[int, str]]:
        """Which attempts deserve a copy, and where: `(aid, host)` (speculation.py decides).

        Views of the attempts are built only when a copy is possible: once the batch ran dry,
        for all of them if a slot is idle; before, only for those running past the least
        straggler threshold, found from the oldest start on (starts are kept in order).
        """
        if drained:  # copies go to idle slots only
            if all(h.slots <= h.load for h in usable):
                return []
            aids: Iterable[int] = (aid for aid, run in self.runs.items() if run.doom is None)
        else:  # copies of stragglers only: none while the oldest attempt is young (most rounds)
            if now - next(iter(self._starts.values()), now) <= spec.min_runtime:
                return []
            threshold = partial(spec.threshold, runtimes)
            late = due(self.started(), threshold, runtimes, now)[0]
            if not (aids := [aid for aid, _ in late]):
                return []
        jobs = self._jobs.values()
        copies = sum(len(state.aids) - 1 for state in jobs if len(state.aids) > 1)
        running = [self.view(aid) for aid in aids]
        names = {h.name for h in usable}
        return plan_speculation(
            spec, runtimes, running, hosts, now, usable=names, drained=drained, copies=copies
        )

    def __contains__(self, aid: object) -> bool:
        return aid in self.runs

    def __len__(self) -> int:
        return len(self.runs)
