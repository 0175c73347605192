"""The public async API: `Cluster` runs commands on a set of machines and yields results.

    async with anet.Cluster(["host1", "8/bob@host2:2222"]) as cluster:
        async for result in cluster.run(["echo 1", "echo 2"]):
            print(result.id, result.stdout)

Entering the cluster starts connecting every host in the background (a task group owns each
host's session); jobs go to hosts as they become ready, so a slow or dead host holds nobody
back. Leaving it shuts every dispatcher down, which kills any job still running (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from dispatcher.protocol import STDOUT, Exit, Kill, Message, Output, Run, Started

from .attemptlog import AttemptLog, AttemptObserver
from .backoff import Backoff
from .batch import Job, as_jobs, runnable
from .bootstrap import Payload, payload
from .connect import Connector, SshOptions
from .errors import AnetError, HostError, NoHostError
from .flow import ByteBoundedQueue
from .hosts import HostSpec, parse_spec
from .journal import Journal, JournalError
from .logs import get_logger
from .manifest import Tree
from .record import JobResult
from .scheduler import Ended, KillReason, Scheduler, Verdict
from .session import HostSession, SessionConfig
from .sync import Progress, Syncer, SyncReport
from .transport import LocalTransport, SshTransport

log = get_logger()

T = TypeVar("T")

RESULT_QUEUE = 256
RESULT_BYTES = 32 << 20
"""Finished results waiting for the consumer, in number and in output bytes; beyond either,
hosts' channels stop being read and SSH flow control slows the hosts down."""
SHUTDOWN_TIMEOUT = 5.0
KILL_GRACE = 2.0
"""Seconds between TERM and KILL for a timed-out or superseded attempt's process group."""
FLUSH_INTERVAL = 0.2
"""Seconds between journal commits: the most finished work a kill -9 of the master can lose."""
KEEPALIVE = 15.0
"""Seconds of silence after which a dispatcher gives its master up and kills its jobs."""


@dataclass(slots=True)
class _AttemptOutput:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    start: float = 0.0  # wall clock (for the journal's attempts and the joblog); reset at Started
    started: bool = False  # counted in its host's `running`
    dropped: bool = False  # a superseded copy: its output is moot, its Exit still gets logged


class _Done:
    """Marks the end of a run's results."""


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """How hard to try: retries of failed jobs, a per-job timeout, speculative copies.

    `timeout` is seconds, or a percentage of the median run time of successful jobs ("300%",
    as GNU parallel's --timeout); `speculate` starts copies of stragglers on faster hosts.
    """

    retries: int = 2
    timeout: float | str | None = None
    speculate: bool = True


@dataclass(slots=True)
class HostState:
    """What the cluster knows of one host, for progress displays and summaries."""

    spec: HostSpec
    state: str = "connecting"  # connecting, ready, backing off, failed, closed
    error: str | None = None
    slots: int = 0
    done: int = 0
    failures: int = 0
    ever_ready: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    # Counters for the live view and the end summary: plain increments on events the master
    # handles anyway; displays read them on a timer, never per event.
    running: int = 0  # attempts started on the host and not ended
    failed_attempts: int = 0  # attempts that exited non-zero, were killed or timed out
    spec_won: int = 0  # speculative copies started here that gave their job's result
    spec_lost: int = 0  # speculative copies started here that another attempt beat
    ended: int = 0  # attempts that ended with an Exit
    busy_time: float = 0.0  # their summed run times: mean job time is busy_time / ended
    last_heard: float | None = None  # event-loop clock of the last frame from the host
    retry_at: float | None = None  # event-loop clock of the next connection try, backing off

    @property
    def mean_time(self) -> float | None:
        """Mean run time of the attempts that ended here, None before the first."""
        return self.busy_time / self.ended if self.ended else None


