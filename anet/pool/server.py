"""The pool's side: one open `Cluster`, the runs its clients submitted, and a unix socket.

Every connection is one request (see `Pool.handle`): `ping`, `submit`, `ls`, `attach`, `wait`,
`cancel`, `progress` (a run's host rows, for its command's progress view), `add`, `drain`,
`down`. Only the owner gets an answer: the socket lives in a 0700 directory
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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from ..api import Cluster, HostState
from ..core.batch import as_jobs, read_batch
from ..core.record import JobResult
from ..deps.manifest import Tree, scan_deps, start_scan
from ..errors import AnetError, UsageError
from ..logs import get_logger
from ..remote.hosts import parse_spec
from ..runs import RunOptions, RunPlan
from ..streams.journal import IdSet, JournalError
from ..streams.retention import remove
from . import wire
from .hostset import HostChanges
from .place import Place
from .run import Listener, PoolRun, RunJournal, open_joblog, run_options, write_atomically

log = get_logger()

KINDS = ("batch", "commands")
"""What a submit carries, and the suffix its run's file has on disk."""
SETTLE_TIMEOUT = 60.0
"""Seconds `anet up` and `anet pool add` wait for their hosts to be ready (or failed)."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client has, once connected, to send its request."""
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class Pool:
    """The daemon: `serve` until a `down` request or a cancel."""

    def __init__(
        self,
        place: Place,
        cluster: Cluster,
        *,
        keep_runs: int | None = None,
        changes: HostChanges | None = None,
    ) -> None:
        self.place = place
        self.cluster = cluster
        self.changes = changes or HostChanges(place.hosts_file)
        """Hosts added and drained, kept for the next pool of this name."""
        self.keep_runs = keep_runs
        self.runs: dict[int, PoolRun] = {}
        self._next_id = 1
        self._stop = asyncio.Event()
        self._resume_later = False
        self._stopping = False  # `anet down --wait` waits for the runs: it takes no new one
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
            self._trim()
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

    def _trim(self) -> None:
        """Forget the ended runs beyond the newest `keep_runs` (those under way are never
        counted): no longer listed, their kept files and the pool's own journal removed. A
        run's journal kept for its batch (`anet BATCH` through the pool) is the journals
        directory's, trimmed by its own retention."""
        if self.keep_runs is None:
            return
        ended = [run for run in self.runs.values() if run.ended.is_set()]
        for run in sorted(ended, key=lambda r: r.id)[: max(0, len(ended) - self.keep_runs)]:
            if run.listeners:  # an attach still reads it: the next trim takes it
                continue
            del self.runs[run.id]
            run.close_journal()
            for kind in (*KINDS, "name", "options", "end"):
                self._file(run.id, kind).unlink(missing_ok=True)
            if run.path == self.place.journal(run.id):
                with contextlib.suppress(AnetError, OSError):
                    remove(run.path)
            log.info(f"run {run.id}: forgotten (ANET_JOURNALS_KEEP={self.keep_runs})")

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
            reply = self._submit(request, await _scan(request))
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
        elif op == "progress":  # for the progress view of `anet BATCH` through the pool
            reply = {"hosts": self._progress(self._run(request))}
        elif op == "add":
            reply = await self._add(request)
        elif op == "drain":
            reply = await self._drain(request)
        elif op == "down":
            if request.get("wait"):  # `anet down --wait`: the runs under way end first
                self._stopping = True
                await asyncio.gather(*(run.ended.wait() for run in list(self.runs.values())))
            self.stop()
            reply = {"down": True}
        else:
            reply = {"error": f"unknown request {op!r}"}
        writer.write(wire.pack(reply))
        await writer.drain()

    async def _add(self, request: dict[str, Any]) -> dict[str, Any]:
        """More hosts (`anet pool add`): each in the pool at once, the reply once each is
        ready or failed (within SETTLE_TIMEOUT, as `anet up` waits)."""
        labels = []
        for spec in _specs(request):
            labels.append(self.cluster.add_host(parse_spec(spec)))
            self.changes.add(spec)  # one by one: a refused later one leaves this one added
        log.info(f"hosts added: {', '.join(labels)}")
        await settle(self.cluster, labels)
        return {"hosts": [_host_row(label, self.cluster.hosts[label]) for label in labels]}

    async def _drain(self, request: dict[str, Any]) -> dict[str, Any]:
        """Hosts let go (`anet pool drain`), each once its running jobs have ended: the pool
        goes on without them (a client that leaves meanwhile does not stop the drain)."""
        labels = [parse_spec(spec).label for spec in _specs(request)]
        for label in labels:
            if label not in self.cluster.hosts:
                raise UsageError(f"{label} is not in the pool")
        log.info(f"draining: {', '.join(labels)}")
        for label in labels:  # gone for the next pool of this name too, even if killed now
            self.changes.drain(label)
        drains = [asyncio.shield(self.cluster.drain_host(label)) for label in labels]
        await asyncio.gather(*drains)
        log.info(f"drained: {', '.join(labels)}")
        return {"drained": labels}

    def _run(self, request: dict[str, Any]) -> PoolRun:
        run = self.runs.get(request.get("run"))  # type: ignore[arg-type]
        if run is None:
            raise _NoSuchRun(request.get("run"))
        return run

    def _submit(self, request: dict[str, Any], tree: Tree | None = None) -> dict[str, Any]:
        """A batch file's bytes (`batch`: its lines numbered as a batch file's), or the
        library's `commands` (every one a job, numbered by position), and a `name`; `tree`,
        its deps as scanned (`_scan`)."""
        if self._stopping:
            return {"error": "the pool is stopping (anet down --wait): it takes no new run"}
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
            run_options(choices, None)  # a mistake is refused here, before anything is kept
            if isinstance(choices.get("joblog"), str):
                joblog = open_joblog(choices["joblog"], resumed=False)
                if joblog is not None:
                    joblog.close()
            write_atomically(self._file(run_id, "name"), name.encode())
            write_atomically(self._file(run_id, "options"), json.dumps(choices).encode())
            write_atomically(self._file(run_id, kind), data)  # last: the run exists now
            try:
                run = self._start(run_id, kind, data, name, None, restoring=False, tree=tree)
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
        tree: Tree | None = None,
    ) -> PoolRun:
        """The run, under way with its journal open, unless `ended` (its last row) says it
        has ended. Its journal is resumed (its successes not run again) when the submit asked
        (--resume), or, `restoring` an earlier pool's run, when it is on disk. Its deps are
        `tree` (scanned at the submit), else scanned again (a restore)."""
        try:
            choices = json.loads(self._file(run_id, "options").read_bytes())
        except FileNotFoundError:  # kept by a pool from before per-run options
            choices = {}
        kept = choices.get("journal")
        path = Path(kept) if isinstance(kept, str) else self.place.journal(run_id)
        # as a standalone run's: its file's, or for a command and its sources the client's
        fingerprint = choices.get("fingerprint")
        if not isinstance(fingerprint, str):
            fingerprint = hashlib.sha256(data).hexdigest()
        if kind == "batch":
            jobs = list(read_batch(io.BytesIO(data)))
        else:
            jobs = list(as_jobs(msgpack.unpackb(data)))
        if ended is not None:
            run = PoolRun(run_id, name, len(jobs), path, fingerprint, None, RunOptions())
            run.started, run.done, run.failed = ended["started"], ended["done"], ended["failed"]
            run.state, run.halted = str(ended["state"]), bool(ended.get("halted"))
            run.ended.set()
            self.runs[run_id] = run
            return run
        resume = path.exists() if restoring else choices.get("resume") is True
        # a restored run gives all its earlier results again: its clients attach from the start
        only_new = choices.get("only_new") is True and not restoring
        what = choices.get("what") if choices.get("what") == "inputs" else "batch file"
        journal = RunJournal.open(path, fingerprint, name, resume=resume, what=what)
        try:
            options = run_options(choices, journal, resume=resume, total=len(jobs))
            deps = _deps_path(choices)
            if deps is not None:  # a restore scans them again, as `--resume` would
                options = dataclasses.replace(options, deps=tree or start_scan(deps, os.environ))
            options = dataclasses.replace(options, only_new=only_new)
            run = PoolRun(run_id, name, len(jobs), path, fingerprint, journal, options)
            run.identity = (os.stat(path).st_ino, journal.meta.get("created"))
            run.options = dataclasses.replace(options, attempts=run.attempted)
            if isinstance(choices.get("joblog"), str):
                run.joblog = open_joblog(choices["joblog"], resumed=restoring)
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
        plan = RunPlan(jobs, run.options)
        try:
            async for result in self.cluster.run(plan):
                run.arrived(result)
            run.halted = plan.halted  # --halt stopped it: its client says so as standalone
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
                self._trim()
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
                    for frame in wire.result_frames(result):  # a big output in chunks
                        writer.write(frame)
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
                last["summary"] = self._summary(run)
            run.listeners.discard(listener)
            if not run.listeners:  # closed (its marks committed) before the client hears the
                run.close_journal()  # end: its retention step may take the journal at once
            writer.write(wire.pack(last))
            await writer.drain()
        finally:
            run.listeners.discard(listener)
            if run.ended.is_set() and not run.listeners:
                run.close_journal()

    def _summary(self, run: PoolRun) -> dict[str, Any]:
        """What the end summary of `anet BATCH` through the pool shows: the run's wall time,
        and each host of the pool (its state and slots now) with the run's own numbers."""
        numbers = {host: tally.row() for host, tally in run.hosts.items()}
        hosts = [
            [label, str(state.state), state.slots, *numbers.pop(label, [0, 0, None])]
            for label, state in self.cluster.hosts.items()
        ]  # then hosts the run used that the pool no longer has (drained since)
        hosts += [[label, "drained", 0, *row] for label, row in numbers.items()]
        wall = (run.finished or time.time()) - run.started
        return {"wall": wall, "hosts": hosts}

    def _progress(self, run: PoolRun) -> list[list[Any]]:
        """The summary's rows now, each with the jobs running on its host (every run's: the
        pool does not count them per run)."""
        hosts = self.cluster.hosts
        return [
            [*row, hosts[row[0]].running if row[0] in hosts else 0]
            for row in self._summary(run)["hosts"]
        ]


