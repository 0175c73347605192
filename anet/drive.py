"""One run under way: feeds the engine what the hosts say and carries out what it decides.

The engine decides; this carries out, on the event loop: frames to each host in one write per
scheduling round, the attempt log, final results into a bounded queue for the consumer (a full
queue stops the host's pump: SSH flow control slows the host down), the journal committed
before a result leaves (exactly once across a stop: see journal.py), and one timer for the
next decision no event will bring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

from dispatcher.jobfiles import Back
from dispatcher.protocol import Done, Dones, Exit, InputAck, Kill, Message, Output, Run, Started

from .core.batch import Job
from .core.engine import KILL_GRACE, Actions, Engine, HostStats, RunPolicy
from .core.record import JobResult
from .errors import NoHostError, protocol_error
from .logs import get_logger
from .remote.feed import Feeds, SendDrained
from .remote.transfer import Transfers
from .streams.attemptlog import AttemptLog
from .streams.flow import ByteBoundedQueue
from .streams.journal import Journal, JournalError

log = get_logger()

RESULT_QUEUE = 256
RESULT_BYTES = 32 << 20
"""Finished results waiting for the consumer, in number and in output bytes; beyond either,
hosts' channels stop being read and SSH flow control slows the hosts down."""
FLUSH_INTERVAL = 0.2
"""Seconds between journal commits when no result leaves: attempts and delivery marks."""


class _Done:
    """Marks the end of a run's results."""


_NOTHING: list[JobResult] = []  # no results (never appended to)


Send = Callable[[str, list[Message]], None]


