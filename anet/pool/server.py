"""The pool's side: one open `Cluster`, the runs its clients submitted, and a unix socket.

Every connection is one request (see `Pool.handle`): `ping`, `submit`, `ls`, `attach`, `wait`,
`cancel`, `down`. Only the owner gets an answer: the socket lives in a 0700 directory
(place.py), and a peer whose uid (SO_PEERCRED) is not the daemon's is closed unanswered.

A run's results go into its journal as they end (the cluster commits each before yielding it),
so the journal is the run's record: `attach` sends what the journal holds, then what comes
live, skipping ids already sent, so the seam has no gap and no duplicate. A client that reads
slower than results come does not grow the daemon's memory: past LISTENER_LIMIT waiting results
its queue is dropped and it catches up from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgpack

from ..api import Cluster, HostState
from ..core.batch import as_jobs, read_batch
from ..core.engine import RunPolicy
from ..core.halt import HaltPolicy
from ..core.record import JobResult
from ..core.speculation import Timeout
from ..errors import AnetError, UsageError
from ..logs import get_logger
from ..runs import RunOptions
from ..streams.joblog import format_row
from ..streams.journal import AttemptRecord, IdSet, Journal, JournalError, JournalReader
from . import wire
from .place import Place

log = get_logger()

KINDS = ("batch", "commands")
"""What a submit carries, and the suffix its run's file has on disk."""
LISTENER_LIMIT = 1024
"""Results waiting for one attached client before it is switched to catching up from the journal."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client has, once connected, to send its request."""
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class Listener:
    """One attached client's live results, bounded."""

    def __init__(self) -> None:
        self.queue: deque[JobResult] = deque()
        self.wake = asyncio.Event()
        self.lagged = False

    def put(self, result: JobResult | None) -> None:
        if result is not None:
            if len(self.queue) >= LISTENER_LIMIT:
                self.queue.clear()  # it reads the journal again instead
                self.lagged = True
            else:
                self.queue.append(result)
        self.wake.set()


