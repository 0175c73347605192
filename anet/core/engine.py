"""The engine: what the master decides about a run, as a state machine with no I/O.

Wire messages from each host, host events (ready, lost) and `now` go in; actions come out
(`take()`): frames to send per host, final results to deliver, ended attempts to log, and the
time of the next decision no event will bring. Nothing here awaits, sleeps, reads a clock or
calls back into the layer above: `Cluster` feeds it and carries its actions out, and the tests
drive it on a fake clock with a recording double.

It owns what a run knows of its attempts: their output until they end, and each host's work
counters (`HostStats`), beside the `Scheduler`, which decides which job runs where. Invariant 8
lives here too: a host speaks only for itself, so a frame about an attempt that host was not
given (or that already ended there) is a protocol error of that host, never a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dispatcher.protocol import STDOUT, Exit, Kill, Message, Output, Run, Started

from ..errors import protocol_error
from ..logs import get_logger
from .batch import Job, unrunnable
from .record import JobResult
from .scheduler import Attempt, Ended, Scheduler, Verdict

log = get_logger()

KILL_GRACE = 2.0
"""Seconds between TERM and KILL for a timed-out or superseded attempt's process group."""


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """How hard to try: retries of failed jobs, a per-job timeout, speculative copies.

    `timeout` is seconds, or a percentage of the median run time of successful jobs ("300%",
    as GNU parallel's --timeout); `speculate` starts copies of stragglers on faster hosts.
    """

    retries: int = 2
    timeout: float | str | None = None
    speculate: bool = True


@dataclass(slots=True, kw_only=True)
class HostStats:
    """One host's work, counted by the engine; displays read it on a timer, never per event.
    (Keyword-only, so a record that extends it keeps its own positional fields first.)"""

    running: int = 0  # attempts started on the host and not ended
    done: int = 0  # final results it gave
    failed_attempts: int = 0  # attempts that exited non-zero, were killed or timed out
    spec_won: int = 0  # speculative copies started here that gave their job's result
    spec_lost: int = 0  # speculative copies started here that another attempt beat
    ended: int = 0  # attempts that ended with an Exit
    busy_time: float = 0.0  # their summed run times: mean job time is busy_time / ended

    @property
    def mean_time(self) -> float | None:
        """Mean run time of the attempts that ended here, None before the first."""
        return self.busy_time / self.ended if self.ended else None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """An attempt that ended (`code` or `signal`) or was lost with its host (neither): for the
    journal's attempts table and --joblog. `start` is Unix time, `size` its output bytes."""

    attempt: Attempt
    size: int
    start: float
    runtime: float
    code: int | None
    signal: int | None


@dataclass(slots=True)
class Actions:
    """What the engine decided since the last `take()`, for the layer above to carry out."""

    frames: dict[str, list[Message]] = field(default_factory=dict)
    results: list[JobResult] = field(default_factory=list)
    attempts: list[AttemptEnd] = field(default_factory=list)
    wakeup: float | None = None  # loop time of the next decision no event will bring

    def send(self, host: str, msg: Message) -> None:
        self.frames.setdefault(host, []).append(msg)


@dataclass(slots=True)
class _Flight:
    """An attempt sent to a host and not ended: where it went and what it said so far."""

    attempt: Attempt
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    start: float = 0.0  # Unix time: sent, then started
    started: bool = False
    dropped: bool = False  # a superseded copy: its output is moot, its Exit still gets logged

    @property
    def size(self) -> int:
        return len(self.stdout) + len(self.stderr)


