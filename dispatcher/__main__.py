"""The dispatcher: the remote event loop that runs one end machine's jobs for the master.

One process per end machine, started by the bootstrap stub over the SSH channel (or as a local
subprocess). It reads Run/Kill/Setup frames on stdin, keeps up to `slots` jobs running, and
streams Started/Output/Exit frames on stdout. Design choices that matter:

- A plain `selectors` loop, not asyncio: no child watcher threads on old Pythons, one
  SIGCHLD wakeup fd, and every fd read as soon as it is readable.
- Invariant 5 (no deadlock): the master's frames are always read, even while our output to the
  master is backed up. Only the *jobs'* pipes are paused when our send buffer passes HIGH_WATER,
  so a slow master slows the jobs down (their pipes fill) instead of growing our memory.
- fd 1 is pointed at stderr at start, so a stray print() cannot corrupt the frame stream.
- When the master goes away (EOF on stdin, or silence longer than `dead_after`), every job group
  is killed before the dispatcher exits: a cut-off machine runs no orphan work.

Python 3.8+, stdlib + msgpack only; imports nothing from `anet`.
"""

from __future__ import annotations

import errno
import heapq
import os
import selectors
import signal
import sys
import time
from collections import deque

from . import cachetidy, courtesy
from .connection import NEED_DATA, Connection, ConnectionClosed
from .forked import Forks
from .heap import keep_heap
from .jobfiles import JobFiles, Put
from .jobinput import JobInput
from .once import OnceExit, OnceOutput, RunOnce
from .outbox import Outbox
from .pidfiles import PidFiles
from .pins import HeldTree, Pin, Unpin, Within
from .polite import RECHECK, Gate, Held, Polite
from .protocol import (
    DISPATCHER,
    FOLD_OUTPUT,
    MAX_DONES,
    MAX_FOLD,
    MAX_FRAME,
    OUTPUT_CHUNK,
    PROTOCOL_VERSION,
    STDERR,
    Bye,
    Done,
    Dones,
    Exit,
    Heartbeat,
    Hello,
    Input,
    InputAck,
    Kill,
    Message,
    Output,
    RemoteProtocolError,
    Run,
    Runs,
    Setup,
    Shutdown,
    Started,
    load_on_demand,
)
from .reading import ReadBuffer
from .runner import DEFAULT_PIPE, JobProcess, kill_group, read_buffered, spawn, widen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

    from .syncstore import SyncStore

