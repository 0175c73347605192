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
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType

import structlog

from dispatcher.protocol import STDOUT, Exit, Message, Output, Run

from .batch import Job, as_jobs
from .bootstrap import Payload, payload
from .connect import Connector, SshOptions
from .errors import HostError, NoHostError
from .hosts import HostSpec, parse_spec
from .record import JobResult
from .scheduler import Scheduler
from .session import HostSession, SessionConfig, open_local, open_ssh

log = structlog.get_logger("anet")

RESULT_QUEUE = 64
"""Finished results waiting for the consumer; beyond it, hosts' channels stop being read."""
SHUTDOWN_TIMEOUT = 5.0
KEEPALIVE = 15.0
"""Seconds of silence after which a dispatcher gives its master up and kills its jobs."""


@dataclass(slots=True)
class _AttemptOutput:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


class _Done:
    """Marks the end of a run's results."""


@dataclass(slots=True)
class HostState:
    """What the cluster knows of one host, for progress displays and summaries."""

    spec: HostSpec
    state: str = "connecting"
    error: str | None = None
    slots: int = 0
    done: int = 0


class Cluster:
    """A set of end machines, each with one connection and one dispatcher."""

    def __init__(
        self,
        hosts: Sequence[HostSpec | str] | None = None,
        *,
        ssh: SshOptions | None = None,
        cwd: str | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        specs = [parse_spec(h) if isinstance(h, str) else h for h in (hosts or [":"])]
        self.hosts = {spec.label: HostState(spec) for spec in specs}
        self._connector = Connector(ssh or SshOptions())
        self._local_cwd = cwd if cwd is not None else os.getcwd()
        self._keepalive = keepalive
        self._payload: Payload = payload()
        self._sessions: dict[str, HostSession] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._host_tasks: list[asyncio.Task[None]] = []
        self._dispatch_scheduled = False
        self._scheduler: Scheduler | None = None
        self._outputs: dict[int, _AttemptOutput] = {}
        self._results: asyncio.Queue[JobResult | _Done | BaseException] = asyncio.Queue(
            RESULT_QUEUE
        )

    async def __aenter__(self) -> Cluster:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        for state in self.hosts.values():
            session = self._new_session(state.spec)
            self._sessions[state.spec.label] = session
            self._host_tasks.append(self._tasks.create_task(self._host_life(state, session)))
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
            for task in self._host_tasks:
                task.cancel()  # only those still running after the shutdown bound
            # The body's own exception propagates as itself (returning None), not wrapped in an
            # ExceptionGroup: host tasks never raise, so there is nothing else to report.
            await self._tasks.__aexit__(None, None, None)
            await self._connector.close()

    async def _shutdown(self) -> None:
        """Every dispatcher kills its jobs and says Bye; a silent one is cut off after a bound."""
        for session in self._sessions.values():
            await session.shutdown()
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                while self._sessions:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning("some dispatchers did not stop in time", hosts=sorted(self._sessions))
        for state in self.hosts.values():
            if state.state == "connecting":
                state.state = "cancelled"
        await self._connector.close()

    # -- host lives -------------------------------------------------------------------------

    def _new_session(self, spec: HostSpec) -> HostSession:
        opener = open_local if spec.local else partial(open_ssh, self._connector, spec)
        cwd = self._local_cwd if spec.local else ""
        config = SessionConfig(
            spec.slots, cwd, heartbeat=self._keepalive / 5, dead_after=self._keepalive
        )
        return HostSession(spec, opener, self._payload, self._on_message, config)

    async def _host_life(self, state: HostState, session: HostSession) -> None:
        """Owns one host's session; a host failure is logged and becomes an event, never a crash."""
        spec = state.spec
        try:
            await session.run(self._on_ready)
            state.state = "closed"
        except HostError as exc:
            state.state, state.error = "failed", exc.reason
            log.error(str(exc), host=exc.host, reason=exc.reason)
        finally:
            del self._sessions[spec.label]
            await self._on_host_gone(state)

    def _on_ready(self, session: HostSession) -> None:
        state = self.hosts[session.label]
        state.state, state.slots = "ready", session.slots
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
        for attempt in scheduler.host_lost(state.spec.label):
            self._outputs.pop(attempt.aid, None)
            log.info(f"job {attempt.job.id} goes back to the queue", host=state.spec.label)
        self._dispatch()
        await self._check_stuck()

    async def _check_stuck(self) -> None:
        """No host left alive or coming, and work remains: the run cannot finish."""
        scheduler = self._scheduler
        if scheduler is None or scheduler.finished or self._sessions:
            return
        failed = [s for s in self.hosts.values() if s.state == "failed"]
        reasons = "; ".join(f"{s.spec.label}: {s.error}" for s in failed[:3])
        await self._results.put(
            NoHostError(f"no usable host left ({reasons})" if reasons else "no usable host left")
        )

    # -- frames -----------------------------------------------------------------------------

    async def _on_message(self, session: HostSession, msg: Message) -> None:
        if isinstance(msg, Output):
            output = self._outputs.get(msg.aid)
            if output is not None:
                (output.stdout if msg.stream == STDOUT else output.stderr).extend(msg.data)
        elif isinstance(msg, Exit):
            await self._on_exit(session, msg)

    async def _on_exit(self, session: HostSession, msg: Exit) -> None:
        scheduler = self._scheduler
        attempt = scheduler.attempt_ended(msg.aid) if scheduler else None
        output = self._outputs.pop(msg.aid, None)
        if attempt is None or output is None or scheduler is None:
            return  # an attempt the run has already given up on
        result = JobResult(
            id=attempt.job.id,
            ok=msg.code == 0,
            exit_code=msg.code,
            signal=msg.signal,
            host=session.label,
            attempts=attempt.number,
            duration=msg.duration,
            stdout=bytes(output.stdout),
            stderr=bytes(output.stderr),
        )
        scheduler.job_done(attempt.job.id)
        self.hosts[session.label].done += 1
        self._dispatch()
        await self._results.put(result)
        if scheduler.finished:
            await self._results.put(_Done())

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
        frames: dict[str, list[Message]] = {}
        for attempt in scheduler.next_runs():
            self._outputs[attempt.aid] = _AttemptOutput()
            run = Run(attempt.aid, attempt.job.id, attempt.job.command)
            frames.setdefault(attempt.host, []).append(run)
        for host, messages in frames.items():
            self._sessions[host].send(*messages)

    # -- the public verb --------------------------------------------------------------------

    async def run(
        self, commands: Iterable[str | bytes] | Iterator[Job]
    ) -> AsyncIterator[JobResult]:
        """Run every command once; yield each job's final result as it finishes.

        `commands` is an iterable of shell commands (job id = position) or of `Job`s (e.g. from
        `anet.batch.read_batch`), consumed lazily. Raises NoHostError when no host can run them.
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
        scheduler = self._scheduler = Scheduler(jobs)
        try:
            for label, session in self._sessions.items():
                if session.hello is not None and not session.closing:
                    scheduler.host_ready(label, session.slots)
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
                yield item
        finally:
            self._scheduler = None