class _NoSuchRun(AnetError):
    def __init__(self, run_id: object) -> None:
        super().__init__(f"no run {run_id!r} in this pool")


async def settle(cluster: Cluster, labels: Iterable[str]) -> None:
    """Connect the hosts and wait, within SETTLE_TIMEOUT, until each is ready or failed."""
    cluster.connect()

    async def one(label: str) -> None:
        with contextlib.suppress(AnetError):
            await cluster.ready_session(label)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await asyncio.gather(*(one(label) for label in labels))


async def _scan(request: dict[str, Any]) -> Tree | None:
    """A submit's deps folder, scanned before the run is kept (in a thread: a big tree is
    hashed meanwhile); its DepsError or a bad path is the client's one line."""
    choices = request.get("options")
    deps = _deps_path(choices) if isinstance(choices, dict) else None
    return None if deps is None else await asyncio.to_thread(scan_deps, deps, os.environ)


def _deps_path(choices: dict[str, Any]) -> str | None:
    """The run's deps folder (or file): an absolute path on this machine, as the client made
    it (a trailing slash kept: rsync's rule), read by the pool, which runs as the same user."""
    deps = choices.get("deps")
    if deps is not None and not (isinstance(deps, str) and os.path.isabs(deps)):
        raise UsageError(f"deps: {deps!r} is not an absolute path")
    return deps


def _specs(request: dict[str, Any]) -> list[str]:
    hosts = request.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise UsageError("give one or more host specs")
    return hosts


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


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(creds)[1]
