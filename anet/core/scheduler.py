"""Which job runs where, and what to do when things go wrong: pure logic, no I/O, no clock.

The master feeds it events (host ready or lost, attempt started or ended) with `now` from its
clock and asks for decisions, returned as values: `next_runs` (start these there), `due_kills`
(stop these). Jobs are pulled from the batch only when a host has room (`slots` running plus a
`lookahead` queue on the dispatcher, to hide a round trip), and a job's bookkeeping goes when
its outcome is final: memory follows the work in flight (invariant 4). Fault tolerance:
- A failed attempt (exit status, signal, timeout) runs again, up to `retries` times, on a host
  where the job has not failed if one is up (as GNU parallel does).
- A lost host's attempts go back to the queue, first in line, without burning retries (the job
  did nothing wrong: invariant 2); a job lost with `max_losses` hosts, likely their killer, fails.
- A host failing many different jobs in a row is paused; stragglers get speculative copies
  (speculation.py). The first attempt to end well wins, the others are killed and their output
  dropped: each job ends in one FINAL verdict or one `Abandoned` record (invariant 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import partial
from itertools import count

from ..errors import UsageError
from . import speculation
from .backlog import Backlog, PendingJob
from .batch import Job
from .hosttable import HostTable
from .inflight import Flight, InFlight
from .speculation import HostPause, Runtimes, Slots, Speculation, Timeout

PEEK_FACTOR = 8
"""To decide whether a very slow host should sit out the tail, up to this many times the cluster's
capacity of jobs may be read ahead from the batch: bounded by the work in flight, not the batch."""


SOURCE_POLL = 0.05
"""Seconds between looks at a stream whose next job had not arrived (readahead.py): the delay a
job written by a slow producer may wait for a free slot, at 20 cheap rounds a second."""

RETUNE_EVERY = 16
"""Successes between two re-sizings of a host's queue to its typical job (a round trip measured
anew re-sizes it at once): a few microseconds a job saved, for a target that moves slowly."""


class Verdict(Enum):
    """What the master does with an ended attempt's result. FINAL: emit it, the job's one final
    result (success, or failure with no retry left). RETRY: drop it; the attempt failed and the
    job runs again, or another copy still runs. STALE: drop it; superseded, or forgotten."""

    FINAL = "final"
    RETRY = "retry"
    STALE = "stale"


class KillReason(Enum):
    """TIMEOUT: its Exit counts as a failure (RETRY, or FINAL with `error`). SUPERSEDED: another
    attempt of its job ended first; its Exit is STALE. HALTED: the run stops (`abort`); its Exit
    is STALE too, the job gets no result. TAKEN_BACK: it waited in the queue of a host polite
    mode holds (`host_held`); its Exit, with no Started (it never ran), puts the job back in
    line without spending a retry; had it started meanwhile, a success stands. DRAINED: the run
    starts nothing more (--halt soon) and the attempt had not started as far as the master knew:
    its Kill stops it only if it still waits in the dispatcher's queue (then its Exit is STALE);
    one the dispatcher had started (its Started held back, or on its way) runs on and counts."""

    TIMEOUT = "timeout"
    SUPERSEDED = "superseded"
    HALTED = "halted"
    TAKEN_BACK = "taken back"
    DRAINED = "drained"

    @property
    def runs_on(self) -> bool:
        """Its Kill may leave it running (DRAINED: the host had started it): still timed."""
        return self is KillReason.DRAINED

    @property
    def moot(self) -> bool:
        """The attempt's outcome no longer matters: its Exit (or loss) is STALE."""
        return self is KillReason.SUPERSEDED or self is KillReason.HALTED


_AIDS = count()
"""Attempt ids, unique in the master process rather than per run: a late frame about an attempt
of an earlier run on the same hosts can never pass for an attempt of this one."""


@dataclass(slots=True)
class Attempt:
    """One try of a job on one host; `aid` is unique within the master process."""

    aid: int
    job: Job
    host: str
    number: int
    speculative: bool = False  # a copy, started while another attempt of the job ran