class Drive:
    """The loop-side half of one run; `Cluster.run` makes one and routes host events to it."""

    def __init__(
        self,
        jobs: Iterable[Job],
        policy: RunPolicy,
        stats: dict[str, HostStats],
        send: Send,
        tasks: asyncio.TaskGroup,
        attempt_log: AttemptLog,
        journal: Journal | None = None,
        *,
        journal_required: bool = False,
        send_drained: SendDrained | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.engine = Engine(jobs, policy, stats, wall_offset=_wall_offset(loop))
        self._send = send
        self._tasks = tasks
        self.attempt_log = attempt_log
        self._journal = journal
        self._journal_required = journal_required
        self._results: ByteBoundedQueue[JobResult | _Done | BaseException] = ByteBoundedQueue(
            RESULT_QUEUE, RESULT_BYTES
        )
        self._round_due = False
        self._wakeup: asyncio.TimerHandle | None = None
        self._wake_when: float | None = None
        self._delivering = 0  # final results waiting for room in the queue
        self._done_sent = False
        self._failed = False
        self.priority = 1
        """This run's weight among the runs sharing the cluster's slots (the cluster sets it)."""
        self._feeds = Feeds(send_drained, tasks, self._unreadable) if send_drained else None
        """Jobs' stdin, streamed to the hosts (remote/feed.py); None: the jobs have none."""
        self._files = Transfers(send_drained, tasks, policy.caps) if send_drained else None
        """Per-job files (remote/transfer.py), used once a job has some (`engine.files`)."""

    # -- events from the hosts ------------------------------------------------------------------

    def host_ready(self, label: str, slots: int, share: int | None = None) -> None:
        """The host is ready with `slots`, `share` of them this run's (engine.host_ready)."""
        self.engine.host_ready(label, slots, share)
        self.round_soon()

    def host_held(self, label: str, held: bool) -> None:
        """Polite mode holds the host, or no longer does (engine.host_held)."""
        self.engine.host_held(label, held)
        self.round_soon()

    async def host_lost(self, label: str) -> None:
        if self._feeds is not None:
            self._feeds.host_lost(label)
        if self._files is not None:
            self._files.host_lost(label)
        self.engine.host_lost(label, self._loop.time())
        await self.deliver(self._carry_out_now(self.engine.take()))
        self.round_soon()

    def frame(self, label: str, msg: Message) -> list[JobResult]:
        """Started, Output, Exit or Done; HostError (permanent) when the host lies
        (engine.frame). Returns the final results it brought, for `deliver`. Not a coroutine:
        a frame or three a job come this way, and most bring nothing to wait for."""
        if type(msg) is Dones:
            return self._dones(label, msg.dones())
        if type(msg) is InputAck:
            if self._feeds is None:
                raise protocol_error(label, "InputAck, but no job of this run has a stdin")
            self._feeds.ack(label, msg)
            return _NOTHING
        if type(msg) is Back:
            if self._files is None:
                raise protocol_error(label, "Back, but no job of this run has files")
            self._files.back(label, msg)
            return _NOTHING
        cut = self.engine.frame(label, msg, self._loop.time())
        if type(msg) is Output and not cut:  # a cut (output over a cap) sends a Kill
            return _NOTHING
        self.round_soon()  # an Exit frees a slot; a start may bring a deadline closer
        if type(msg) is Started and self._feeds is not None:
            self._feeds.started(msg.aid)
        if type(msg) is not Exit and type(msg) is not Done:  # only an end brings results
            return _NOTHING
        if self._feeds is not None:
            self._feeds.ended(msg.aid)
        results = self._carry_out_now(self.engine.take())
        if self._files is not None and self.engine.files:  # the files before the result
            self._files.ended(msg.aid, results)
        return results

    def _dones(self, label: str, dones: list[Done]) -> list[JobResult]:
        """Several whole attempts (a Dones frame): the engine takes them all, then one round
        and one take carry out what they decided."""
        now, feeds = self._loop.time(), self._feeds
        if feeds is not None and feeds.feeding:
            for done in dones:
                self.engine.frame(label, done, now)
                feeds.ended(done.aid)
        else:  # no attempt is fed (every run without stdin): no feed to stop
            self.engine.dones(label, dones, now)
        self.round_soon()
        results = self._carry_out_now(self.engine.take())
        if self._files is not None and self.engine.files:  # as an Exit's (a job with files is
            for done in dones:  # never folded by our dispatcher, but its frames decide here)
                self._files.ended(done.aid, results)
        return results

    async def no_host(self, reason: str) -> None:
        """No host can ever take the work: the run fails with NoHostError."""
        if not self._failed:
            self._failed = True
            await self._results.put(NoHostError(reason))

    def drain(self) -> None:
        """Start no more attempts; the run ends once those running have ended (--halt soon)."""
        self.engine.drain()
        self.round_soon()

    def abort(self) -> None:
        """Kill every attempt in flight; the run ends once they have ended (--halt now)."""
        self.engine.abort()
        self.round_soon()

    def consumer_gone(self) -> None:
        """The consumer stopped reading for good (a stop, a break out of the loop): results no
        longer wait for room. Each was journaled before it was queued, and none is marked
        delivered, so a resume owes them; a host's pump blocked on a full queue reads on, and
        the dispatchers' Byes come in."""
        self._results.close()

    # -- the consumer's side --------------------------------------------------------------------

    async def results(self) -> AsyncIterator[JobResult]:
        """Each job's final result, committed to the journal before it is yielded."""
        flusher = self._tasks.create_task(self._flush_journal()) if self._journal else None
        try:
            self.round_soon()
            queue = self._results
            while True:  # results that wait are taken without a coroutine each
                item = queue.pop() if len(queue) else await queue.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise item
                if self._journal is not None:
                    self._commit_before_yield()
                yield item
        finally:
            if self._feeds is not None:
                self._feeds.stop_all()
            if self._files is not None:
                self._files.stop_all()
            if flusher is not None:
                flusher.cancel()  # the journal's owner makes the last commit when closing it
            self._wake_at(None)

    # -- carrying out ---------------------------------------------------------------------------

    def round_soon(self) -> None:
        """Ask for a scheduling round at the end of this loop iteration.

        Coalescing matters for throughput: a read from a host often carries many Exit frames,
        and one round then sends their replacements to each host in one SSH packet instead of
        one packet (and one encryption, one syscall) per job.
        """
        if not self._round_due:
            self._round_due = True
            self._loop.call_soon(self._round)

    def _round(self) -> None:
        self._round_due = False
        self.engine.round(self._loop.time())
        actions = self.engine.take()
        self._carry_out_now(actions)
        if actions.results:  # failed on the master (unrunnable): deliver them in the order
            self._delivering += 1  # taken, held from here so the run cannot end before them
            self._tasks.create_task(self._deliver_held(actions.results))
        self._check_done()

    def _carry_out_now(self, actions: Actions) -> list[JobResult]:
        """Send the frames, log the attempts, set the timer; the results are the caller's."""
        for host, frames in actions.frames.items():
            if self._files is not None and self.engine.files:
                frames = self._files.place(host, frames, self.engine.job)
            self._send(host, frames)
            if self._feeds is not None:
                for msg in frames:
                    if type(msg) is Run and msg.stdin:
                        self._feeds.start(host, msg.aid, self.engine.stdin(msg.aid))  # type: ignore[arg-type]
        for end in actions.attempts:
            self.attempt_log.attempt(
                end.attempt, end.size, end.start, end.runtime, end.code, end.signal, end.excused
            )
        self._wake_at(actions.wakeup)
        return actions.results

    def _unreadable(self, host: str, aid: int, why: str) -> None:
        """An attempt's input could not be read (a file gone): it is killed, and its job runs
        again or fails as a killed job does."""
        log.warning(f"attempt {aid}: {why}; killing it", host=host)
        self._send(host, [Kill(aid, KILL_GRACE)])

    async def _deliver_held(self, results: list[JobResult]) -> None:
        try:
            await self.deliver(results)
        finally:
            self._delivering -= 1
            self._check_done()

    async def deliver(self, results: list[JobResult]) -> None:
        """Each a job's one final result, in order: journal it, then queue it for the consumer
        (the journal is committed before the consumer gets it: see `_commit_before_yield`)."""
        self._delivering += 1  # the run may not end before the last of them is queued
        try:
            for result in results:
                if self._journal is not None:
                    try:
                        if result.spooled:  # copied from its spool a chunk per loop turn
                            await self._journal.record_spooled(result)
                        else:
                            self._journal.record(result)
                    except JournalError as exc:
                        self._journal_failed(exc)
                size = (
                    result.output_size
                    if result.spooled
                    else len(result.stdout) + len(result.stderr)
                )
                if not self._results.offer(result, size):  # full: wait for the consumer
                    await self._results.put(result, size)
        finally:
            self._delivering -= 1
        self._check_done()

    def _check_done(self) -> None:
        """End the run once the engine says so and no result is still on its way."""
        if not self._done_sent and not self._delivering and self.engine.finished:
            self._done_sent = True
            self._results.put_last(_Done())

    def _wake_at(self, when: float | None) -> None:
        """One timer for the next decision no event will trigger (a timeout, a straggler);
        left alone when that time did not change (most rounds), which saves a timer a job."""
        if when == self._wake_when and (when is None or self._wakeup is not None):
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._wake_when = when
        if when is not None:
            self._wakeup = self._loop.call_at(when, self._woken)

    def _woken(self) -> None:
        self._wakeup = self._wake_when = None
        self.round_soon()

    # -- the journal ----------------------------------------------------------------------------

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
        self._journal = self.attempt_log.journal = None

    async def _flush_journal(self) -> None:
        """Commit on a timer, so an idle spell never leaves attempts or delivery marks unwritten."""
        while self._journal is not None:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                if self._journal is not None and not self._journal.broken:
                    self._journal.flush()
            except JournalError as exc:
                self._journal_failed(exc)


def _wall_offset(loop: asyncio.AbstractEventLoop) -> float:
    """Unix time minus loop time: turns the engine's monotonic times into record times."""
    return time.time() - loop.time()
