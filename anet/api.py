"""The public async API: `Cluster` runs commands on a set of machines and yields results.

    async with anet.Cluster(["host1", "8/bob@host2:2222"]) as cluster:
        async for result in cluster.run(["echo 1", "echo 2"]):
            print(result.id, result.stdout)

Entering the cluster starts every host's life (hostlife.py) in a task group the cluster owns;
jobs go to hosts as they become ready, so a slow or dead host holds nobody back. A run is an
engine (engine.py: the decisions, no I/O) driven by a `Drive` (drive.py: frames out, results
in); the cluster routes each host's frames and events to them. Leaving it shuts every
dispatcher down, which kills any job still running (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from dispatcher.jobfiles import Back
from dispatcher.pins import Within
from dispatcher.polite import Evicted, Held, Polite
from dispatcher.protocol import STDOUT, Done, Dones, Exit, InputAck, Message, Output, Started

from .core.batch import Job, as_jobs
from .core.engine import RunPolicy
from .core.halt import Halt
from .core.readahead import NOT_YET
from .core.record import JobResult
from .core.scheduler import SOURCE_POLL
from .core.shares import deal
from .drive import Drive
from .errors import HostError, UsageError, protocol_error
from .logs import get_logger
from .remote.bootstrap import Payload, payload
from .remote.connect import Connector, SshOptions
from .remote.hostlife import HostPhase, HostState, host_life, stuck
from .remote.hosts import HostSpec, parse_spec
from .remote.session import HostSession, SessionConfig
from .remote.transport import LocalTransport, SshTransport, Transport
from .runs import RunOptions, RunPlan
from .streams.attemptlog import AttemptLog, AttemptObserver
from .streams.journal import Journal

if TYPE_CHECKING:  # the deps sync is imported by a run that has deps (`_syncer`, `_own_tree`)
    from .deps.manifest import Tree
    from .deps.runtree import RunTree
    from .deps.sync import Progress, Syncer, SyncReport

__all__ = ["KEEPALIVE", "Cluster", "HostState", "Polite", "RunOptions", "RunPlan", "RunPolicy"]

log = get_logger()

T = TypeVar("T")


class OutputObserver(Protocol):
    """Who is given the jobs' stdout as it comes (`Cluster.observe_output`)."""

    async def output(self, aid: int, job: int, data: bytes) -> None: ...

    async def ended(self, aid: int, job: int) -> None: ...