@dataclass
class PoolRun:
    """One submitted batch: its counts, its journal, who is listening.

    On disk, beside its journal (place.py): `ID.batch`, the batch file as submitted (or
    `ID.commands`, the library's list of commands, in msgpack), and, once the run has ended,
    `ID.end`, its last row. A run with a batch and no end was under way when its pool died: the
    next pool of that name resumes it from its journal.

    The journal is the pool's (`ID.sqlite`), or for `anet BATCH` through the pool the one a
    standalone run of that batch keeps (its --journal, or its default one): `anet status`,
    `--resume` and a later standalone run find it there. It is open (and locked) while the run
    is under way only; an attach afterwards opens it for the time it reads."""

    id: int
    name: str
    total: int
    path: Path  # the journal's
    fingerprint: str  # the batch's, which the journal must have
    journal: Journal | None  # open while the run is under way
    options: RunOptions
    identity: tuple[int, str | None] | None = None
    """The journal file's inode and creation time: another pair, and a later run replaced it
    (unknown for a run that had ended before this pool started)."""
    joblog: TextIO | None = None
    rerunning: bool = False  # resumed and under way: its journal's failures run again
    fresh: IdSet = field(default_factory=IdSet)  # then, the ids of the results it gave
    started: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "running"
    done: int = 0
    failed: int = 0
    task: asyncio.Task[None] | None = None
    listeners: set[Listener] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "state": self.state, "done": self.done,
            "failed": self.failed, "total": self.total, "started": self.started,
        }  # fmt: skip

    def arrived(self, result: JobResult) -> None:
        if self.rerunning:
            self.fresh.add(result.id)
        self.done += 1
        self.failed += not result.ok
        for listener in self.listeners:
            listener.put(result)

    def end(self, state: str, end_file: Path) -> None:
        self.state = state
        self.finished = time.time()
        self.close_joblog()
        with contextlib.suppress(OSError):  # unwritten, the next pool resumes the run: no loss
            _write_atomically(end_file, json.dumps(self.row()).encode())
        self.ended.set()
        for listener in self.listeners:
            listener.put(None)

    def attempted(self, record: AttemptRecord, command: bytes) -> None:
        """One ended attempt of this run, for its --joblog (written as `anet run` writes it)."""
        if self.joblog is not None:
            try:
                self.joblog.write(format_row(record, command))
                self.joblog.flush()  # a `tail -f` of it sees each attempt, as a standalone one
            except OSError as exc:  # a full disk, a removed mount: the run goes on without it
                log.warning(f"run {self.id}: its joblog cannot be written: {exc.strerror}")
                self.close_joblog()

    def close_joblog(self) -> None:
        if self.joblog is not None:
            with contextlib.suppress(OSError):
                self.joblog.close()
            self.joblog = None

    def by_host(self) -> dict[str, list[Any]]:
        """This run's own numbers by host, from its journal (other runs share the hosts): the
        jobs whose final result came from it, its failed attempts, its attempts' mean time."""
        if self.journal is not None:
            self.journal.flush()
        hosts: dict[str, list[Any]] = {}
        with JournalReader.open(self.path) as reader:
            for host, done, _failed in reader.results_by_host():
                hosts[host] = [done, 0, None]
            for host, attempts, failed, busy, _first, _last in reader.attempts_by_host():
                row = hosts.setdefault(host, [0, 0, None])
                row[1], row[2] = failed, busy / attempts if attempts else None
        return hosts

    @contextlib.contextmanager
    def reading(self) -> Iterator[Journal]:
        """The journal to read: the run's open one, or, once it has ended, opened for the time
        of the read (JournalBusy while another run of that batch has it)."""
        if self.journal is not None:
            yield self.journal
            return
        gone = UsageError(
            f"run {self.id}'s results are no longer in its journal {self.path}: a later run of"
            " its batch replaced it, or journal retention trimmed it"
        )
        try:
            with Journal.open(self.path, self.fingerprint, self.name, resume=True) as journal:
                found = (os.stat(self.path).st_ino, journal.meta.get("created"))
                if self.identity is not None and found != self.identity:
                    raise gone
                yield journal
        except JournalError:
            raise gone from None

    def stored(self, journal: Journal) -> Iterator[JobResult]:
        """Every final result of this run the journal holds now, in id order (committed
        first). A resumed run gives its earlier successes again (all, or with --only-new those
        never delivered) and runs its earlier failures again: until it has given a job's
        result (`arrived`), the journal's is an earlier run's, and is left out."""
        journal.flush()
        stored = journal.results_from(0)
        if not self.rerunning:
            return stored
        return (r for r in stored if r.id in self.fresh)

    def delivered(self, job_id: int) -> None:
        """An attach wrote the result to its client (for a later `--resume --only-new`)."""
        if self.journal is not None and not self.journal.broken:
            with contextlib.suppress(JournalError):
                self.journal.mark_delivered(job_id)

    def close_journal(self) -> None:
        if self.journal is not None:
            with contextlib.suppress(JournalError):
                self.journal.close()
            self.journal = None


class RunJournal(Journal):
    """A pool run's journal, closed when its run ends (a later run of that batch may take it):
    the attempts its cancel kills end after that, and are not recorded (standalone, the
    journal outlives them: it closes with the command)."""

    def record_attempt(self, attempt: AttemptRecord) -> None:
        if not self._closed:
            super().record_attempt(attempt)

    def record_host_event(self, when: float, host: str, event: str, detail: str | None) -> None:
        if not self._closed:
            super().record_host_event(when, host, event, detail)