class Cluster:
    """A set of end machines, each with one connection and one dispatcher."""

    def __init__(
        self,
        hosts: Sequence[HostSpec | str] | None = None,
        *,
        ssh: SshOptions | None = None,
        cwd: str | None = None,
        keepalive: float = KEEPALIVE,
        policy: RunPolicy | None = None,
        deps: Tree | Awaitable[Tree] | None = None,
        sync_progress: Progress | None = None,
    ) -> None:
        specs = [parse_spec(h) if isinstance(h, str) else h for h in (hosts or [":"])]
        self.hosts: dict[str, HostState] = {}
        for spec in specs:  # one connection per end machine, as the first listing asks
            self.hosts.setdefault(spec.label, HostState(spec))
        self._connector = Connector(ssh or SshOptions())
        self._local_cwd = cwd if cwd is not None else os.getcwd()
        self._keepalive = keepalive
        self._payload: Payload = payload()
        self._sessions: dict[str, HostSession] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._host_tasks: dict[str, asyncio.Task[None]] = {}
        self._dispatch_scheduled = False
        self._closing = asyncio.Event()
        self._stuck_reported = False
        self._done_sent = False
        self._delivering = 0  # final results waiting for room in the queue
        self._journal: Journal | None = None
        self._journal_required = False
        self._wakeup: asyncio.TimerHandle | None = None
        self._draining = False
        self._policy = policy or RunPolicy()
        self._syncer = Syncer(deps, sync_progress) if deps is not None else None
        self.sync_reports: dict[str, SyncReport] = {}
        """How each host got the deps tree (its latest sync), for `anet sync` and summaries."""
        self._scheduler: Scheduler | None = None
        self._outputs: dict[int, _AttemptOutput] = {}
        self._results: ByteBoundedQueue[JobResult | _Done | BaseException] = ByteBoundedQueue(
            RESULT_QUEUE, RESULT_BYTES
        )
        self._settle_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._attempt_log = AttemptLog()  # the journal's attempts and host events, --joblog

    async def __aenter__(self) -> Cluster:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        for state in self.hosts.values():
            session = self._new_session(state.spec)
            self._sessions[state.spec.label] = session
            task = self._tasks.create_task(self._host_life(state, session))
            self._host_tasks[state.spec.label] = task
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tasks is not None
        try:
            await self._shutdown()
        finally:
            for task in self._host_tasks.values():
                task.cancel()  # only those still running after the shutdown bound
            # The body's own exception propagates as itself (returning None), not wrapped in an
            # ExceptionGroup: host tasks never raise, so there is nothing else to report.
            await self._tasks.__aexit__(None, None, None)
            await self._connector.close()

    async def _shutdown(self) -> None:
        """Every dispatcher kills its jobs and says Bye; a silent one is cut off after a bound.

        A host whose dispatcher has not started (still connecting, or backing off) has nothing
        to stop: it is cut off at once, so a run that ends early does not wait for a handshake.
        """
        self._closing.set()
        for session in self._sessions.values():
            await session.shutdown()
        for label, task in self._host_tasks.items():
            if not self._sessions[label].started:
                task.cancel()
        pending = [task for task in self._host_tasks.values() if not task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_TIMEOUT)
            if late:
                log.warning(f"{len(late)} host(s) did not stop in time; cutting them off")

    # -- host lives -------------------------------------------------------------------------

    def _new_session(self, spec: HostSpec) -> HostSession:
        cwd = self._local_cwd if spec.local else ""
        config = SessionConfig(
            spec.slots, cwd, heartbeat=self._keepalive / 5, dead_after=self._keepalive
        )
        return HostSession(spec, self._payload, self._on_message, config)

    async def _host_life(self, state: HostState, session: HostSession) -> None:
        """Keep one host serving until the cluster closes: a failure is an event, never a crash.

        A dead dispatcher is restarted over the same connection; a lost connection is opened
        again after a jittered, growing delay; an error only the user can fix gives the host up.
        """
        spec = state.spec
        transport = LocalTransport() if spec.local else SshTransport(self._connector, spec)
        try:
            while not self._closing.is_set():
                try:
                    if not transport.connected:
                        state.state = "connecting"
                        await transport.connect()
                    prepare = self._sync_deps if self._syncer is not None else None
                    await session.run(transport, self._on_ready, prepare)
                    error = HostError(spec.label, "the dispatcher exited")
                except HostError as exc:
                    error = exc
                finally:
                    await self._on_host_gone(state)
                if self._closing.is_set():
                    return
                if not await self._after_failure(state, error):
                    return
                delay = state.backoff.next_delay()
                state.retry_at = _now() + delay
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
        finally:
            transport.close()
            state.state = "failed" if state.state == "failed" else "closed"

    async def _sync_deps(self, session: HostSession) -> None:
        """Bring the deps tree to the host before it gets any job (it runs them inside)."""
        assert self._syncer is not None
        self.hosts[session.label].state = "syncing"
        try:
            await self._syncer.tree()
        except AnetError:
            # The scan failed (a missing or unsafe deps path): whoever started it reports that
            # in one line and closes the cluster; this host just waits for the end, silently.
            await self._closing.wait()
            raise HostError(session.label, "deps could not be scanned", permanent=True) from None
        report = await self._syncer.sync(session)
        self.sync_reports[session.label] = report
        how = (
            "already there"
            if not report.files_sent
            else f"{report.files_sent} files, {report.bytes_sent} bytes sent"
        )
        log.info(
            f"{session.label}: deps ready in {report.seconds:.2f}s ({how})",
            host=session.label,
            path=report.path.decode(errors="replace"),
            reused=report.reused,
        )

    async def ready_session(self, label: str) -> HostSession:
        """The host's session once its dispatcher is ready; HostError as soon as it fails once.

        For one-shot commands (find, killall, check, onall): they report a down host at once
        instead of waiting through the reconnection backoff that a batch run would sit out.
        """
        state = self.hosts.get(label) or self.hosts[parse_spec(label).label]  # ":" is "local"
        label = state.spec.label
        if state.state not in ("ready", "failed", "backing off"):
            waiter = asyncio.get_running_loop().create_future()
            self._settle_waiters.setdefault(label, []).append(waiter)
            await waiter  # set by _settled when the host gets ready or fails
        if state.state == "ready":
            return self._sessions[label]
        raise HostError(label, state.error or state.state)

    async def each_host(
        self, ask: Callable[[HostSession], Awaitable[T]], failed: Callable[[str, str], T]
    ) -> list[T]:
        """`ask` every host once it is ready, all at once, in the order the hosts were given; a
        host that fails first becomes `failed(label, reason)`. The one-shot commands' loop."""

        async def one(label: str) -> T:
            try:
                return await ask(await self.ready_session(label))
            except HostError as exc:
                return failed(label, exc.reason)

        return list(await asyncio.gather(*(one(label) for label in self.hosts)))

    def _settled(self, label: str) -> None:
        for waiter in self._settle_waiters.pop(label, []):
            if not waiter.done():
                waiter.set_result(None)

    async def _after_failure(self, state: HostState, error: HostError) -> bool:
        """Record and report a host failure; False when the host is given up for good."""
        try:
            return await self._after_failure_noted(state, error)
        finally:
            self._settled(state.spec.label)

    async def _after_failure_noted(self, state: HostState, error: HostError) -> bool:
        if error.permanent:
            self._host_event(state.spec.label, "failed", error.reason)
            state.state, state.error = "failed", error.reason
            log.error(str(error), host=error.host, reason=error.reason)
            await self._check_stuck()
            return False
        was_ready = state.state == "ready"
        self._host_event(state.spec.label, "lost" if was_ready else "unreachable", error.reason)
        state.failures += 1
        if was_ready or error.reason != state.error:  # once per change, not once per try
            log.warning(f"{error}; retrying", host=error.host, reason=error.reason)
        state.state, state.error = "backing off", error.reason
        await self._check_stuck()
        return True

    def _on_ready(self, session: HostSession) -> None:
        state = self.hosts[session.label]
        if state.failures and state.ever_ready:
            log.warning(f"{session.label}: back, {session.slots} slots", host=session.label)
        self._host_event(session.label, "back" if state.ever_ready else "ready", str(session.slots))
        state.retry_at = None
        state.state, state.slots, state.ever_ready = "ready", session.slots, True
        state.backoff.reset()
        self._settled(session.label)
        assert session.hello is not None
        log.info(
            f"{session.label}: ready, {session.slots} slots",
            host=session.label,
            hostname=session.hello.hostname,
            python=session.hello.python,
            cores=session.hello.cores,
        )
        if self._scheduler is not None:
            self._scheduler.host_ready(session.label, session.slots)
            self._dispatch()

    async def _on_host_gone(self, state: HostState) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        state.running = 0
        for attempt in scheduler.host_lost(state.spec.label, now=_now()):
            output = self._outputs.pop(attempt.aid, None)
            if output is not None:  # logged as lost: no exit code, no signal
                size = len(output.stdout) + len(output.stderr)
                runtime = time.time() - output.start
                self._attempt_log.attempt(attempt, size, output.start, runtime, None, None)
            log.info(f"job {attempt.job.id} goes back to the queue", host=state.spec.label)
        for given_up in scheduler.take_abandoned():
            log.warning(f"job {given_up.job.id}: given up: {given_up.error}")
            result = JobResult(
                given_up.job.id, False, None, None, given_up.host, given_up.attempts, 0.0, b"", b"",
                error=given_up.error,
            )  # fmt: skip
            await self._deliver(result)
        self._dispatch()

    async def _check_stuck(self) -> None:
        """Fail the run when no host can ever take its work.

        That is when every host was given up, or when none has ever worked and each has failed
        at least once (a typo in every host name must not hang). Hosts that worked before and
        are now unreachable are waited for: the user sees the warnings and may press Ctrl-C.
        """
        scheduler = self._scheduler
        if scheduler is None or scheduler.finished or self._stuck_reported:
            return
        hosts = list(self.hosts.values())
        if any(h.state == "ready" for h in hosts):
            return
        given_up = all(h.state == "failed" for h in hosts)
        never_worked = not any(h.ever_ready for h in hosts) and all(
            h.failures or h.state == "failed" for h in hosts
        )
        if not (given_up or never_worked):
            return
        self._stuck_reported = True
        reasons = "; ".join(f"{h.spec.label}: {h.error}" for h in hosts[:3] if h.error)
        await self._results.put(
            NoHostError(f"no usable host ({reasons})" if reasons else "no usable host")
        )

    # -- frames -----------------------------------------------------------------------------

    async def _on_message(self, session: HostSession, msg: Message) -> None:
        self.hosts[session.label].last_heard = _now()
        if isinstance(msg, Output):
            output = self._outputs.get(msg.aid)
            if output is not None and not output.dropped:
                (output.stdout if msg.stream == STDOUT else output.stderr).extend(msg.data)
        elif isinstance(msg, Started):
            output = self._outputs.get(msg.aid)
            if output is not None and not output.started:
                output.started, output.start = True, time.time()
                self.hosts[session.label].running += 1
            if self._scheduler is not None:
                self._scheduler.attempt_started(msg.aid, _now())
                self._dispatch()  # a start may bring a timeout or a straggler's deadline closer
        elif isinstance(msg, Exit):
            await self._on_exit(session, msg)

    async def _on_exit(self, session: HostSession, msg: Exit) -> None:
        scheduler = self._scheduler
        output = self._outputs.pop(msg.aid, None)
        if scheduler is None:
            return
        ended = scheduler.attempt_ended(
            msg.aid, ok=msg.code == 0, now=_now(), duration=msg.duration
        )
        self._dispatch()
        if output is not None and ended.attempt is not None:
            self._count_attempt(self.hosts[session.label], ended, output, msg)
        if ended.paused is not None:
            log.warning(str(ended.paused), host=session.label)
        attempt = ended.attempt
        if attempt is None or output is None or ended.verdict is Verdict.STALE:
            self._check_done()  # a superseded copy may be the last attempt to end
            return
        result = JobResult(
            id=attempt.job.id,
            ok=ended.ok,
            exit_code=msg.code,
            signal=msg.signal,
            host=session.label,
            attempts=attempt.number,
            duration=msg.duration,
            stdout=bytes(output.stdout),
            stderr=bytes(output.stderr),
            error=ended.error,
        )
        if not ended.final:
            why = ended.error or _status(result)
            log.info(f"job {result.id} failed on {session.label} ({why}); it will run again")
            return
        self.hosts[session.label].done += 1
        await self._deliver(result)

    def observe_attempts(self, observer: AttemptObserver) -> None:
        """Call `observer` with each attempt as it ends or is lost (e.g. to write a joblog)."""
        self._attempt_log.observers.append(observer)

    def _count_attempt(
        self, state: HostState, ended: Ended, output: _AttemptOutput, msg: Exit
    ) -> None:
        """Update the host's counters for an ended attempt, and log the attempt."""
        attempt = ended.attempt
        assert attempt is not None
        if output.started:
            state.running -= 1
        state.ended += 1
        state.busy_time += msg.duration
        if ended.verdict is Verdict.STALE:
            state.spec_lost += attempt.speculative
        elif msg.code != 0:
            state.failed_attempts += 1
        elif ended.final:
            state.spec_won += attempt.speculative
        size = len(output.stdout) + len(output.stderr)
        self._attempt_log.attempt(attempt, size, output.start, msg.duration, msg.code, msg.signal)

    def _host_event(self, label: str, event: str, detail: str | None) -> None:
        """A host joined, was lost, came back or was given up: for `anet report`'s timeline."""
        self._attempt_log.host_event(label, event, detail)

    async def _deliver(self, result: JobResult) -> None:
        """A job's one final result: journal it, then queue it for the consumer (the journal is
        committed before the consumer gets it: see `_commit_before_yield`)."""
        if self._journal is not None:
            try:
                self._journal.record(result)
            except JournalError as exc:
                self._journal_failed(exc)
        self._delivering += 1  # the run may not end while a result waits for room
        try:
            await self._results.put(result, len(result.stdout) + len(result.stderr))
        finally:
            self._delivering -= 1
        self._check_done()

    def _commit_before_yield(self) -> None:
        """Commit what the journal holds before a result leaves the cluster: a result the
        consumer has must be one that --resume will not run again (exactly once across a stop).
        One commit covers every result recorded so far, so bursts cost one commit."""
        journal = self._journal
        if journal is None or not (journal.unflushed or journal.broken):
            return
        try:
            journal.flush()
        except JournalError as exc:
            self._journal_failed(exc)
            if self._journal is not None:  # required: the run stops, its results stay owed
                raise

    def _journal_failed(self, exc: JournalError) -> None:
        """A journal that cannot be written: the run goes on without it, one warning, unless the
        caller required it (then the next result raises, and the run stops)."""
        if self._journal is None or self._journal_required:
            return
        log.warning(f"{exc}; running on without it (a --resume would run the later jobs again)")
        self._journal = self._attempt_log.journal = None

    def _dispatch(self) -> None:
        """Ask for a scheduling round at the end of this loop iteration.

        Coalescing matters for throughput: a read from a host often carries many Exit frames,
        and one round then sends their replacements to each host in one SSH packet instead of
        one packet (and one encryption, one syscall) per job.
        """
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch_now)

    def _dispatch_now(self) -> None:
        """Carry out the scheduler's decisions: send Run frames to the chosen hosts."""
        self._dispatch_scheduled = False
        scheduler = self._scheduler
        if scheduler is None:
            return
        now = _now()
        frames: dict[str, list[Message]] = {}
        for kill in scheduler.due_kills(now):
            if kill.reason is KillReason.SUPERSEDED:
                output = self._outputs.get(kill.attempt.aid)
                if output is not None:  # lost the race: its output is moot
                    output.dropped = True
                    output.stdout.clear()
                    output.stderr.clear()
            else:
                log.info(f"job {kill.attempt.job.id} timed out on {kill.attempt.host}")
            frames.setdefault(kill.attempt.host, []).append(Kill(kill.attempt.aid, KILL_GRACE))
        for attempt in () if self._draining else scheduler.next_runs(now):
            self._outputs[attempt.aid] = _AttemptOutput(start=time.time())
            run = Run(attempt.aid, attempt.job.id, attempt.job.command)
            frames.setdefault(attempt.host, []).append(run)
            if attempt.speculative:
                log.info(f"job {attempt.job.id}: a copy starts on {attempt.host}")
        for host, messages in frames.items():
            self._sessions[host].send(*messages)
        self._wake_at(scheduler.next_wakeup(now))
        self._check_done()

    def _wake_at(self, when: float | None) -> None:
        """One timer for the next decision no event will trigger (a timeout, a straggler)."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if when is not None:
            self._wakeup = asyncio.get_running_loop().call_at(when, self._dispatch)

    async def _flush_journal(self) -> None:
        """Commit on a timer, so an idle spell never leaves attempts or delivery marks unwritten."""
        while self._journal is not None:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                if self._journal is not None and not self._journal.broken:
                    self._journal.flush()
            except JournalError as exc:
                self._journal_failed(exc)

    def drain(self) -> None:
        """Start no more attempts; the run ends once those running have ended (--halt soon)."""
        self._draining = True
        self._dispatch()

    def _check_done(self) -> None:
        """End the run once the scheduler says so; only a scheduling round may discover that
        the batch is exhausted, so both the round and each result check."""
        scheduler = self._scheduler
        if scheduler is None or self._done_sent or self._delivering:
            return
        if scheduler.finished or (self._draining and scheduler.in_flight == 0):
            self._done_sent = True
            self._results.put_last(_Done())

    # -- the public verb --------------------------------------------------------------------

    async def run(
        self,
        commands: Iterable[str | bytes] | Iterator[Job],
        *,
        journal: Journal | None = None,
        journal_required: bool = False,
    ) -> AsyncIterator[JobResult]:
        """Run every command once; yield each job's final result as it finishes.

        `commands` is an iterable of shell commands (job id = position) or of `Job`s (e.g. from
        `anet.batch.read_batch`), consumed lazily. Raises NoHostError when no host can run them.
        With a `journal`, every final result is committed there before it is yielded, so a kill
        -9 loses no result the consumer has not seen; the consumer marks what it delivered
        (`Journal.mark_delivered`). If the journal cannot be written, the run goes on without
        it (one warning), or with `journal_required` raises its JournalError.
        """
        if self._tasks is None:
            raise RuntimeError("use `async with Cluster(...) as cluster` before run()")
        if self._scheduler is not None:
            raise RuntimeError("one run at a time per cluster")
        iterator = iter(commands)
        first = next(iterator, None)
        if first is None:
            return  # an empty batch is done before any host is needed
        chained = itertools.chain([first], iterator)
        jobs = chained if isinstance(first, Job) else as_jobs(chained)  # type: ignore[arg-type]
        policy = self._policy
        scheduler = self._scheduler = Scheduler(
            map(runnable, jobs),
            retries=policy.retries,
            timeout=policy.timeout,
            speculate=policy.speculate,
        )
        self._done_sent = False
        self._draining = False
        self._journal = self._attempt_log.journal = journal
        self._journal_required = journal_required
        flusher = self._tasks.create_task(self._flush_journal()) if journal else None
        try:
            for label, state in self.hosts.items():
                if state.state == "ready":
                    scheduler.host_ready(label, state.slots)
                    self._host_event(label, "ready", str(state.slots))
            self._dispatch()
            if scheduler.finished:
                return
            await self._check_stuck()
            while True:
                item = await self._results.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise item
                self._commit_before_yield()
                yield item
        finally:
            self._wake_at(None)
            if flusher is not None:
                flusher.cancel()  # the journal's owner makes the last commit when closing it
            self._journal = self._attempt_log.journal = None
            self._scheduler = None


def _now() -> float:
    """The scheduler's clock: the event loop's, monotonic."""
    return asyncio.get_running_loop().time()


def _status(result: JobResult) -> str:
    return f"signal {result.signal}" if result.signal is not None else f"exit {result.exit_code}"