SHUTDOWN_TIMEOUT = 5.0
KEEPALIVE = 15.0
"""Seconds of silence after which a dispatcher gives its master up and kills its jobs."""
_JOB_FRAMES = (Dones, Done, Started, Output, Exit, Evicted, InputAck, Back)


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
        polite: Polite | None = None,
    ) -> None:
        specs = [parse_spec(h) if isinstance(h, str) else h for h in (hosts or [":"])]
        self.hosts: dict[str, HostState] = {}
        for spec in specs:  # one connection per end machine, as the first listing asks
            self.hosts.setdefault(spec.label, HostState(spec))
        self._connector = Connector(ssh or SshOptions())
        self._local_cwd = cwd if cwd is not None else os.getcwd()
        self._keepalive = keepalive
        self._payload: Payload = payload()
        self._policy = policy or RunPolicy()
        self._polite = polite or Polite()
        self._syncer = _syncer(deps, sync_progress) if deps is not None else None
        self.sync_reports: dict[str, SyncReport] = {}
        """How each host got the deps tree (its latest sync), for `anet sync` and summaries."""
        self._sessions: dict[str, HostSession] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self._host_tasks: dict[str, asyncio.Task[None]] = {}
        self._transports: dict[str, Transport] = {}
        self._closing = asyncio.Event()
        self._runs: list[Drive] = []  # the runs under way, oldest first; they share the slots
        self._drives: list[Drive] = []  # runs that ended early, their killed attempts ending
        self._settle_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._observers: list[AttemptObserver] = []  # every run's attempts (e.g. --joblog)
        self._lines: OutputObserver | None = None  # jobs' stdout as it comes (--line-buffer)
        self._draining: dict[str, asyncio.Event] = {}  # hosts let go once their jobs ended
        self._trees: dict[Drive, RunTree] = {}  # runs with deps of their own (a pool's)
        self._within: dict[str, bytes] = {}  # the tree each dispatcher's next Runs run in
        self._sync_turns: dict[str, asyncio.Lock] = {}  # runs' syncs, one at a time per host

    async def __aenter__(self) -> Cluster:
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    def connect(self) -> None:
        """Start every host's life (connect, boot, sync) now, if not started yet.

        A run and the one-shot commands call it when they first need a host, so a run with
        nothing left to do connects to no host at all.
        """
        if self._tasks is None:
            raise RuntimeError("use `async with Cluster(...) as cluster` first")
        if self._sessions:
            return
        for state in self.hosts.values():
            self._start_host(state)

    def _start_host(self, state: HostState) -> None:
        assert self._tasks is not None
        session = self._new_session(state.spec)
        self._sessions[state.spec.label] = session
        transport = (
            LocalTransport() if state.spec.local else SshTransport(self._connector, state.spec)
        )
        self._transports[state.spec.label] = transport
        prepare = self._sync_deps if self._syncer is not None else None
        life = host_life(state, session, transport, self, self._closing, prepare)
        self._host_tasks[state.spec.label] = self._tasks.create_task(life)

    # -- changing the hosts while open (a pool's `anet pool add` / `drain`) ----------------------

    def add_host(self, spec: HostSpec | str) -> str:
        """Take one more host; it gets jobs once ready (the runs under way get their share of
        its slots). Its label; UsageError when the cluster has that host already."""
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        if spec.label in self.hosts:
            raise UsageError(f"{spec.label} is in the pool already")
        state = self.hosts[spec.label] = HostState(spec)
        if self.connected:
            self._start_host(state)
        return spec.label

    async def drain_host(self, label: str) -> None:
        """Give the host no new attempt (those queued there are taken back, to run elsewhere),
        wait for those running there to end, then stop its dispatcher and let it go: no job is
        lost. UsageError for a host the cluster does not have."""
        state = self.hosts.get(label)
        if state is None or label in self._draining:
            why = "is not in the pool" if state is None else "is draining already"
            raise UsageError(f"{label} {why}")
        drained = self._draining[label] = asyncio.Event()
        state.hold("draining", asyncio.get_running_loop().time())
        for drive in self._runs:
            drive.host_held(label, True)
        try:
            self._check_drained(label)
            await drained.wait()  # its attempts ended, or the host was lost
            session, task = self._sessions.get(label), self._host_tasks.get(label)
            if session is not None:
                await session.shutdown()
            if task is not None:
                task.cancel()  # its life would connect again: it ends here instead
                await asyncio.wait([task])  # its dispatcher stopped, its connection closed
        finally:
            del self._draining[label]
        self._sessions.pop(label, None)
        self._host_tasks.pop(label, None)
        self._transports.pop(label, None)
        del self.hosts[label]
        self._deal()

    def _check_drained(self, label: str) -> None:
        drained = self._draining.get(label)
        if drained is not None and self.hosts[label].running == 0:
            drained.set()

    @property
    def connected(self) -> bool:
        """The hosts' lives have started (see `connect`)."""
        return bool(self._sessions)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._shutdown()
        finally:
            for task in self._host_tasks.values():
                task.cancel()  # only those still running after the shutdown bound
            # The body's own exception propagates as itself (returning None), not wrapped in an
            # ExceptionGroup: host tasks never raise, so there is nothing else to report.
            await self._stack.aclose()
            await self._connector.close()

    async def _shutdown(self) -> None:
        """Every dispatcher kills its jobs and says Bye; a silent one is cut off after a bound.

        A host whose dispatcher has not started (still connecting, or backing off) has nothing
        to stop: it is cut off at once, so a run that ends early does not wait for a handshake.
        Nor has a dispatcher that runs nothing of ours (`_runs_nothing`): its connection is
        cut now, with nothing said (no Shutdown, EOF, channel close or disconnect: four packets
        a host), and it ends on its own at the EOF. A one-job run on 4 hosts waited for 3
        dispatchers to boot only to stop them, and for the 4th to say Bye.
        """
        self._closing.set()
        for label, session in self._sessions.items():
            cut = self._runs_nothing(session) and not session.spec.local  # a local EOF is quick
            await session.shutdown(tell=not cut)  # a cut one is told by its connection's end
            if cut:
                self._transports[label].close()
        for label, task in self._host_tasks.items():
            if not self._sessions[label].started:
                task.cancel()
        pending = [task for task in self._host_tasks.values() if not task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_TIMEOUT)
            if late:
                log.warning(f"{len(late)} host(s) did not stop in time; cutting them off")

    def _runs_nothing(self, session: HostSession) -> bool:
        """No job or command of ours can be running there: it was never given one, or every
        run has ended (a run's attempts have all ended when it is no longer under way, and one
        cut short stays in `_drives` until its killed attempts have). A request's command
        (`onall`) may outlive its caller: a host that was asked one is always stopped in order,
        its Bye waited for (invariant 6)."""
        return not session.asked and not (session.worked and (self._runs or self._drives))

    def _new_session(self, spec: HostSpec) -> HostSession:
        cwd = self._local_cwd if spec.local else ""
        config = SessionConfig(spec.slots, cwd, self._keepalive / 5, self._keepalive, self._polite)
        return HostSession(spec, self._payload, self._on_message, config)

    # -- what the hosts' lives report (hostlife.HostEvents) ---------------------------------------

    def host_ready(self, session: HostSession) -> None:
        loop_time = asyncio.get_running_loop().time()
        self.hosts[session.label].hold("", loop_time)  # a new dispatcher holds nothing yet
        self._within.pop(session.label, None)
        for tree in self._trees.values():  # each run's own deps, held there for it
            tree.bring(session)
        self._settled(session.label)
        self._deal([session.label])

    async def host_gone(self, label: str) -> None:
        if label not in self._draining:  # a hold ends with its dispatcher; a drain's stays
            self.hosts[label].hold("", asyncio.get_running_loop().time())
        self._within.pop(label, None)
        for tree in self._trees.values():
            tree.lost(label)
        for drive in [*self._drives, *self._runs]:
            await drive.host_lost(label)
        self._drives = [d for d in self._drives if not d.engine.finished]
        if label in self._draining:  # its attempts are requeued elsewhere: nothing is lost
            self._draining[label].set()

    def _deal(self, labels: Iterable[str] | None = None) -> None:
        """Give every run under way its share of the ready hosts' slots (shares.py): of the
        hosts in `labels`, or of all of them when a run came or went and the split changed."""
        ready = {
            label: self._sessions[label].slots
            for label, state in self.hosts.items()
            if state.state == HostPhase.READY
        }
        weights = {drive: drive.priority for drive in self._runs}
        shares = deal(ready, self._runs, weights, self._usable if self._trees else None)
        for label in ready if labels is None else labels:
            if label in ready:
                for drive in self._runs:
                    drive.host_ready(label, ready[label], shares[drive][label])

    def _usable(self, drive: Drive, label: str) -> bool:
        """The run may have jobs on the host: it brings no deps, or they are held there."""
        tree = self._trees.get(drive)
        return tree is None or label in tree.ready

    async def host_failed(self, label: str) -> None:
        self._settled(label)
        await self._check_stuck()

    def host_event(self, label: str, event: str, detail: str | None) -> None:
        """A host joined, was lost, came back or was given up: for `anet report`'s timeline."""
        for drive in self._runs:
            drive.attempt_log.host_event(label, event, detail)

    async def _check_stuck(self) -> None:
        if self._runs and (reason := stuck(self.hosts.values())) is not None:
            for drive in self._runs:
                await drive.no_host(reason)

    async def _sync_deps(self, session: HostSession) -> None:
        assert self._syncer is not None
        self.sync_reports[session.label] = await self._syncer.prepare(session, self._closing)

    # -- one-shot commands ----------------------------------------------------------------------

    async def ready_session(self, label: str) -> HostSession:
        """The host's session once its dispatcher is ready; HostError as soon as it fails once.

        For one-shot commands (find, killall, check, onall): they report a down host at once
        instead of waiting through the reconnection backoff that a batch run would sit out.
        """
        state = self.hosts.get(label) or self.hosts[parse_spec(label).label]  # ":" is "local"
        label = state.spec.label
        self.connect()
        settled = (HostPhase.READY, HostPhase.FAILED, HostPhase.BACKING_OFF)
        if state.state not in settled:
            waiter = asyncio.get_running_loop().create_future()
            self._settle_waiters.setdefault(label, []).append(waiter)
            await waiter  # set by _settled when the host gets ready or fails
        if state.state == HostPhase.READY:
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

    # -- frames ---------------------------------------------------------------------------------

    async def _on_message(self, session: HostSession, msg: Message) -> None:
        """Every frame a host's pump reads that no request claimed. A job frame goes to the run
        that sent its attempt (the current one, or an earlier one whose killed attempts are
        still ending); one about an attempt no run sent that host is its protocol error."""
        self.hosts[session.label].last_heard = asyncio.get_running_loop().time()
        if not isinstance(msg, _JOB_FRAMES):
            if isinstance(msg, Held):
                self._held(session.label, msg.reason)
            return
        runs = self._runs
        if len(runs) == 1 and not self._drives:  # the common case, one lookup the less
            drive = runs[0]
        elif type(msg) is Dones:  # records of attempts of several runs, maybe: one by one
            for done in msg.dones():
                await self._on_message(session, done)
            return
        else:  # the run that sent the attempt: one under way, or an earlier one's killed copy
            drive = next((d for d in (*runs, *self._drives) if d.engine.owns(msg.aid)), None)
            if drive is None and runs:
                drive = runs[0]  # whose engine says what is wrong with the frame
        if drive is None:
            raise protocol_error(session.label, f"{type(msg).__name__} with no run under way")
        if self._lines is not None and type(msg) in (Output, Exit):
            await self._line_out(drive, session.label, msg)  # type: ignore[arg-type]
        results = drive.frame(session.label, msg)
        if self._draining and type(msg) is Exit:
            self._check_drained(session.label)
        if results:
            await drive.deliver(results)
        if drive in self._drives and drive.engine.finished:
            self._drives.remove(drive)

    async def _line_out(self, drive: Drive, label: str, msg: Output | Exit) -> None:
        """An attempt's stdout to the output observer as it comes, its end before its Exit
        is taken (so its last line goes out before its result); a frame about an attempt not
        on that host is left to the engine to refuse."""
        job = drive.engine.job(msg.aid, label)
        if job is None or self._lines is None:
            return
        if type(msg) is Exit:
            await self._lines.ended(msg.aid, job.id)
        elif msg.stream == STDOUT:  # type: ignore[union-attr]
            await self._lines.output(msg.aid, job.id, msg.data)  # type: ignore[union-attr]

    def _held(self, label: str, reason: str) -> None:
        """Polite mode holds the host (a loaded host), or no longer does: the runs send it
        nothing and take its queue back; shown in the live view with the time it cost, said
        once per change (a run that waits says why), and in the journal for `anet report`."""
        state = self.hosts[label]
        if bool(reason) == bool(state.held) or label in self._draining:
            return
        state.hold(reason, asyncio.get_running_loop().time())
        for drive in self._runs:
            drive.host_held(label, bool(reason))
        if reason:
            log.warning(f"{label}: {reason}: its jobs wait", host=label)
            self.host_event(label, "held", reason)
        else:
            log.info(f"{label}: jobs start again", host=label)
            self.host_event(label, "free", None)

    def host_key(self, label: str) -> str | None:
        """What became of the host's SSH host key (known, accepted, unknown, changed), or None
        before its first connection: `hosts check` shows it."""
        return self._connector.host_key(label)

    def _send(self, label: str, frames: list[Message], within: bytes = b"") -> None:
        """A run's frames to a host, its Runs in its deps tree (`within`, b"": none of its
        own): a Within frame first when the host's last Runs were another tree's."""
        session = self._sessions[label]
        session.worked = True
        if self._within.get(label, b"") != within:
            self._within[label] = within
            session.send(Within(within), *frames)
        else:
            session.send(*frames)

    async def _send_drained(self, label: str, msg: Message) -> None:
        session = self._sessions[label]
        session.worked = True
        await session.send_drained(msg)

    def observe_attempts(self, observer: AttemptObserver) -> None:
        """Call `observer` with each attempt as it ends or is lost (e.g. to write a joblog)."""
        self._observers.append(observer)

    def observe_output(self, observer: OutputObserver) -> None:
        """Give `observer` every attempt's stdout as it arrives (`output(aid, job, data)`,
        awaited: a slow observer slows that host down) and each attempt's end (`ended(aid,
        job)`, before its result): GNU parallel's --line-buffer. A retry's and a copy's
        output come too: copies are best turned off (RunPolicy(speculate=False))."""
        self._lines = observer

    def drain(self) -> None:
        """Start no more attempts; the runs under way end once those running have ended (like
        a `HaltPolicy` of `soon`, at the caller's word)."""
        for drive in self._runs:
            drive.drain()

    # -- the public verb ------------------------------------------------------------------------

    async def run(
        self,
        commands: Iterable[str | bytes] | Iterable[Job] | RunPlan,
        options: RunOptions | None = None,
        *,
        journal: Journal | None = None,
        journal_required: bool = False,
    ) -> AsyncIterator[JobResult]:
        """Run every command once; yield each job's final result as it finishes.

        `commands` is an iterable of shell commands (job id = position) or of `Job`s (e.g. from
        `anet.batch.read_batch`), consumed lazily, or a `RunPlan` made from them. `options`
        (runs.py) adds what `anet run` does: resume and only-new from a journal, halt, keep
        order. Raises NoHostError when no host can run them.

        With a journal, every final result is committed there before it is yielded, so a kill
        -9 loses no result the consumer has not seen. If the journal cannot be written, the run
        goes on without it (one warning), or with `journal_required` raises its JournalError.
        (`journal=` and `journal_required=` are short for the same in `options`.)
        """
        if self._tasks is None:
            raise RuntimeError("use `async with Cluster(...) as cluster` before run()")
        if isinstance(commands, RunPlan):
            plan = commands
        else:
            options = options or RunOptions(journal=journal, journal_required=journal_required)
            plan = RunPlan(_as_jobs(commands), options)
        book = plan.options.journal
        mark = book is not None and plan.options.mark_delivered
        try:
            async for result in self._run_plan(plan):
                yield result
                # the consumer asks for the next: it has this one (unless it marks them itself)
                if mark and book is not None and not book.broken:
                    book.mark_delivered(result.id)
        finally:
            plan.close()

    async def map(
        self,
        command: str | bytes,
        inputs: Iterable[bytes | str | os.PathLike[str]],
        *,
        ordered: bool = True,
    ) -> AsyncIterator[JobResult]:
        """Run `command` once per input, each input on the job's stdin; job id = position.

        An input is bytes, or the path of a file (a str is a path). Results come in input
        order (`ordered`), or as the jobs finish. `inputs` is read lazily; a retried or
        speculative attempt reads its input again, so a file must stay until its result came.
        """
        line = command.encode() if isinstance(command, str) else command
        jobs = (Job(i, line, stdin=given) for i, given in enumerate(inputs))
        async for result in self.run(jobs, RunOptions(keep_order=ordered)):
            yield result

    async def _run_plan(self, plan: RunPlan) -> AsyncIterator[JobResult]:
        """The plan's results: the earlier run's, then this run's as jobs end (one generator
        for all of them: each layer of async generators costs every result a step)."""
        if not plan.options.keep_order:
            for result in plan.earlier():  # the earlier run's results come first
                yield result
        first = next(plan.jobs, None)
        while first is NOT_YET:  # a stream's first job has not come: no host is needed yet
            await asyncio.sleep(SOURCE_POLL)
            first = next(plan.jobs, None)
        if first is not None:  # else nothing to run: no host is even connected
            drive = await self._start_drive(plan, itertools.chain((first,), plan.jobs))
            plain = plan.plain
            try:
                async for result in drive.results():
                    if plain:  # no hook, no order to keep: the result itself, at once
                        plan.failed += not result.ok
                        yield result
                    else:
                        for ready in await plan.arrive(result):
                            yield ready
                    if result.ok:  # the failure count did not change: nor did the halt
                        continue
                    halt = plan.halt()
                    if halt is Halt.NOW:
                        drive.abort()
                    elif halt is Halt.SOON:
                        drive.drain()
            finally:
                self._forget(drive)
                drive.consumer_gone()
                if not drive.engine.finished:  # the consumer stopped early: kill what runs
                    drive.abort()
                    self._drives.append(drive)
                self._deal()  # its slots go to the runs still under way
        for result in plan.rest():  # keep-order: what waited for a job that never ended
            yield result

    async def _start_drive(self, plan: RunPlan, jobs: Iterator[Job]) -> Drive:
        assert self._tasks is not None
        options = plan.options
        tree = options.deps
        if tree is not None:
            from .deps.manifest import Tree  # a run with deps: the deps code is loaded by now

            if not isinstance(tree, Tree):
                tree = await tree  # a DepsError (one line) ends the run before any job starts
        self.connect()
        send = self._send if tree is None else functools.partial(self._send, within=tree.id)
        drive = Drive(
            jobs,
            options.policy or self._policy,
            self.hosts,  # type: ignore[arg-type]  # each HostState is the engine's HostStats
            send,
            self._tasks,
            AttemptLog(options.journal, _observers(self._observers, options.attempts)),
            options.journal,
            journal_required=options.journal_required,
            send_drained=self._send_drained,
        )
        drive.priority = options.priority
        if tree is not None:
            self._own_tree(drive, tree)
        self._runs.append(drive)
        try:
            self._deal()  # the new run's share, and the smaller shares of those under way
            for label, state in self.hosts.items():
                if state.state == HostPhase.READY:  # the timeline of this run's journal
                    drive.attempt_log.host_event(label, "ready", str(state.slots))
                    if state.held:  # polite mode holds it now: this run sends it nothing
                        drive.host_held(label, True)
                        drive.attempt_log.host_event(label, "held", state.held)
            await self._check_stuck()
        except BaseException:
            self._forget(drive)
            self._deal()
            raise
        return drive

    def _forget(self, drive: Drive) -> None:
        """The run is over (or never started): no more share of the hosts, and its own deps
        tree let go (held on each host until its last job there ends)."""
        self._runs.remove(drive)
        if (tree := self._trees.pop(drive, None)) is not None:
            tree.release(self._sessions)

    def _own_tree(self, drive: Drive, tree: Tree) -> None:
        """The run brings its own deps: held on each ready host for it (deps/runtree.py), a
        host dealt to it once they are there."""
        assert self._tasks is not None
        from .deps.runtree import RunTree  # only a run with deps of its own needs it

        async def failed(label: str, reason: str) -> None:
            if set(own.failed) >= set(self.hosts):
                await drive.no_host(f"its deps could not be synced to any host ({reason})")

        own = self._trees[drive] = RunTree(
            tree,
            self._tasks,
            lambda _label: self._deal(),  # the split of every host changes
            lambda label, reason: self._tasks.create_task(failed(label, reason)),  # type: ignore[union-attr]
            self._sync_turns,
        )
        for label, state in self.hosts.items():
            if state.state == HostPhase.READY:
                own.bring(self._sessions[label])


def _observers(
    cluster: list[AttemptObserver], own: AttemptObserver | None
) -> list[AttemptObserver]:
    """The cluster's observers (the list itself: one added later sees the run too), and the
    run's own."""
    return cluster if own is None else [*cluster, own]


def _as_jobs(commands: Iterable[str | bytes] | Iterable[Job]) -> Iterator[Job]:
    """Jobs as given, or commands numbered by position; consumed lazily."""
    iterator = iter(commands)
    first = next(iterator, None)
    if first is None:
        return iter(())
    chained = itertools.chain([first], iterator)
    return chained if isinstance(first, Job) else as_jobs(chained)  # type: ignore[arg-type,return-value]


def _syncer(deps: Tree | Awaitable[Tree], progress: Progress | None) -> Syncer:
    """The deps sync of a run that has deps; imported here, so a run without deps does not
    load it (the manifest code and the sync's messages: 15 ms of every start)."""
    from .deps.sync import Syncer

    return Syncer(deps, progress)