class Engine:
    """One run's decisions. `now` is the caller's monotonic clock (the event loop's); Unix times
    in records are `now + wall_offset`. `stats` is every host's record, shared with displays."""

    def __init__(
        self,
        jobs: Iterable[Job],
        policy: RunPolicy,
        stats: dict[str, HostStats],
        *,
        wall_offset: float = 0.0,
    ) -> None:
        self._failed_early: list[JobResult] = []
        self._scheduler = Scheduler(
            self._runnable(jobs),
            retries=policy.retries,
            timeout=policy.timeout,
            speculate=policy.speculate,
        )
        self._stats = stats
        self._wall = wall_offset
        self._slots: dict[str, int] = {}
        self._flights: dict[int, _Flight] = {}
        self._draining = False
        self._actions = Actions()

    # -- what comes in ------------------------------------------------------------------------

    def host_ready(self, host: str, slots: int) -> None:
        """The host's dispatcher is ready for `slots` attempts at once (again, after a loss)."""
        self._slots[host] = slots
        self._scheduler.host_ready(host, slots)

    def host_lost(self, host: str, now: float) -> None:
        """The host's dispatcher is gone: its attempts go back to the queue (or are given up)."""
        self._slots.pop(host, None)
        stats = self._stats[host]
        stats.running = 0
        for attempt in self._scheduler.host_lost(host, now=now):
            flight = self._flights.pop(attempt.aid, None)
            if flight is not None:  # logged as lost: no exit code, no signal
                runtime = now + self._wall - flight.start
                self._actions.attempts.append(
                    AttemptEnd(attempt, flight.size, flight.start, runtime, None, None)
                )
            log.info(f"job {attempt.job.id} goes back to the queue", host=host)
        for given_up in self._scheduler.take_abandoned():
            log.warning(f"job {given_up.job.id}: given up: {given_up.error}")
            result = JobResult(
                given_up.job.id, False, None, None, given_up.host, given_up.attempts, 0.0, b"", b"",
                error=given_up.error,
            )  # fmt: skip
            self._actions.results.append(result)

    def frame(self, host: str, msg: Message, now: float) -> None:
        """A Started, Output or Exit frame from `host`. HostError (permanent) when the host
        speaks of an attempt that is not its own: it breaks the protocol, and is given up."""
        aid = getattr(msg, "aid", -1)
        flight = self._flights.get(aid)
        if flight is None or flight.attempt.host != host:
            raise protocol_error(
                host,
                f"{type(msg).__name__} about attempt {aid}, which was not sent to this host"
                " or had already ended there",
            )
        if isinstance(msg, Output):
            if not flight.dropped:
                (flight.stdout if msg.stream == STDOUT else flight.stderr).extend(msg.data)
        elif isinstance(msg, Started):
            self._started(host, flight, msg, now)
        elif isinstance(msg, Exit):
            self._exit(host, flight, msg, now)

    def owns(self, aid: int) -> bool:
        """The attempt was sent by this run and has not ended: its frames are this run's."""
        return aid in self._flights

    def drain(self) -> None:
        """Start no more attempts, and take back those sent but not started (a dispatcher
        would start them as slots free up); the run ends once those running have ended
        (--halt soon)."""
        self._draining = True
        self._scheduler.abort(started_too=False)

    def abort(self) -> None:
        """Kill every attempt in flight and start none: the run ends once their Exits (or their
        hosts' losses) came, with no result for their jobs (--halt now)."""
        self._draining = True
        self._scheduler.abort()

    # -- decisions ------------------------------------------------------------------------------

    def round(self, now: float) -> None:
        """A scheduling round: kill what must stop, start what may start, note the next wake-up.
        Cheap enough to run after every burst of events; one round sends each host its frames in
        one write."""
        actions = self._actions
        for kill in self._scheduler.due_kills(now):
            flight = self._flights.get(kill.attempt.aid)
            if kill.reason.moot:
                if flight is not None:  # lost the race, or the run stops: its output is moot
                    flight.dropped = True
                    flight.stdout.clear()
                    flight.stderr.clear()
            else:
                log.info(f"job {kill.attempt.job.id} timed out on {kill.attempt.host}")
            actions.send(kill.attempt.host, Kill(kill.attempt.aid, KILL_GRACE))
        for attempt in () if self._draining else self._scheduler.next_runs(now):
            self._flights[attempt.aid] = _Flight(attempt, start=now + self._wall)
            actions.send(attempt.host, Run(attempt.aid, attempt.job.id, attempt.job.command))
            if attempt.speculative:
                log.info(f"job {attempt.job.id}: a copy starts on {attempt.host}")
        actions.results += self._failed_early
        self._failed_early.clear()
        actions.wakeup = self._scheduler.next_wakeup(now)

    def take(self) -> Actions:
        """Everything decided since the last take, in the order decided."""
        taken, self._actions = self._actions, Actions(wakeup=self._actions.wakeup)
        return taken

    @property
    def finished(self) -> bool:
        """Every job has its final result (taken), or, draining, no attempt is left."""
        if self._failed_early or self._actions.results:
            return False
        scheduler = self._scheduler
        return scheduler.finished or (self._draining and scheduler.in_flight == 0)

    # -- inside ---------------------------------------------------------------------------------

    def _runnable(self, jobs: Iterable[Job]) -> Iterator[Job]:
        """The jobs a host can run; one that cannot run anywhere (a NUL byte, longer than exec
        takes) is a failed result decided here, never sent."""
        for job in jobs:
            why = unrunnable(job.command)
            if why is None:
                yield job
                continue
            said = f"anet: job {job.id}: {why}\n".encode()
            self._failed_early.append(
                JobResult(job.id, False, None, None, "", 0, 0.0, b"", said, error=why)
            )

    def _started(self, host: str, flight: _Flight, msg: Started, now: float) -> None:
        if flight.started:
            raise protocol_error(host, f"a second Started for attempt {msg.aid}")
        if msg.slot > self._slots.get(host, 0):
            raise protocol_error(host, f"Started in slot {msg.slot} of {self._slots.get(host, 0)}")
        flight.started, flight.start = True, now + self._wall
        self._stats[host].running += 1
        self._scheduler.attempt_started(msg.aid, now)

    def _exit(self, host: str, flight: _Flight, msg: Exit, now: float) -> None:
        del self._flights[msg.aid]
        ended = self._scheduler.attempt_ended(
            msg.aid, ok=msg.code == 0, now=now, duration=msg.duration
        )
        self._count(host, flight, ended, msg)
        if ended.paused is not None:
            log.warning(str(ended.paused), host=host)
        attempt = ended.attempt
        if attempt is None or ended.verdict is Verdict.STALE:
            return
        result = JobResult(
            id=attempt.job.id,
            ok=ended.ok,
            exit_code=msg.code,
            signal=msg.signal,
            host=host,
            attempts=attempt.number,
            duration=msg.duration,
            stdout=bytes(flight.stdout),
            stderr=bytes(flight.stderr),
            error=ended.error,
        )
        if not ended.final:
            why = ended.error or _status(result)
            log.info(f"job {result.id} failed on {host} ({why}); it will run again")
            return
        self._stats[host].done += 1
        self._actions.results.append(result)

    def _count(self, host: str, flight: _Flight, ended: Ended, msg: Exit) -> None:
        """The host's counters for an ended attempt, and the attempt's record."""
        stats, attempt = self._stats[host], flight.attempt
        if flight.started:
            stats.running -= 1
        stats.ended += 1
        stats.busy_time += msg.duration
        if ended.verdict is Verdict.STALE:
            stats.spec_lost += attempt.speculative
        elif msg.code != 0:
            stats.failed_attempts += 1
        elif ended.final:
            stats.spec_won += attempt.speculative
        self._actions.attempts.append(
            AttemptEnd(attempt, flight.size, flight.start, msg.duration, msg.code, msg.signal)
        )


def _status(result: JobResult) -> str:
    return f"signal {result.signal}" if result.signal is not None else f"exit {result.exit_code}"
