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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.polite import Evicted
from dispatcher.protocol import STDOUT, Done, Exit, Kill, Message, Output, Run, Started

from ..errors import HostError, protocol_error
from ..logs import get_logger
from .batch import Job, JobInput, unrunnable
from .readahead import NOT_YET
from .record import JobResult, SpooledResult, new_result
from .scheduler import Attempt, Ended, KillReason, Scheduler, Verdict
from .spool import SPOOL_AT, OutputCap, Spool
from .spool import Output as Held

log = get_logger()

KILL_GRACE = 2.0
"""Seconds between TERM and KILL for a timed-out or superseded attempt's process group."""
KEEP_SMALL = 64 << 10
"""A spooled stream this small at the end (stderr beside a huge stdout) is read back into
memory: its result then holds bytes, one file fewer kept open."""


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """How hard to try: retries of failed jobs, a per-job timeout, speculative copies.

    `timeout` is seconds, or a percentage of the median run time of successful jobs ("300%",
    as GNU parallel's --timeout); `speculate` starts copies of stragglers on faster hosts.
    """

    retries: int = 2
    timeout: float | str | None = None
    speculate: bool = True
    caps: tuple[OutputCap, ...] = ()  # --max-output, and what the output format can carry


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


@dataclass(slots=True)
class AttemptEnd:
    """An attempt that ended (`code` or `signal`) or was lost with its host (neither): for the
    journal's attempts table and --joblog. `start` is Unix time, `size` its output bytes.
    (Not frozen: one is made per attempt, and a frozen dataclass's fields cost a call each.)"""

    attempt: Attempt
    size: int
    start: float
    runtime: float
    code: int | None
    signal: int | None
    excused: bool = False  # no failure of the job's: polite mode's kill, a lost race, a halt


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
    """An attempt sent to a host and not ended: where it went and what it said so far (in
    memory, then, past SPOOL_AT, in spool files: `spools` by stream, made as needed)."""

    attempt: Attempt
    stdout: bytearray | bytes = b""  # a bytearray from its first piece on (most have none)
    stderr: bytearray | bytes = b""
    start: float = 0.0  # Unix time: sent, then started
    started: bool = False
    dropped: bool = False  # a superseded copy: its output is moot, its Exit still gets logged
    spools: list[Spool | None] | None = None
    cut: str | None = None  # why its output was cut and it was killed: its job's failure
    spooled: int = 0  # bytes in its spools

    @property
    def size(self) -> int:
        return len(self.stdout) + len(self.stderr) + self.spooled

    @property
    def spoke(self) -> bool:
        """The host said something of it before its end: its Started, or output."""
        return self.started or bool(self.stdout or self.stderr or self.spooled)

    def stream_size(self, index: int) -> int:
        spool = self.spools[index] if self.spools is not None else None
        return len((self.stdout, self.stderr)[index]) + (spool.size if spool else 0)

    def spool(self, index: int, data: bytes, directory: Path | None) -> None:
        """Append to the stream's spool file, made (with what memory held) when first needed."""
        spools = self.spools if self.spools is not None else [None, None]
        self.spools = spools
        spool = spools[index]
        if spool is None:
            spool = spools[index] = Spool(directory)
            held = (self.stdout, self.stderr)[index]
            spool.write(held)
            self.spooled += len(held)
            if index == 0:
                self.stdout = b""
            else:
                self.stderr = b""
        spool.write(data)
        self.spooled += len(data)

    def keep(self, index: int, data: bytes) -> None:
        """Hold a piece of the stream in memory: its bytearray is made by its first piece, so
        an attempt reported whole by a Done makes none."""
        if index == 0:
            if self.stdout:
                self.stdout.extend(data)  # type: ignore[union-attr]  # bytearray once not empty
            else:
                self.stdout = bytearray(data)
        elif self.stderr:
            self.stderr.extend(data)  # type: ignore[union-attr]
        else:
            self.stderr = bytearray(data)

    def output(self, index: int) -> Held:
        """The stream as its result holds it: bytes, or its spool when it is big."""
        spool = self.spools[index] if self.spools is not None else None
        if spool is None:
            return bytes((self.stdout, self.stderr)[index])
        if spool.size > KEEP_SMALL:
            return spool
        data = spool.read()
        spool.close()
        return data

    def drop(self) -> None:
        """Its output is moot: forget it, spool files included."""
        self.dropped = True
        self.stdout = self.stderr = b""
        for spool in self.spools or ():
            if spool is not None:
                spool.close()
        self.spools, self.spooled = None, 0


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
        spool_dir: Path | None = None,
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
        self._caps = policy.caps
        self._spool_dir = spool_dir
        self.files = False
        """A job of this run has per-job files (--transfer, --return): its Runs need a Place."""
        # Output up to this many bytes an attempt keeps in memory with no further look
        self._quick = min([SPOOL_AT, *(cap.size for cap in policy.caps)])

    # -- what comes in ------------------------------------------------------------------------

    def host_ready(self, host: str, slots: int, share: int | None = None) -> None:
        """The host's dispatcher is ready for `slots` attempts at once (again, after a loss), of
        which this run may use `share` (all by default; runs sharing a cluster split them, and
        a new split comes this way: the attempts in flight carry on)."""
        self._slots[host] = slots
        self._scheduler.host_ready(host, slots if share is None else share)

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

    def frame(self, host: str, msg: Message, now: float) -> bool:
        """A Started, Output, Exit or Done frame from `host`. HostError (permanent) when the host
        speaks of an attempt that is not its own: it breaks the protocol, and is given up.
        True when an Output brought a decision to carry out (a kill: output over a cap)."""
        aid = getattr(msg, "aid", -1)
        flight = self._flights.get(aid)
        if flight is None or flight.attempt.host != host:
            raise _not_sent(host, msg, aid)
        if isinstance(msg, Output):
            return self._output(flight, 0 if msg.stream == STDOUT else 1, msg.data)
        if type(msg) is Done:  # a short job whole: started, said all, ended
            self._done(host, flight, msg, now)
        elif isinstance(msg, Started):
            self._started(host, flight, msg.aid, msg.slot, now)
        elif isinstance(msg, Exit):
            self._exit(host, flight, msg, now)
        elif isinstance(msg, Evicted):  # polite mode kills it there: not the job's fault
            self._scheduler.attempt_evicted(aid, msg.reason)
        return False

    def dones(self, host: str, dones: list[Done], now: float) -> None:
        """The records of a Dones frame from `host`: `frame` of each, without its dispatch on
        the message's type (a Dones frame carries most jobs' ends)."""
        flights, quick, succeeded = self._flights, self._quick, self._scheduler.succeeded
        for msg in dones:
            aid = msg.aid
            flight = flights.get(aid)
            if flight is None or flight.attempt.host != host:
                raise _not_sent(host, msg, aid)
            out, err = msg.stdout, msg.stderr
            if (
                msg.code != 0
                or len(out) + len(err) > quick
                or flight.spoke
                or flight.dropped
                or msg.slot > self._slots.get(host, 0)
            ):  # anything but a plain success: the general path says and judges it
                self._done(host, flight, msg, now)
                continue
            started = now - msg.duration
            attempt = succeeded(aid, started, now, msg.duration)
            if attempt is None:  # another attempt of the job, a kill decided: judged there
                self._done(host, flight, msg, now)
                continue
            self._succeeded(host, flight, attempt, msg, started)

    def _succeeded(
        self, host: str, flight: _Flight, attempt: Attempt, msg: Done, started: float
    ) -> None:
        """`_done` of a Done the scheduler took as its job's final success (`succeeded`):
        the same counters, attempt record and result, without the general path's questions."""
        del self._flights[msg.aid]
        flight.started, flight.start = True, started + self._wall
        stats, out, err = self._stats[host], msg.stdout, msg.stderr
        stats.ended += 1
        stats.busy_time += msg.duration
        stats.spec_won += attempt.speculative
        stats.done += 1
        actions = self._actions
        actions.attempts.append(
            AttemptEnd(attempt, len(out) + len(err), flight.start, msg.duration, 0, msg.signal)
        )
        result = new_result(
            attempt.job.id, True, 0, msg.signal, host, attempt.number, msg.duration, out, err, None
        )
        actions.results.append(result)

    def stdin(self, aid: int) -> JobInput | None:
        """The input of the attempt's job, for whoever streams it to the host (drive.py)."""
        flight = self._flights.get(aid)
        return None if flight is None else flight.attempt.job.stdin

    def job(self, aid: int, host: str | None = None) -> Job | None:
        """The job of an attempt in flight (on `host`, when given): drive.py places its
        files, --line-buffer prints its lines."""
        flight = self._flights.get(aid)
        if flight is None or (host is not None and flight.attempt.host != host):
            return None
        return flight.attempt.job

    def owns(self, aid: int) -> bool:
        """The attempt was sent by this run and has not ended: its frames are this run's."""
        return aid in self._flights

    def host_held(self, host: str, held: bool) -> None:
        """Polite mode holds the host's jobs (`held`), or no longer does: a held host gets no
        attempt, and those waiting in its queue are taken back, to run elsewhere."""
        for attempt in self._scheduler.host_held(host, held):
            log.info(f"job {attempt.job.id}: taken back from {host}, held", host=host)

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
                    flight.drop()
            elif kill.reason is KillReason.TIMEOUT:
                log.info(f"job {kill.attempt.job.id} timed out on {kill.attempt.host}")
            queued_only = kill.reason is KillReason.DRAINED  # one started runs on
            actions.send(kill.attempt.host, Kill(kill.attempt.aid, KILL_GRACE, queued_only))
        frames, start = actions.frames, now + self._wall
        for attempt in () if self._draining else self._scheduler.next_runs(now):
            self._flights[attempt.aid] = _Flight(attempt, start=start)
            job = attempt.job
            run = Run(attempt.aid, job.id, job.command, {}, job.stdin is not None)
            frames.setdefault(attempt.host, []).append(run)  # actions.send, inline: once a job
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
            why = None if job is NOT_YET else unrunnable(job.command)
            if why is None:
                if job.files is not None:
                    self.files = True
                yield job
                continue
            said = f"anet: job {job.id}: {why}\n".encode()
            self._failed_early.append(
                JobResult(job.id, False, None, None, "", 0, 0.0, b"", said, error=why)
            )

    def _started(
        self, host: str, flight: _Flight, aid: int, slot: int, now: float, tell: bool = True
    ) -> None:
        """The attempt started at `now`; the scheduler hears of it unless not `tell` (a Done's
        attempt, whose start it hears with its end: `attempt_done`)."""
        if flight.started:
            raise protocol_error(host, f"a second Started for attempt {aid}")
        if slot > self._slots.get(host, 0):
            raise protocol_error(host, f"Started in slot {slot} of {self._slots.get(host, 0)}")
        flight.started, flight.start = True, now + self._wall
        self._stats[host].running += 1
        if tell:
            self._scheduler.attempt_started(aid, now)

    def _done(self, host: str, flight: _Flight, msg: Done, now: float) -> None:
        """Started, Output and Exit in one: the job started its `duration` ago (by the
        host's clock), which keeps the round trips the look-ahead measures true."""
        if flight.spoke:
            raise protocol_error(host, f"Done for attempt {msg.aid}, which had already spoken")
        started = now - msg.duration
        out, err = msg.stdout, msg.stderr
        if len(out) + len(err) <= self._quick:  # most jobs: their result holds these bytes
            self._started(host, flight, msg.aid, msg.slot, started, tell=False)
            self._exit(host, flight, msg, now, (out, err), started)
            return
        self._started(host, flight, msg.aid, msg.slot, started)
        # past a cap, the job fails with why (its Kill finds it ended: moot); a cut drops the rest
        self._output(flight, 0, out)
        self._output(flight, 1, err)
        self._exit(host, flight, msg, now)

    def _output(self, flight: _Flight, index: int, data: bytes) -> bool:
        """A piece of an attempt's stdout (`index` 0) or stderr (1): kept in memory while the
        attempt's output is small, else past the caps' checks (`_big_output`). True when it cut
        the attempt (a Kill to send)."""
        if flight.dropped:
            return False
        if flight.spools is None and flight.size + len(data) <= self._quick:
            flight.keep(index, data)
            return False
        return self._big_output(flight, index, data)

    def _big_output(self, flight: _Flight, index: int, data: bytes) -> bool:
        """Output past the quick bound: checked against the caps, then kept in memory up to
        SPOOL_AT, spooled beyond. True when it cut the attempt (a Kill to send)."""
        for cap in self._caps:
            size = flight.stream_size(0) if cap.stdout_only else flight.size
            if size + (len(data) if index == 0 or not cap.stdout_only else 0) > cap.size:
                return self._cut(flight, f"its output passed {cap.why}")
        if flight.spools is None and flight.size + len(data) <= SPOOL_AT:
            flight.keep(index, data)
            return False
        try:
            flight.spool(index, data, self._spool_dir)
        except OSError as exc:  # a full disk: this job fails, the run goes on
            why = exc.strerror or str(exc)
            return self._cut(flight, f"its output could not be spooled to disk ({why})")
        return False

    def _cut(self, flight: _Flight, why: str) -> bool:
        """Kill the attempt for its output; its Exit makes its job fail with `why`."""
        attempt = flight.attempt
        log.warning(f"job {attempt.job.id}: {why}; killing it", host=attempt.host)
        size = flight.size
        flight.drop()
        flight.spooled, flight.cut = size, why  # its size stays for the attempt log
        self._actions.send(attempt.host, Kill(attempt.aid, KILL_GRACE))
        return True

    def _exit(
        self,
        host: str,
        flight: _Flight,
        msg: Exit | Done,
        now: float,
        whole: tuple[bytes, bytes] | None = None,
        started: float | None = None,
    ) -> None:
        """The attempt ended: its verdict, counters and record; its job's result if final.
        `whole` is a Done's output as it came, when small: never copied into the flight;
        `started` is when, for an attempt whose start the scheduler has not heard of yet."""
        del self._flights[msg.aid]
        cut = flight.cut
        if started is not None:  # a whole Done, within every cap: cut is None
            ended = self._scheduler.attempt_done(
                msg.aid, started, now, ok=msg.code == 0, duration=msg.duration
            )
        else:
            ended = self._scheduler.attempt_ended(
                msg.aid, ok=msg.code == 0 and cut is None, now=now, duration=msg.duration,
                retry=cut is None,
            )  # fmt: skip
        size = flight.size if whole is None else len(whole[0]) + len(whole[1])
        if not (ended.excused and not flight.started):  # one taken back unstarted never ran
            self._count(host, flight, ended, msg, size)
        if ended.paused is not None:
            log.warning(str(ended.paused), host=host)
        attempt = ended.attempt
        if attempt is None or ended.verdict is Verdict.STALE:
            return
        kind: Callable[..., JobResult]
        if whole is not None:
            (out, err), kind = whole, new_result
        elif flight.spools is None:  # all in memory
            out, err, kind = bytes(flight.stdout), bytes(flight.stderr), new_result
        else:
            out, err = flight.output(0), flight.output(1)
            kind = SpooledResult if type(out) is Spool or type(err) is Spool else new_result
        result = kind(
            attempt.job.id, ended.ok, msg.code, msg.signal, host, attempt.number, msg.duration,
            out, err, cut or ended.error,  # type: ignore[arg-type]  # bytes, or a Spool
        )  # fmt: skip
        if ended.verdict is not Verdict.FINAL:
            why = ended.error or _status(result)
            if not ended.excused:
                log.info(f"job {result.id} failed on {host} ({why}); it will run again")
            elif flight.started:
                log.info(f"job {result.id}: {why}; it runs again, no retry spent", host=host)
            return
        self._stats[host].done += 1
        self._actions.results.append(result)

    def _count(self, host: str, flight: _Flight, ended: Ended, msg: Exit | Done, size: int) -> None:
        """The host's counters for an ended attempt, and the attempt's record."""
        stats, attempt = self._stats[host], flight.attempt
        if flight.started:
            stats.running -= 1
        stats.ended += 1
        stats.busy_time += msg.duration
        if ended.verdict is Verdict.STALE:
            stats.spec_lost += attempt.speculative
        elif msg.code != 0:
            stats.failed_attempts += not ended.excused  # polite mode's kill is no failure
        elif ended.verdict is Verdict.FINAL:
            stats.spec_won += attempt.speculative
        excused = ended.excused or ended.verdict is Verdict.STALE  # as the counters above
        self._actions.attempts.append(
            AttemptEnd(attempt, size, flight.start, msg.duration, msg.code, msg.signal, excused)
        )


def _not_sent(host: str, msg: Message, aid: int) -> HostError:
    """The host spoke of an attempt that is not its own (invariant 8): it breaks the protocol."""
    return protocol_error(
        host,
        f"{type(msg).__name__} about attempt {aid}, which was not sent to this host"
        " or had already ended there",
    )


def _status(result: JobResult) -> str:
    return f"signal {result.signal}" if result.signal is not None else f"exit {result.exit_code}"