@dataclass(slots=True)
class Ended:
    """The verdict on an ended attempt (`attempt` is None for an unknown aid). For FINAL, `ok`
    says whether the job succeeded, and `error` explains a failure its exit status does not (a
    timeout). `paused` is set when this failure paused the host. (Not frozen: one is made per
    attempt, and a frozen dataclass's fields cost a call each; nobody changes one.)"""

    verdict: Verdict
    attempt: Attempt | None
    ok: bool = False
    error: str | None = None
    paused: HostPause | None = None
    excused: bool = False  # it failed through no fault of its own (polite mode): no retry spent

    @property
    def final(self) -> bool:
        return self.verdict is Verdict.FINAL

    # The fields of `attempt`, for callers written when attempt_ended returned the Attempt.
    @property
    def job(self) -> Job:
        assert self.attempt is not None
        return self.attempt.job

    @property
    def number(self) -> int:
        assert self.attempt is not None
        return self.attempt.number


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop this attempt (Kill frame); its Exit still comes, and `attempt_ended` judges it."""

    attempt: Attempt
    reason: KillReason


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A job given up with no attempt result to emit: report it as failed with `error`."""

    job: Job
    attempts: int
    host: str
    error: str


class Scheduler:
    """Job queue, host table, attempts in flight, and the decisions about them. `timeout`:
    seconds, or `"300%"` of the median successful duration (see `Timeout`); `speculate`: True
    for the default `Speculation` rules, False for none, or custom rules."""

    def __init__(
        self,
        jobs: Iterator[Job],
        *,
        retries: int = 2,
        max_losses: int = 5,
        timeout: float | str | Timeout | None = None,
        speculate: bool | Speculation = True,
        pause_after: int = 5,
        pause_for: float = 60.0,
    ) -> None:
        if retries < 0 or max_losses < 1 or pause_after < 1 or pause_for < 0:
            raise UsageError("need retries >= 0, max_losses >= 1, pause_after >= 1, pause_for >= 0")
        self._backlog = Backlog(jobs)
        self._jobs = self._backlog.jobs  # jobs pulled and not final yet
        self._retries, self._max_losses = retries, max_losses
        self._timeout = Timeout.parse(timeout)
        self._spec = Speculation() if speculate is True else (speculate or None)
        self._pausing = speculation.Pausing(pause_after, pause_for)
        self._table = HostTable()
        self._hosts = self._table.slots  # ready hosts
        self._health = self._table.health  # every host seen: pauses last
        self._flights = InFlight(self._jobs)  # attempts in flight, including those being killed
        self._kills: list[Kill] = []  # decided, not yet handed out by due_kills
        self._abandoned: list[Abandoned] = []
        self._aids = _AIDS
        self._now = -math.inf  # the latest `now` the caller gave
        self._successes = 0
        self.runtimes = Runtimes()

    # -- events -----------------------------------------------------------------------------

    def host_ready(self, name: str, slots: int, lookahead: int | None = None) -> None:
        """The host can take `slots` running attempts plus `lookahead` queued ones; without a
        `lookahead`, the queue grows to hide the host's measured round trip (see lookahead.py)."""
        self._table.ready(name, slots, lookahead)

    def host_lost(self, name: str, *, now: float | None = None) -> list[Attempt]:
        """Forget the host and return all its attempts: drop their output, no Exit will count.

        Their jobs go back to the queue, first in line and in job order, unless another copy of
        them still runs. A job lost `max_losses` times, or whose attempt had timed out with no
        retry left, is given up instead: see `take_abandoned`.
        """
        self._tick(now)
        if (host := self._table.lost(name)) is None:
            return []
        ends = (self._flights.end(aid) for aid in host.attempts)
        lost = sorted((run for run in ends if run is not None), key=lambda r: r.job_id)
        again: list[int] = []
        for run in lost:
            state = self._jobs.get(run.job_id)
            if state is None or (run.doom is not None and run.doom.moot):
                continue
            state.aids.discard(run.attempt.aid)
            if run.doom is KillReason.TAKEN_BACK:
                give_up = False  # it sat in a held host's queue: nothing to blame it for
            elif run.doom is KillReason.TIMEOUT:
                state.failures += 1
                state.failed_on.add(name)
                error = f"timed out after {run.limit:.3g} s, then its host was lost"
                give_up = state.failures > self._retries
            else:
                state.losses += 1
                error = f"{state.losses} hosts were lost while running it (last: {name})"
                give_up = state.losses >= self._max_losses
            if give_up and not state.aids:
                del self._jobs[run.job_id]
                self._abandoned.append(Abandoned(state.job, state.tries, name, error))
            elif not state.aids:  # else another copy of the job carries on
                again.append(run.job_id)
        self._backlog.again(again)
        return [run.attempt for run in lost]

    def attempt_started(self, aid: int, now: float) -> None:
        """The dispatcher started the attempt (it may have queued it): its run time counts now.
        `now` comes from a monotonic clock, so starts stay in start order."""
        self._tick(now)
        self._flights.start(aid, now)
        if (host := self._table.started(aid, now)) is not None:
            self._table.retune(host, self.runtimes)

    def attempt_done(
        self, aid: int, started: float, now: float, *, ok: bool, duration: float
    ) -> Ended:
        """`attempt_started(aid, started)` then `attempt_ended(aid, ...)`, for an attempt the
        host reports whole (a Done): it is never timed as running, so no start-order entry is
        made only to be removed; its round trip is still measured."""
        if ok and (attempt := self.succeeded(aid, started, now, duration)) is not None:
            return Ended(Verdict.FINAL, attempt, ok=True)
        run = self._flights.runs.get(aid)
        if run is not None and run.started is None:
            run.started = started
        if (host := self._table.started(aid, started)) is not None:  # (its probe is gone now)
            self._table.retune(host, self.runtimes)
        return self.attempt_ended(aid, ok=ok, now=now, duration=duration, probe=False)

    def succeeded(self, aid: int, started: float, now: float, duration: float) -> Attempt | None:
        """`attempt_done(aid, started, now, ok=True, duration=duration)` for most jobs' ends:
        the only attempt of its job, not doomed, not started before. Its attempt, whose success
        is the job's FINAL result; None, with nothing changed, for any other attempt (then
        `attempt_done` judges it). The same bookkeeping without the general path's questions
        and its verdict record: most of a short job's cost in the scheduler."""
        run = self._flights.runs.get(aid)
        if run is None or run.doom is not None or run.started is not None:
            return None
        attempt = run.attempt
        state = self._jobs.get(attempt.job.id)
        if state is None or len(state.aids) != 1 or aid not in state.aids:
            return None
        if now > self._now:  # _tick, inline
            self._now = now
        run.started = started
        table = self._table
        if (retuned := table.started(aid, started)) is not None:  # (its probe is gone now)
            table.retune(retuned, self.runtimes)
        del self._flights.runs[aid]  # InFlight.end: never started as far as timing goes
        name = attempt.host
        host = self._hosts.get(name)
        if host is not None:
            host.attempts.discard(aid)
        self.runtimes.observe(name, duration)
        if not self._successes % RETUNE_EVERY:
            table.retune(name, self.runtimes)
        self._successes += 1
        self._health[name].streak.clear()
        state.aids.clear()
        del self._jobs[attempt.job.id]  # _final: no other attempt to stop
        return attempt

    def attempt_ended(
        self,
        aid: int,
        *,
        ok: bool = True,
        now: float | None = None,
        duration: float | None = None,
        retry: bool = True,
        probe: bool = True,
    ) -> Ended:
        """The attempt is over; the verdict says whether its result is the job's final one.

        `ok`: it exited with status 0. `duration`: its run time as measured on the host (better
        than the master's clock, which adds network delay); else `now` - start is used. The
        default `ok=True` keeps callers that predate retries emitting every result. A failure
        with `retry=False` uses up the job's retries (its output passed a cap: it would again).
        `probe=False`: it timed no round trip, or its start already took the sample.
        """
        now = self._tick(now)
        run = self._flights.end(aid)
        if probe:
            self._table.forget(aid)
        if run is None:
            return Ended(Verdict.STALE, None)
        host = self._hosts.get(run.attempt.host)
        if host is not None:
            host.attempts.discard(aid)
        state = self._jobs.get(run.attempt.job.id)
        if state is None or (run.doom is not None and run.doom.moot):
            return Ended(Verdict.STALE, run.attempt)
        if run.doom is KillReason.DRAINED and run.started is None:  # taken from its queue
            return Ended(Verdict.STALE, run.attempt)
        state.aids.discard(aid)
        if not ok and (run.doom is KillReason.TAKEN_BACK or run.excuse is not None):
            return self._excused(state, run, now)
        if not ok and not retry:
            state.failures = max(state.failures, self._retries)
        if not ok:  # a timed-out attempt that still exited 0 ended just before its kill: a success
            error = f"timed out after {run.limit:.3g} s" if run.doom else None
            return self._failed(state, run, error, now)
        if duration is None and run.started is not None and math.isfinite(now):
            duration = now - run.started
        name = run.attempt.host
        size = None  # of the job, for what its losers' hosts reveal (when it has any)
        if duration is not None:
            if state.aids:
                size = duration / self.runtimes.slowness(name)
            self.runtimes.observe(name, duration)
            if not self._successes % RETUNE_EVERY:  # the typical job drifts slowly: cheaply
                self._table.retune(name, self.runtimes)
        self._successes += 1
        self._health[name].streak.clear()
        self._final(state, run, now, size)
        return Ended(Verdict.FINAL, run.attempt, ok=True)

    def _failed(self, state: PendingJob, run: Flight, error: str | None, now: float) -> Ended:
        """Count the failure; retry unless the job is out of retries."""
        name = run.attempt.host
        state.failures += 1
        state.failed_on.add(name)
        if run.doom is KillReason.TIMEOUT and run.started is not None:
            self.runtimes.at_least(name, now - run.started)
        health = self._health[name]
        paused = health.failed(name, run.job_id, now, self._successes, self._pausing)
        if state.aids:  # another attempt runs: its ending decides
            return Ended(Verdict.RETRY, run.attempt, error=error, paused=paused)
        if state.failures > self._retries:
            self._final(state, run, now, None)
            return Ended(Verdict.FINAL, run.attempt, ok=False, error=error, paused=paused)
        self._backlog.again([run.job_id])
        return Ended(Verdict.RETRY, run.attempt, error=error, paused=paused)

    def _excused(self, state: PendingJob, run: Flight, now: float) -> Ended:
        """An attempt polite mode ended (taken back from a held host's queue, or killed there
        by --yield or --memfree-kill): the job runs again without spending a retry. One that
        never started leaves no trace (its number is given again); one killed while running
        counts as a loss, so that a job that is itself the trouble (it eats the memory) still
        ends, after `max_losses` of them."""
        error = run.excuse or f"taken back from {run.attempt.host}, held by polite mode"
        if run.excuse is not None:
            state.losses += 1
            if state.losses >= self._max_losses and not state.aids:
                error = f"killed {state.losses} times by polite mode (last: {run.excuse})"
                self._final(state, run, now, None)
                return Ended(Verdict.FINAL, run.attempt, ok=False, error=error, excused=True)
        elif run.started is None and state.tries == run.attempt.number:
            state.tries -= 1  # it never ran: its number goes to the next attempt
        if not state.aids:  # else another attempt of the job runs: its ending decides
            self._backlog.again([run.job_id])
        return Ended(Verdict.RETRY, run.attempt, error=error, excused=True)

    def _final(self, state: PendingJob, run: Flight, now: float, size: float | None) -> None:
        """The job is done: kill its other attempts, whose late output is then STALE."""
        del self._jobs[state.job.id]
        if not state.aids:  # most jobs: no other attempt to stop
            return
        for aid in sorted(state.aids):
            other = self._flights.runs[aid]
            if other.doom is None:
                self._kills.append(Kill(other.attempt, KillReason.SUPERSEDED))
                if other.started is not None and size:  # the loser's host is at least this slow
                    self.runtimes.at_least(other.attempt.host, now - other.started, size)
            self._flights.doom(other, KillReason.SUPERSEDED)

    # -- decisions --------------------------------------------------------------------------

    def next_runs(self, now: float | None = None) -> list[Attempt]:
        """Attempts to start: copies of stragglers first (capped), then queued jobs, one job per
        host per round so hosts start evenly; once the batch ran dry, copies for idle slots."""
        now = self._tick(now)
        usable = self._table.usable(now)
        dry_before = self._backlog.source_done
        runs = self._speculate(usable, now)
        runs += self._fill(usable)
        if self._backlog.source_done and not dry_before:
            runs += self._speculate(usable, now)
        return runs

    def due_kills(self, now: float | None = None) -> list[Kill]:
        """Attempts to stop now: losers of a finished job, and attempts past the timeout. A killed
        attempt keeps its slot until its Exit, which `attempt_ended` judges: STALE for a loser,
        a failure (RETRY, or FINAL with `error`) for a timeout."""
        now = self._tick(now)
        kills = [k for k in self._kills if k.attempt.aid in self._flights]  # not ended meanwhile
        self._kills = []
        for aid, limit in self._timeouts(now)[0]:
            run = self._flights.runs[aid]
            run.limit = limit
            self._flights.doom(run, KillReason.TIMEOUT)
            kills.append(Kill(run.attempt, KillReason.TIMEOUT))
        return kills

    def next_wakeup(self, now: float | None = None) -> float | None:
        """The earliest later time at which `due_kills` or `next_runs` may decide something new
        with no event in between (a timeout, a straggler, a pause's end); None if none."""
        now = self._tick(now)
        if self._kills:
            return now
        times = [h.paused_until for h in self._health.values()] + [self._timeouts(now)[1]]
        if self._backlog.starved:  # a stream's next job may have arrived by then
            times.append(now + SOURCE_POLL)
        if spec := self._spec:
            alone, hosts = partial(self._flights.started, alone=True), self._hosts.values()
            times.append(
                speculation.wake_time(spec, self.runtimes, alone, hosts, now, self._backlog.drained)
            )
        return min((t for t in times if t is not None and t > now), default=None)

    def _timeouts(self, now: float) -> tuple[list[tuple[int, float]], float | None]:
        """Attempts past their timeout, and the next time one will be."""
        if self._timeout is None:
            return [], None
        limit = partial(self._timeout.limit, self.runtimes)
        return speculation.due(self._flights.started(), limit, self.runtimes, now)

    def host_held(self, name: str, held: bool) -> list[Attempt]:
        """Polite mode holds the host (loaded, short of memory, a person at it), or no longer
        does. A held host gets no attempt, and those waiting in its queue are taken back (the
        attempts returned): each gets a Kill, which the dispatcher answers with an Exit and no
        Started when it had not started it, so that it never runs twice; the job then runs
        elsewhere (`attempt_ended`). One that started meanwhile is killed as well: its Exit
        decides, a success standing as any other."""
        self._table.hold(name, held)
        host = self._hosts.get(name)
        if not held or host is None:
            return []
        taken = []
        for aid in sorted(host.attempts):
            run = self._flights.runs.get(aid)
            if run is None or run.started is not None or run.doom is not None:
                continue
            self._flights.doom(run, KillReason.TAKEN_BACK)
            self._kills.append(Kill(run.attempt, KillReason.TAKEN_BACK))
            taken.append(run.attempt)
        return taken

    def attempt_evicted(self, aid: int, why: str) -> None:
        """The host kills the attempt for polite mode's sake (`why`: --yield moves it, or
        --memfree-kill): if it fails now, that is not its fault (see `_excused`)."""
        run = self._flights.runs.get(aid)
        if run is not None:
            run.excuse = why

    def abort(self, *, started_too: bool = True) -> None:
        """Stop the run: start nothing more, kill every attempt in flight; their Exits are
        STALE and their jobs get no result (--halt now). Without `started_too`, those a host
        started run on to their end (--halt soon): only those waiting in its queue go."""
        self._backlog.close()
        for run in self._flights.runs.values():
            if run.started is not None and not started_too:
                continue
            if run.doom is None:
                reason = KillReason.HALTED if started_too else KillReason.DRAINED
                self._kills.append(Kill(run.attempt, reason))
                self._flights.doom(run, reason)
            else:  # already being killed: its end is stale now
                self._flights.doom(run, KillReason.HALTED)

    def take_abandoned(self) -> list[Abandoned]:
        """Jobs given up with no result to emit (see `host_lost`): report each as a failed
        result with its `error`. `finished` waits until they were taken."""
        taken, self._abandoned = self._abandoned, []
        return taken

    def job_done(self, job_id: int) -> None:
        """Kept for callers that predate verdicts: a FINAL verdict already dropped the job."""

    # -- filling hosts ----------------------------------------------------------------------

    def _fill(self, usable: list[Slots]) -> list[Attempt]:
        """One job per host per round. Hosts that sit out the tail are left out, also of "has
        every host failed this job?": else a job could wait forever for a host that holds back."""
        runs: list[Attempt] = []
        hosts = [h for h in usable if h.room > 0]
        held = {h.name for h in hosts if self._holds_back(h, usable)}
        names = frozenset(h.name for h in usable) - held
        hosts = [h for h in hosts if h.name not in held]
        next_for = self._backlog.next_for
        if len(hosts) == 1:  # most rounds: one host's ends made room there, filled alone
            host = hosts[0]
            while len(host.attempts) < host.capacity:
                if (state := next_for(host.name, names)) is None:
                    break
                runs.append(self._start(state, host))
            return runs
        while hosts:  # (room inline, not Slots.room: this loop runs once a job)
            hosts.sort(key=lambda h: len(h.attempts) - h.capacity)  # the most room first
            for host in list(hosts):
                state = next_for(host.name, names)
                if state is not None:
                    runs.append(self._start(state, host))
                if state is None or len(host.attempts) >= host.capacity:
                    hosts.remove(host)
        return runs

    def _holds_back(self, host: Slots, usable: list[Slots]) -> bool:
        """A very slow host sits out the batch's tail if the others would finish it sooner.

        Knowing that few jobs are left takes reading ahead in the batch, bounded by PEEK_FACTOR
        times the cluster's capacity, so memory stays bounded by the work in flight.
        """
        if self._spec is None:
            return False
        limit = self._table.tail_limit(host, usable, self._spec, self.runtimes, PEEK_FACTOR)
        return limit > 0 and self._backlog.fewer_than(limit)

    def _start(self, state: PendingJob, host: Slots, *, speculative: bool = False) -> Attempt:
        state.tries += 1
        attempt = Attempt(next(self._aids), state.job, host.name, state.tries, speculative)
        self._table.sent(attempt.aid, host, self._now)
        self._flights.add(attempt)
        host.attempts.add(attempt.aid)
        state.aids.add(attempt.aid)
        return attempt

    # -- speculation ------------------------------------------------------------------------

    def _speculate(self, usable: list[Slots], now: float) -> list[Attempt]:
        """Copies of attempts that a copy elsewhere is expected to beat (see speculation.py)."""
        spec = self._spec
        if spec is None or self.runtimes.count < spec.min_samples:
            return []
        hosts = list(self._hosts.values())
        plan = self._flights.copies(spec, self.runtimes, hosts, usable, now, self._backlog.drained)
        start = partial(self._start, speculative=True)
        return [start(self._flights.job(aid), self._hosts[name]) for aid, name in plan]

    # -- state ------------------------------------------------------------------------------

    def _tick(self, now: float | None) -> float:
        """The caller's clock: the latest `now` given stands in for calls made without one."""
        if now is not None and now > self._now:
            self._now = now
        return self._now

    @property
    def in_flight(self) -> int:
        """Attempts holding a slot, including those being killed."""
        return len(self._flights)

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    @property
    def finished(self) -> bool:
        """Every job has its final outcome, every attempt has ended, every give-up was taken."""
        idle = not self._flights and not self._jobs and not self._abandoned
        return idle and self._backlog.drained

    @property
    def has_pending(self) -> bool:
        """Work that has no host yet (cheap check; may pull nothing from the source)."""
        return self._backlog.has_pending

    def attempt(self, aid: int) -> Attempt | None:
        return run.attempt if (run := self._flights.runs.get(aid)) else None