HIGH_WATER = 8 << 20
PROTO_PIPE = 1 << 20
"""The pipe to the master (sshd's end, or the master's own) once a job prints a lot: four
frames per write instead of a quarter of one (a new pipe holds 64 KiB)."""
LOW_WATER = 1 << 20
DRAIN_GRACE = 2.0
"""Seconds of reading a job's pipes after its shell ended and its group was killed, in case a
process that left the group (an escapee) still holds them. Only time spent reading counts:
while back-pressure pauses the pipes, the clock stops."""
CUT_NOTE = (
    b"anet: output cut: a process this job started left its process group and kept its"
    b" stdout/stderr open %g s after the job ended\n" % DRAIN_GRACE
)
SHUTDOWN_GRACE = 1.0
DONES_WAIT = 0.03
DONES_BATCH = 16
"""While jobs wait in the queue (the slots are busy: the master has no hurry to send more),
Done records are held up to DONES_WAIT s or until DONES_BATCH of them, so that one frame (one
SSH packet, one wake-up of the master) carries several. With the queue empty they go at once:
the master's next Runs are then what keeps the slots busy. 30 ms, not 10: at 10 a Dones
frame carried 3-4 records on 4 x 4 loopback slots, at 30 about twice that, halving the SSH
packets (and the master's scheduling rounds) per job each way; the latency scenario (50 ms
RTT, 20 ms jobs) did not slow, since a queue that runs empty sends the records at once."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Every way to tell the dispatcher to die short of SIGKILL; each ends it cleanly."""


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Dispatcher:
    """The loop's state; methods are the event handlers."""

    def __init__(self, proto_in: int, proto_out: int, home: str) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.workdir = os.path.join(home, "work")
        os.makedirs(self.workdir, 0o700, exist_ok=True)
        self.pidfiles = PidFiles(self.workdir)
        orphans = self.pidfiles.kill_orphans()
        if orphans:
            sys.stderr.write("anet dispatcher: killed %d orphaned job group(s)\n" % orphans)
        self.sel = selectors.DefaultSelector()
        self.conn = Connection(DISPATCHER)
        """The session's states: Setup comes first, nothing after Shutdown, and only what a
        master may send; what this loop sends goes through it too."""
        self.outbox = Outbox()
        self.master_reads = ReadBuffer(1 << 20)  # big: deps data comes in 256 KiB frames
        self.job_reads = ReadBuffer(OUTPUT_CHUNK)
        self.wide: Set[int] = set()
        """The job pipes widened for a job that prints a lot (`widen`), read with os.read."""
        self.wide_out = False  # the pipe to the master is widened (once a job prints a lot)
        self.queue: Deque[Run] = deque()
        self.jobs: Dict[int, JobProcess] = {}
        self.inputs: Dict[int, JobInput] = {}
        """The stdin of each attempt run with one, queued or running, by aid."""
        self.free_slots: List[int] = []
        self.fold = 0.0
        """Seconds a new job's Started and output may be held (Setup.fold): 0, never."""
        self.fresh: Dict[int, JobProcess] = {}
        """Running jobs whose Started is held, by aid, in start order (so the first is due
        first): each ends as one Done, or is released when its fold is over."""
        self.dones: List[List[Any]] = []
        """Done fields of the folded jobs that ended in this turn of the loop: one frame for
        them all at its end (`pack_dones`)."""
        self.dones_since = 0.0  # when the first of `dones` was held
        self.setup: Optional[Setup] = None
        self.gate = Gate(Polite())
        """Polite mode's say on starting a job (Setup's polite fields replace it)."""
        self.held_checked: Optional[float] = None
        """While polite mode holds the queued jobs: when the gate last said so."""
        self.next_yield_check = 0.0  # --yield: when the running jobs' fate is looked at again
        self.within: Optional[bytes] = None
        """The tree the Runs that come now run in (Within); None: the default place."""
        self.bound: Dict[int, Optional[HeldTree]] = {}
        """The attempts bound to a run's own tree (pins.py), queued or running: their tree,
        None if it is not held here (they fail)."""
        self.env = dict(os.environ)
        self.paused = False
        self.writing = False
        self.running = True
        self.stopped_by = 0  # the signal that told us to stop, if one did
        self.last_heard = time.monotonic()
        self.next_heartbeat = float("inf")
        self.handlers: Dict[type, Callable[[Any], None]] = {}
        """Handlers of request messages (deps sync, housekeeping), by message class; each
        request module registers its own, so this loop stays about jobs."""
        self.forks = Forks(self.sel, self.send)
        """Request work that could stall this loop (matching a pattern) runs in children."""
        self.forks.register(self.handlers)
        self.home = home
        self.deps: Optional[SyncStore] = None
        """The deps store, made with the first frame that needs it (`load_deps`)."""
        load_on_demand(self.load_deps)
        load_on_demand(self.load_procs)
        self.handlers[RunOnce] = self.run_once
        self.files = JobFiles(home, self.send)
        """Per-job files (--transfer, --return): each attempt with some runs in its own folder."""
        self.files.register(self.handlers)
        self.handlers[Put] = self.take_file  # type: ignore[assignment]
        self.sigchld_r, self.sigchld_w = os.pipe()
        for fd in (proto_in, proto_out, self.sigchld_r, self.sigchld_w):
            os.set_blocking(fd, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.on_stop_signal)
        signal.set_wakeup_fd(self.sigchld_w)
        self.sel.register(proto_in, selectors.EVENT_READ, self.on_master_input)
        self.sel.register(self.sigchld_r, selectors.EVENT_READ, self.on_sigchld)

    def load_deps(self) -> None:
        """Import the deps store and register its handlers, once: called by the decoder at
        the first frame of a code the run's own modules do not know (then `load_procs`, if the
        code is not the store's either), or by `handle` for a run's tree (Pin, Within). A run
        without deps or housekeeping never pays for them (with the process listing, a third
        of the dispatcher's import CPU)."""
        if self.deps is not None:
            return
        from .syncstore import SyncStore

        self.deps = SyncStore(self.home, self.send)
        self.deps.register(self.handlers)
        self.deps.keepalive = self.heartbeat_now

    def load_procs(self) -> None:
        """Import the process listing (`anet --find`, `--killall`) and register its handlers."""
        from . import procs

        procs.register(self.handlers, self.send, self.forks)

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        os.write(self.proto_out, self.conn.start())  # the boot mark, tiny: fits any empty pipe
        hello = Hello(
            PROTOCOL_VERSION,
            os.uname()[1],  # gethostname(2); the socket module costs 5 ms to import
            _cores(),
            "%d.%d.%d" % sys.version_info[:3],
            _load(),
            os.getpid(),
            self.workdir.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
        )
        self.send(hello)
        while self.running:
            self.files.pump(self.room)
            self.flush()
            for key, _ in self.sel.select(self.timeout()):
                callback: Callable[[int], None] = key.data
                callback(key.fd)
                if not self.running:
                    break
            self.on_timers(time.monotonic())
        if self.stopped_by:
            name = signal.Signals(self.stopped_by).name
            sys.stderr.write("anet dispatcher: %s received: stopping every job\n" % name)
        self.terminate_all()
        self.forks.stop_all()
        if self.deps is not None:
            self.deps.abandon_all()
        self.files.close()
        self.pidfiles.close()
        self.pack_dones()  # results of jobs that ended: before Bye, after which nothing is read
        self.send(Bye())
        self.flush_blocking()

    def timeout(self) -> float:
        if self.files.returning and self.room():
            return 0.0  # files go back while the frames to the master are few
        deadlines = [self.next_heartbeat, self.forks.next_deadline()]
        if self.held_checked is not None:
            deadlines.append(self.held_checked + RECHECK)
        if self.gate.polite.memfree_kill and self.jobs:
            deadlines.append(self.gate.next_starved_check)
        if self.gate.polite.yield_idle > 0 and self.jobs:
            deadlines.append(self.next_yield_check)
        if self.setup is not None and self.setup.dead_after > 0:
            deadlines.append(self.last_heard + self.setup.dead_after)
        for job in self.jobs.values():
            deadlines.extend(t for t in (job.kill_at, job.drain_until) if t is not None)
        if self.fresh:
            deadlines.append(next(iter(self.fresh.values())).started + self.fold)
        if self.dones:
            deadlines.append(self.dones_since + DONES_WAIT)
        return min(max(0.0, min(deadlines) - time.monotonic()), 60.0)

    def on_timers(self, now: float) -> None:
        if now >= self.next_heartbeat and self.setup is not None:
            self.send(Heartbeat(_load()))
            self.next_heartbeat = now + self.setup.heartbeat
        if self.setup is not None and 0 < self.setup.dead_after < now - self.last_heard:
            self.running = False  # the master is frozen or cut off: stop everything
        self.forks.expire(now)
        while self.fresh:  # start order: the first whose fold is not over ends the look
            job = next(iter(self.fresh.values()))
            if now < job.started + self.fold:
                break
            self.release(job)
        # While held, looked at again, queued jobs or none (the master takes a held host's
        # queue back and sends nothing while it is held): Held("") says when jobs may start.
        held_then = self.held_checked
        if held_then is not None and now >= held_then + RECHECK and not self.held():
            self.start_queued()
        if self.jobs:
            self.be_polite(now)
        for job in list(self.jobs.values()):
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                kill_group(job.pid, signal.SIGKILL)
            if job.drain_until is not None and now >= job.drain_until:
                self.cut_output(job)

    # -- frames from the master -------------------------------------------------------------

    def on_master_input(self, fd: int) -> None:
        try:
            data = self.master_reads.read(fd)
        except BlockingIOError:
            return
        if data:
            self.last_heard = time.monotonic()
        self.conn.receive_data(data)  # b"": the master is gone (EOF, a broken connection)
        try:
            msg = self.conn.next_event()
            while msg is not NEED_DATA:
                if isinstance(msg, ConnectionClosed):
                    self.running = False
                    return
                self.handle(msg)
                msg = self.conn.next_event()
        except RemoteProtocolError as exc:  # garbled, or what no master sends (or not now)
            sys.stderr.write("anet dispatcher: %s\n" % exc)
            self.running = False
            return
        self.start_queued()

    def handle(self, msg: Message) -> None:
        if self.deps is None and isinstance(msg, (Pin, Unpin, Within)):
            self.load_deps()  # the pins' messages are known from the start: their store is not
        if isinstance(msg, Input):
            self.take_input(msg)
        elif isinstance(msg, Run):
            if self.within is not None:
                self.bound[msg.aid] = self.deps.pins.enter(self.within)
            if msg.stdin:
                self.inputs[msg.aid] = JobInput()
            if not self.files.hold(msg):  # else it waits for its files (take_file)
                self.queue.append(msg)
        elif isinstance(msg, Runs):
            for run in msg.runs():
                self.handle(run)
        elif isinstance(msg, Kill):
            self.kill(msg)
        elif isinstance(msg, Setup):
            self.setup = msg
            self.free_slots = list(range(1, msg.slots + 1))
            self.env["ANET_HOST"] = msg.host_label
            self.gate = Gate(
                Polite(
                    msg.nice, msg.max_load, msg.memfree_kb, msg.memfree_kill,
                    msg.yield_idle, msg.yield_move,
                )
            )  # fmt: skip
            self.next_heartbeat = time.monotonic() + msg.heartbeat
            # polite mode's kills send their own frames about a running job: no fold then
            polite_kills = msg.memfree_kill or msg.yield_idle > 0
            self.fold = 0.0 if polite_kills else min(max(msg.fold, 0.0), MAX_FOLD)
        elif isinstance(msg, Within):
            self.within = msg.tree or None
        elif isinstance(msg, Shutdown):
            self.running = False
        elif type(msg) in self.handlers:
            self.handlers[type(msg)](msg)
        # Heartbeat: receiving it already refreshed last_heard.

    def on_stop_signal(self, signum: int, _frame: Any) -> None:
        """Told to die (a terminal's ^C, kill, a hang-up): end as when the master goes, jobs
        killed first. They live in their own sessions: dying at once would orphan them.
        Only flags here: the loop does the work (no I/O inside a signal handler)."""
        self.stopped_by = signum
        self.running = False

    def heartbeat_now(self) -> None:
        """A heartbeat sent at once, from inside a long handler (a big deps build)."""
        self.send(Heartbeat(_load()))
        self.flush()

    def kill(self, msg: Kill) -> None:
        self.files.killed(msg.aid)  # a killed attempt sends no file back
        waiting = self.files.take_waiting(msg.aid)
        if waiting is not None:  # its files are still coming: it never starts
            self.queue.appendleft(waiting)
        for queued in self.queue:
            if queued.aid == msg.aid:
                self.queue.remove(queued)
                self.unbind(msg.aid)
                self.drop_input(msg.aid)
                self.files.drop(msg.aid)
                self.send(Exit(msg.aid, None, signal.SIGTERM, 0.0, 0.0, 0))
                return
        job = self.jobs.get(msg.aid)
        if job is not None and not job.exited and not msg.queued_only:
            kill_group(job.pid, signal.SIGTERM)
            if job.suspended_at is not None:  # a stopped group gets its TERM once continued
                kill_group(job.pid, signal.SIGCONT)
            job.kill_at = time.monotonic() + msg.grace

    # -- jobs -------------------------------------------------------------------------------

    def start_queued(self) -> None:
        if self.setup is None:
            return
        while self.queue and self.free_slots and not self.held():
            run = self.queue.popleft()
            failure = self.files.failure(run.aid)
            if failure is not None:  # its files could not be placed
                self.not_started(run, failure)
                continue
            where = self.where_bound(run.aid) if self.bound else None
            if where is None:
                where = self.where_jobs_run(), self.deps.job_cwd if self.deps else None
            elif not where[0]:
                self.not_started(run, "its run's deps tree is not held on this host")
                continue
            slot = heapq.heappop(self.free_slots)
            run, job_cwd = self.files.in_folder(run, *where)
            try:
                job = spawn(run, slot, job_cwd, self.env, nice=self.setup.nice)
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the command
                heapq.heappush(self.free_slots, slot)
                self.not_started(run, "cannot start job %d: %s" % (run.job, exc))
                continue
            self.jobs[run.aid] = job
            self.pidfiles.add(job.pid)
            if not self.paused:
                self.watch_job(job)
            stdin = self.inputs.get(run.aid)
            if self.fold > 0 and stdin is None and self.files.cwd(run.aid) is None:
                job.held = []  # its Started waits: the job may end as one Done
                self.fresh[run.aid] = job
            else:
                self.send(Started(run.aid, job.pid, slot))
            if stdin is not None and job.proc.stdin is not None:
                stdin.attach(job.proc.stdin)
                self.feed_job(run.aid)

    def where_jobs_run(self) -> Union[str, bytes]:
        """Where jobs run: the synced deps first, else the master's folder (local), else home."""
        synced = self.deps.jobs_cwd() if self.deps is not None else None
        return synced or (self.setup.cwd if self.setup else "") or self.workdir

    def where_bound(self, aid: int) -> Optional[Tuple[bytes, Optional[bytes]]]:
        """Where an attempt bound to its run's tree runs (and its deps folder): (b"", None)
        when that tree is not held here; None for an attempt bound to none."""
        if aid not in self.bound:
            return None
        held = self.bound[aid]
        if held is None:
            return b"", None
        return self.deps.pins.cwd(held), held.path

    def unbind(self, aid: int) -> None:
        """The attempt ended or never starts: its run's tree may be let go."""
        if self.bound:
            held = self.bound.pop(aid, None)
            if held is not None:
                self.deps.pins.leave(held)

    def not_started(self, run: Run, why: str) -> None:
        """The attempt cannot start: its reason on its stderr, exit status 127."""
        self.unbind(run.aid)
        self.drop_input(run.aid)
        self.files.drop(run.aid)
        self.send(Output(run.aid, STDERR, ("anet: %s\n" % why).encode("utf-8", "replace")))
        self.send(Exit(run.aid, 127, None, 0.0, 0.0, 0))

    def held(self) -> bool:
        """Polite mode holds the queued jobs now (a loaded host); the master hears of each
        change, and the gate is looked at again RECHECK seconds later (a timer)."""
        now = time.monotonic()
        reason = self.gate.holds(now, (job.pid for job in self.jobs.values()))
        if bool(reason) != (self.held_checked is not None):
            self.send(Held(reason))
        self.held_checked = now if reason else None
        return bool(reason)

    def be_polite(self, now: float) -> None:
        """What polite mode does to running jobs (dispatcher/courtesy.py), on its timers."""
        courtesy.kill_youngest_if_starved(self.gate, self.jobs.values(), self.send, now)
        if self.gate.polite.yield_idle <= 0 or now < self.next_yield_check:
            return
        self.next_yield_check = now + RECHECK  # its own clock: the start gate looks as well
        who = courtesy.yield_to_person(self.gate, self.jobs.values(), self.send, now)
        if who and self.held_checked is None:
            self.held()  # says Held("yielding: ...") now: the master sends nothing more

    def run_once(self, msg: RunOnce) -> None:
        """An onall command: started at once, in no slot, under a negative id (the master's
        attempt ids are >= 0); its frames are the request's replies."""
        run = Run(-msg.rid, 0, msg.command)
        cwd = self.where_jobs_run()
        try:
            nice = self.setup.nice if self.setup else 0
            job = spawn(run, 0, cwd, self.env, rid=msg.rid, nice=nice)
        except (OSError, ValueError) as exc:
            self.send(OnceOutput(msg.rid, STDERR, ("anet: cannot start: %s\n" % exc).encode()))
            self.send(OnceExit(msg.rid, 127, None))
            return
        self.jobs[run.aid] = job
        self.pidfiles.add(job.pid)
        if not self.paused:
            self.watch_job(job)

    def watch_job(self, job: JobProcess) -> None:
        for fd in job.pipes:
            self.sel.register(fd, selectors.EVENT_READ, self.job_reader(job))

    def job_reader(self, job: JobProcess) -> Callable[[int], None]:
        def on_output(fd: int) -> None:
            try:
                # a widened pipe's reads come full: straight into their own bytes, no copy
                data = os.read(fd, OUTPUT_CHUNK) if fd in self.wide else self.job_reads.read(fd)
            except BlockingIOError:
                return
            if data:
                if len(data) == DEFAULT_PIPE and fd not in self.wide:
                    self.widen(fd)
                self.report_output(job, job.pipes[fd], data)
                return
            self.close_job_fd(job, fd)
            self.maybe_finish(job)

        return on_output

    def widen(self, fd: int) -> None:
        """A job fills its pipe: it prints a lot. Its pipe is widened (a frame's worth per
        read), and so is the one to the master, once: else a 64 KiB pipe takes a quarter of
        a frame per write, four loop turns and writev calls for each frame read. And the
        chunks' memory is kept for the next ones (heap.py)."""
        widen(fd, OUTPUT_CHUNK)
        self.wide.add(fd)
        if not self.wide_out:
            self.wide_out = True
            widen(self.proto_out, PROTO_PIPE)
            keep_heap()

    def report_output(self, job: JobProcess, stream: int, data: bytes) -> None:
        """A chunk of a job's output: held with its Started while both fit the fold, sent
        otherwise (after what was held)."""
        held = job.held
        if held is not None:
            if job.held_size + len(data) <= FOLD_OUTPUT:
                held.append((stream, data))
                job.held_size += len(data)
                return
            self.release(job)
        self.send_parts(job.output_message(stream, data))

    def release(self, job: JobProcess) -> None:
        """The job's fold is over (it runs on, or says more than a Done holds): send its
        Started and the output held with it; from now on it is reported as it goes."""
        held, job.held = job.held, None
        del self.fresh[job.aid]
        self.send(Started(job.aid, job.pid, job.slot))
        for stream, data in held or ():
            self.send_parts(job.output_message(stream, data))

    def close_job_fd(self, job: JobProcess, fd: int) -> None:
        if not self.paused:
            self.sel.unregister(fd)
        self.wide.discard(fd)
        job.close_pipe(fd)

    def cut_output(self, job: JobProcess) -> None:
        """The grace is over and an escapee still holds the pipes: send what they hold now,
        stop waiting for their EOF, and say so in the job's stderr (its exit status stays)."""
        for fd in list(job.pipes):
            for data in read_buffered(fd):
                self.report_output(job, job.pipes[fd], data)
            self.close_job_fd(job, fd)
        self.report_output(job, STDERR, CUT_NOTE)
        self.maybe_finish(job)

    def on_sigchld(self, fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        self.forks.reap()
        for job in list(self.jobs.values()):
            if not job.exited and job.try_reap():
                if job.pipes:
                    job.drain_left = DRAIN_GRACE
                    job.drain_clock(time.monotonic(), not self.paused)
                self.maybe_finish(job)

    def maybe_finish(self, job: JobProcess) -> None:
        """An attempt is over once its shell is reaped and both pipes hit EOF (output complete)."""
        if not job.exited or job.pipes or job.aid not in self.jobs:
            return
        del self.jobs[job.aid]
        self.unbind(job.aid)
        self.drop_input(job.aid)  # no InputAck after its Exit
        self.pidfiles.remove(job.pid)
        if job.slot:  # an onall command took none
            heapq.heappush(self.free_slots, job.slot)
        if job.held is not None:  # ended within its fold: the whole attempt in one record
            del self.fresh[job.aid]
            if not self.dones:
                self.dones_since = time.monotonic()
            self.dones.append(job.done_fields())
        else:
            exit_msg = job.exit_message()
            if not self.files.ended(job.aid, exit_msg):  # else sent once its files went back
                self.send(exit_msg)
        self.start_queued()

    def terminate_all(self) -> None:
        """TERM every job group, KILL what is left after a grace period, reap everything."""
        self.queue.clear()
        self.fresh.clear()  # no Started for them now: the master hears Bye
        for aid in list(self.inputs):
            self.drop_input(aid)
        for job in self.jobs.values():
            kill_group(job.pid, signal.SIGTERM)
            kill_group(job.pid, signal.SIGCONT)  # a job stopped by --yield, or by anyone
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while time.monotonic() < deadline and not all(j.try_reap() for j in self.jobs.values()):
            time.sleep(0.01)
        for job in self.jobs.values():
            kill_group(job.pid, signal.SIGKILL)
            while not job.try_reap():
                time.sleep(0.005)
            for fd in list(job.pipes):
                self.close_job_fd(job, fd)

    # -- per-job files ------------------------------------------------------------------------

    def take_file(self, msg: Put) -> None:
        """A chunk of an attempt's file; its Run is queued once all its files are whole."""
        run = self.files.put(msg)
        if run is not None:
            self.queue.append(run)

    def room(self) -> bool:
        """The frames waiting for the master are few: a returned file may add a chunk."""
        return len(self.outbox) < LOW_WATER

    # -- jobs' stdin --------------------------------------------------------------------------

    def take_input(self, msg: Input) -> None:
        """A chunk of an attempt's stdin; for one that ended (or was killed) it is moot."""
        stdin = self.inputs.get(msg.aid)
        if stdin is None:
            return
        thrown = stdin.add(msg.data, msg.eof)
        if thrown:
            self.send(InputAck(msg.aid, thrown, True))
        self.feed_job(msg.aid)

    def feed_job(self, aid: int) -> None:
        """Write what the job's stdin pipe takes, acknowledge it, and wait for room for the
        rest: the pipe's write readiness, never a blocking write (a job that does not read
        stalls nothing but itself). Once all is in, or the job closed it, the pipe is closed."""
        stdin = self.inputs.get(aid)
        if stdin is None:  # ended since the selector said its pipe had room
            return
        gone, broken = stdin.write()
        if gone or broken:
            self.send(InputAck(aid, gone, broken))
        self.watch_input(stdin, aid)
        if stdin.done and stdin.pipe is not None:
            stdin.close()

    def watch_input(self, stdin: JobInput, aid: int) -> None:
        """Be told when the pipe has room while bytes wait for it, and only then. The flag is
        the JobInput's own: its fd number may be another job's once its pipe is closed."""
        if stdin.waiting and not stdin.watched:
            self.sel.register(stdin.fd, selectors.EVENT_WRITE, lambda _fd: self.feed_job(aid))
            stdin.watched = True
        elif stdin.watched and not stdin.waiting:
            self.sel.unregister(stdin.fd)
            stdin.watched = False

    def drop_input(self, aid: int) -> None:
        """The attempt ended or never starts: close its stdin, forget its input."""
        stdin = self.inputs.pop(aid, None)
        if stdin is None:
            return
        stdin.chunks.clear()
        self.watch_input(stdin, aid)
        stdin.close()

    # -- frames to the master ---------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.send_frame(self.conn.send(msg))

    def send_parts(self, msg: Message) -> None:
        """As `send`, for a job's output: its bytes are queued as they are, not copied."""
        for part in self.conn.send_parts(msg):
            self.outbox.add(part)
        self._mind_high_water()

    def send_frame(self, frame: bytes) -> None:
        """Queue an encoded frame."""
        self.outbox.add(frame)
        self._mind_high_water()

    def _mind_high_water(self) -> None:
        """Past HIGH_WATER queued for the master, the jobs' pipes wait for it."""
        if len(self.outbox) > HIGH_WATER and not self.paused:
            self.set_paused(True)

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) reading job pipes: back-pressure from the master to the jobs.

        Never a loss: paused pipes keep their data (and block their writers), and an ended
        job's escapee grace does not run while nobody reads its pipes.
        """
        self.paused = paused
        now = time.monotonic()
        for job in self.jobs.values():
            job.drain_clock(now, not paused)
            if paused:
                for fd in job.pipes:
                    self.sel.unregister(fd)
            else:
                self.watch_job(job)

    def dones_due(self) -> bool:
        """The held Done records go now: nothing is queued, or enough of them, or long enough."""
        return (
            not self.queue
            or len(self.dones) >= DONES_BATCH
            or time.monotonic() >= self.dones_since + DONES_WAIT
        )

    def pack_dones(self) -> None:
        """The Done records of this loop turn, as one Done or in Dones frames (each well
        under MAX_FRAME: a record holds at most FOLD_OUTPUT bytes of output)."""
        dones, self.dones = self.dones, []
        if len(dones) == 1:
            self.send(Done(*dones[0]))
            return
        per_frame = min(MAX_DONES, MAX_FRAME // (FOLD_OUTPUT + 256))
        for at in range(0, len(dones), per_frame):
            self.send(Dones(dones[at : at + per_frame]))

    def flush(self, _fd: Any = None) -> None:
        if self.dones and self.dones_due():
            self.pack_dones()
        if self.outbox and (_fd is not None or not self.writing):  # writing: wait for room
            try:
                self.outbox.write_to(self.proto_out)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    raise
                self.outbox.clear()
                self.running = False
        if self.paused and len(self.outbox) < LOW_WATER:
            self.set_paused(False)
        want_write = bool(self.outbox)
        if want_write != self.writing:
            if want_write:
                self.sel.register(self.proto_out, selectors.EVENT_WRITE, self.flush)
            else:
                self.sel.unregister(self.proto_out)
            self.writing = want_write

    def flush_blocking(self) -> None:
        try:
            os.set_blocking(self.proto_out, True)
            while self.outbox:
                self.outbox.write_to(self.proto_out)
        except OSError:
            pass  # the master is gone; nobody is left to tell


def _take_protocol_fds() -> tuple:
    """Move the protocol off fds 0/1, so nothing else (print, a job) can read or write them."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def main(home: Optional[str] = None) -> None:
    home = home or os.environ.get("ANET_HOME") or os.path.expanduser("~/.cache/anet")
    own = cachetidy.own_zip(__file__)
    if own is not None:
        cachetidy.hold(own)  # for this process's life: later imports read the zip
    proto_in, proto_out = _take_protocol_fds()
    Dispatcher(proto_in, proto_out, home).serve()
    if own is not None:  # after Bye: a listing and a stat a file, a fraction of a ms
        cachetidy.tidy(os.path.dirname(own), own)
    # Bye is said and every job reaped: the interpreter's teardown (freeing its modules, 12 ms
    # of CPU on the test machine) would only make the master wait longer for this exit.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