class Pool:
    """The daemon: `serve` until a `down` request or a cancel."""

    def __init__(self, place: Place, cluster: Cluster) -> None:
        self.place = place
        self.cluster = cluster
        self.runs: dict[int, PoolRun] = {}
        self._next_id = 1
        self._stop = asyncio.Event()
        self._resume_later = False
        self._tasks: asyncio.TaskGroup | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Resume the runs an earlier pool of this name left under way, then listen on the
        socket until told to stop; the runs under way are cancelled then (their remote jobs
        killed), their journals closed."""
        path = self.place.socket
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._restore()
            server = await asyncio.start_unix_server(self._accept, path=os.fspath(path))
            try:
                os.chmod(path, 0o600)
                if ready is not None:
                    ready()
                await self._stop.wait()
            finally:
                server.close()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                for run in self.runs.values():
                    if run.task is not None:
                        run.task.cancel()
                for client in self._clients:
                    client.cancel()
        for run in self.runs.values():
            run.close_journal()

    def _restore(self) -> None:
        """The runs of an earlier pool of this name: those that ended are listed (and can be
        attached), those left under way resume from their journals, their successes kept."""
        runs_dir = self.place.runs_dir
        found = sorted(
            (int(f.stem), f.suffix[1:])
            for kind in KINDS
            for f in runs_dir.glob(f"*.{kind}")
            if f.stem.isdigit()
        )
        for run_id, kind in found:
            self._next_id = max(self._next_id, run_id + 1)
            try:
                data = self._file(run_id, kind).read_bytes()
                end = self._file(run_id, "end")
                row = json.loads(end.read_bytes()) if end.exists() else None
                self._start(run_id, kind, data, self._name_of(run_id), row, restoring=True)
            except (OSError, ValueError, AnetError, JournalError) as exc:
                log.warning(f"run {run_id} of an earlier pool cannot be restored: {exc}")

    def _file(self, run_id: int, kind: str) -> Path:
        return self.place.journal(run_id).with_suffix(f".{kind}")

    def _name_of(self, run_id: int) -> str:
        try:
            return self._file(run_id, "name").read_text()
        except OSError:
            return "?"

    def stop(self, *, resume_later: bool = False) -> None:
        """Stop serving; the runs under way are cancelled: for good (`anet down`), or, with
        `resume_later` (SIGTERM: a supervisor or a shutdown), to be resumed by the next pool."""
        self._resume_later = resume_later
        self._stop.set()

    # -- a client -------------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each client in a task of the pool's own, so a stop ends them all."""
        assert self._tasks is not None
        task = self._tasks.create_task(self._connection(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer) != os.getuid():
                log.warning("a connection from another user was refused")
                return
            async with asyncio.timeout(REQUEST_TIMEOUT):  # a client that says nothing is let go
                request = await wire.read(reader)
            if isinstance(request, dict):
                await self.handle(request, writer)
        except AnetError as exc:
            writer.write(wire.pack({"error": str(exc)}))
        except (wire.WireError, ConnectionError, TimeoutError) as exc:
            log.info(f"a client left: {exc or type(exc).__name__}")
        except Exception:  # one client's trouble must never take the pool and its runs down
            log.exception("a client's request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def handle(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = request.get("op")
        if op == "ping":
            hosts = [_host_row(label, state) for label, state in self.cluster.hosts.items()]
            reply: dict[str, Any] = {"pid": os.getpid(), "hosts": hosts}
        elif op == "submit":
            reply = self._submit(request)
        elif op == "ls":
            reply = {"runs": [run.row() for run in self.runs.values()]}
        elif op == "attach":
            await self._attach(request, writer)
            return
        elif op == "wait":
            run = self._run(request)
            await run.ended.wait()  # the client may leave first: its connection then closes
            reply = run.row()
        elif op == "cancel":
            run = self._run(request)
            if run.task is not None:
                run.task.cancel()
            await run.ended.wait()
            reply = run.row()
        elif op == "down":
            self.stop()
            reply = {"down": True}
        else:
            reply = {"error": f"unknown request {op!r}"}
        writer.write(wire.pack(reply))
        await writer.drain()

    def _run(self, request: dict[str, Any]) -> PoolRun:
        run = self.runs.get(request.get("run"))  # type: ignore[arg-type]
        if run is None:
            raise _NoSuchRun(request.get("run"))
        return run

    def _submit(self, request: dict[str, Any]) -> dict[str, Any]:
        """A batch file's bytes (`batch`: its lines numbered as a batch file's), or the
        library's `commands` (every one a job, numbered by position), and a `name`."""
        name = request.get("name")
        kind = next((k for k in KINDS if k in request), None)
        data = request.get(kind) if kind == "batch" else _packed_commands(request.get("commands"))
        if kind is None or not isinstance(data, bytes) or not isinstance(name, str):
            return {"error": "a submit needs a batch's bytes or a list of commands, and a name"}
        run_id = self._next_id
        self._next_id += 1
        try:
            self.place.runs_dir.mkdir(mode=0o700, exist_ok=True)
            choices = request.get("options") or {}
            _run_options(choices, None)  # a mistake is refused here, before anything is kept
            if isinstance(choices.get("joblog"), str):
                joblog = _open_joblog(choices["joblog"], resumed=False)
                if joblog is not None:
                    joblog.close()
            _write_atomically(self._file(run_id, "name"), name.encode())
            _write_atomically(self._file(run_id, "options"), json.dumps(choices).encode())
            _write_atomically(self._file(run_id, kind), data)  # last: the run exists now
            try:
                run = self._start(run_id, kind, data, name, None, restoring=False)
            except BaseException:  # refused (a journal busy, none to resume): not kept either
                for suffix in (kind, "options", "name"):
                    self._file(run_id, suffix).unlink(missing_ok=True)
                raise
        except OSError as exc:
            return {"error": f"cannot keep the batch: {exc.strerror}"}
        except (AnetError, JournalError) as exc:
            return {"error": str(exc)}
        log.info(f"run {run_id} ({name}): {run.total} jobs")
        return {**run.row(), "journal": str(run.path)}

    def _start(
        self,
        run_id: int,
        kind: str,
        data: bytes,
        name: str,
        ended: dict[str, Any] | None,
        *,
        restoring: bool,
    ) -> PoolRun:
        """The run, under way with its journal open, unless `ended` (its last row) says it
        has ended. Its journal is resumed (its successes not run again) when the submit asked
        (--resume), or, `restoring` an earlier pool's run, when it is on disk."""
        try:
            choices = json.loads(self._file(run_id, "options").read_bytes())
        except FileNotFoundError:  # kept by a pool from before per-run options
            choices = {}
        kept = choices.get("journal")
        path = Path(kept) if isinstance(kept, str) else self.place.journal(run_id)
        fingerprint = hashlib.sha256(data).hexdigest()  # as a standalone run's (its file's)
        if kind == "batch":
            jobs = list(read_batch(io.BytesIO(data)))
        else:
            jobs = list(as_jobs(msgpack.unpackb(data)))
        if ended is not None:
            run = PoolRun(run_id, name, len(jobs), path, fingerprint, None, RunOptions())
            run.started, run.done, run.failed = ended["started"], ended["done"], ended["failed"]
            run.state = str(ended["state"])
            run.ended.set()
            self.runs[run_id] = run
            return run
        resume = path.exists() if restoring else choices.get("resume") is True
        # a restored run gives all its earlier results again: its clients attach from the start
        only_new = choices.get("only_new") is True and not restoring
        journal = RunJournal.open(path, fingerprint, name, resume=resume)
        try:
            options = _run_options(choices, journal, resume=resume, total=len(jobs))
            options = dataclasses.replace(options, only_new=only_new)
            run = PoolRun(run_id, name, len(jobs), path, fingerprint, journal, options)
            run.identity = (os.stat(path).st_ino, journal.meta.get("created"))
            run.options = dataclasses.replace(options, attempts=run.attempted)
            if isinstance(choices.get("joblog"), str):
                run.joblog = _open_joblog(choices["joblog"], resumed=restoring)
        except BaseException:
            journal.close()
            raise
        self.runs[run_id] = run
        assert self._tasks is not None
        run.rerunning = resume
        run.task = self._tasks.create_task(self._drive(run, jobs))
        return run

    async def _drive(self, run: PoolRun, jobs: list[Any]) -> None:
        state = "done"
        try:
            async for result in self.cluster.run(jobs, run.options):
                run.arrived(result)
        except asyncio.CancelledError:
            state = "cancelled"
        except AnetError as exc:
            state = f"failed: {exc}"
        finally:
            run.close_joblog()
            if not run.listeners:  # else the last one closes it, once it has sent (and marked) all
                run.close_journal()  # unlocked: a later run of that batch may take it
            if state == "cancelled" and self._resume_later:  # no end on disk: resumed later
                run.ended.set()
            else:
                run.end(state, self._file(run.id, "end"))
            log.info(f"run {run.id}: {state}")

    async def _attach(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """The run's results from its start: the journal's, then live ones, each id once;
        then a last frame with the run's row."""
        run = self._run(request)
        listener = Listener()
        run.listeners.add(listener)
        sent = IdSet()  # compact for a run's millions of ids

        async def send(results: Iterator[JobResult]) -> None:
            for result in results:
                if result.id not in sent:
                    if writer.is_closing():  # uvloop raises on a write to a closed transport
                        raise ConnectionResetError("the client left")
                    sent.add(result.id)
                    writer.write(wire.pack(wire.result_fields(result)))
                    await writer.drain()
                    run.delivered(result.id)

        try:
            with run.reading() as journal:
                await send(run.stored(journal))
            while True:
                listener.wake.clear()
                while listener.queue:
                    await send(iter([listener.queue.popleft()]))
                if listener.lagged:
                    listener.lagged = False
                    with run.reading() as journal:
                        await send(run.stored(journal))
                    continue
                if run.ended.is_set():  # every result came before: in the journal or the queue
                    break
                await listener.wake.wait()
            last = run.row()
            if request.get("summary"):
                with contextlib.suppress(AnetError, JournalError):  # the results matter more
                    last["summary"] = self._summary(run)
            writer.write(wire.pack(last))
            await writer.drain()
        finally:
            run.listeners.discard(listener)
            if run.ended.is_set() and not run.listeners:
                run.close_journal()

    def _summary(self, run: PoolRun) -> dict[str, Any]:
        """What the end summary of `anet BATCH` through the pool shows: the run's wall time,
        and each host of the pool (its state and slots now) with the run's own numbers."""
        numbers = run.by_host()
        hosts = [
            [label, str(state.state), state.slots, *numbers.pop(label, [0, 0, None])]
            for label, state in self.cluster.hosts.items()
        ]  # then hosts the run used that the pool no longer has (none yet: no `pool drain`)
        hosts += [[label, "closed", 0, *row] for label, row in numbers.items()]
        wall = (run.finished or time.time()) - run.started
        return {"wall": wall, "hosts": hosts}


class _NoSuchRun(AnetError):
    def __init__(self, run_id: object) -> None:
        super().__init__(f"no run {run_id!r} in this pool")


def _run_options(
    choices: dict[str, Any], journal: Journal | None, *, resume: bool = False, total: int = 0
) -> RunOptions:
    """A run's options from what its submit asked (`anet submit --retries ...`): UsageError (the
    client's one line) for a value `anet run` would refuse too."""
    retries, timeout = choices.get("retries", 2), choices.get("timeout")
    speculate, keep_order = choices.get("speculate", True), choices.get("keep_order", False)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise UsageError(f"retries: {retries!r} is not a count")
    if not (timeout is None or isinstance(timeout, (int, float, str))) or isinstance(timeout, bool):
        raise UsageError(f"timeout: {timeout!r} is not seconds or a percentage")
    yes_no = (speculate, keep_order, choices.get("resume", False), choices.get("only_new", False))
    if not all(isinstance(choice, bool) for choice in yes_no):
        raise UsageError("speculate, keep_order, resume and only_new are yes or no")
    journal_path = choices.get("journal")
    if journal_path is not None and not (
        isinstance(journal_path, str) and os.path.isabs(journal_path)
    ):
        raise UsageError(f"journal: {journal_path!r} is not an absolute path")
    priority = choices.get("priority", 1)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
        raise UsageError(f"priority: {priority!r} is not a whole number of 1 or more")
    halt = HaltPolicy.parse(choices.get("halt") if isinstance(choices.get("halt"), str) else None)
    policy = RunPolicy(retries, timeout, speculate)
    Timeout.parse(timeout)  # a bad one is its own one-line refusal, here rather than mid-run
    return RunOptions(
        journal, resume=resume, halt=halt, batch_size=total, keep_order=keep_order, policy=policy,
        priority=priority, mark_delivered=False,  # marked once an attach has sent it
    )  # fmt: skip


def _open_joblog(path: str, *, resumed: bool) -> TextIO | None:
    """The run's --joblog, which its client made (its header written, with the client's
    permissions and umask), opened to add a line per attempt. Not there any more at a restore:
    the run goes on without it (one line in the pool's log)."""
    try:
        return open(path, "a", encoding="utf-8", newline="")  # closed at the run's end
    except OSError as exc:
        if not resumed:
            raise UsageError(f"cannot write joblog {path}: {exc.strerror}") from None
        log.warning(f"the joblog {path} cannot be written: {exc.strerror}")
        return None


def _host_row(label: str, state: HostState) -> dict[str, Any]:
    """One host as `anet pool` shows it."""
    return {
        "host": label, "state": str(state.state), "slots": state.slots, "running": state.running,
        "done": state.done, "note": state.held or state.error or "",
    }  # fmt: skip


def _packed_commands(commands: object) -> bytes | None:
    """The library's commands as kept on disk, or None when they are not a list of bytes."""
    if not isinstance(commands, list) or not all(isinstance(c, bytes) for c in commands):
        return None
    return msgpack.packb(commands, use_bin_type=True)


def _write_atomically(path: Path, data: bytes) -> None:
    """Whole or not at all, 0600: a pool killed mid-write leaves the old file or none."""
    part = path.with_name(path.name + ".part")
    with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(data)  # whole: a bare os.write may write less (over 2 GiB it always does)
        file.flush()
        os.fsync(file.fileno())
    os.replace(part, path)


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(creds)[1]
