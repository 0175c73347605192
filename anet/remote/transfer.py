"""Per-job files on the master's side: sent before the job, taken back after it, atomically.

Each Run of a job with files (core/files.py) goes out after a Place frame, and a task then
streams the files in Put frames, each after the host's channel drained (the SSH window): a
chunk of memory per file on its way, whatever its size. The dispatcher holds the Run until
they are whole (dispatcher/jobfiles.py).

Files come back in Back frames before the attempt's Exit. Each is written to a hidden file
beside its target (`.anet-<pid>-<aid>-<i>.part`, in the same folder, so the rename cannot
cross file systems), and on the Exit:

- the attempt gave its job's final result: each file it sent whole is renamed onto its
  target (a file appears whole or not at all), before the result leaves the run;
- else (a failed try that will run again, a copy that lost): its files are removed.

So the winner's files are the ones returned, whatever the retries and copies: each attempt
writes only its own hidden files, and only the attempt whose Exit made the result renames.

Invariant 8: a Back is believed only about an attempt placed on that host, for a file it
asked back, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dispatcher.jobfiles import FILE_CHUNK, Back, Place, Put
from dispatcher.protocol import Message, Run

from ..core.batch import Job
from ..core.files import JobFiles
from ..core.record import JobResult
from ..core.spool import OutputCap
from ..errors import HostError, protocol_error
from ..logs import get_logger
from .feed import SendDrained

log = get_logger()


@dataclass(slots=True)
class _Placed:
    """One attempt with files: where it runs, what it sends back, and how far."""

    host: str
    job: int
    files: JobFiles
    stopped: bool = False  # no more Put: the attempt ended, or the run stops
    at: int = 0  # the file coming back now
    dropping: bool = False  # it could not be written here: its chunks are dropped
    fd: int = -1  # its hidden file
    whole: list[tuple[bytes, bytes]] = field(default_factory=list)  # (hidden, target), whole
    hidden: list[bytes] = field(default_factory=list)  # every hidden file made
    size: int = 0  # bytes sent back so far, all its files
    over: bool = False  # they passed a cap: none is kept, what comes is dropped


class Transfers:
    """The per-job files of one run, by attempt id; the run's Drive places, takes back and
    commits them."""

    def __init__(
        self, send_drained: SendDrained, tasks: asyncio.TaskGroup, caps: Sequence[OutputCap] = ()
    ) -> None:
        self._send_drained = send_drained
        self._tasks = tasks
        self._placed: dict[int, _Placed] = {}
        self._caps = [cap for cap in caps if not cap.stdout_only]
        """--max-output bounds what an attempt sends back as it bounds its output: else a host
        could fill this side's disk with a file it was asked for."""

    def place(
        self, host: str, frames: list[Message], job_of: Callable[[int], Job | None]
    ) -> list[Message]:
        """The frames with a Place before each Run of a job with files; starts their Puts,
        which go out after these frames."""
        out: list[Message] = []
        for msg in frames:
            if type(msg) is Run:
                job = job_of(msg.aid)
                if job is not None and job.files is not None:
                    out.append(self._place(host, msg.aid, job.id, job.files))
            out.append(msg)
        return out

    def _place(self, host: str, aid: int, job: int, files: JobFiles) -> Place:
        placed = self._placed[aid] = _Placed(host, job, files)
        send = [remote for _, remote in files.send]
        back = [remote for remote, _ in files.back]
        if send and not files.error:
            self._tasks.create_task(self._upload(aid, placed))
        return Place(aid, send, back, files.cleanup, files.error)

    async def _upload(self, aid: int, placed: _Placed) -> None:
        """Each file to send, a chunk at a time, each after the channel drained."""
        try:
            for index, (local, _) in enumerate(placed.files.send):
                if not await self._upload_one(aid, index, local, placed):
                    return
        except HostError:
            return  # the host is lost: its attempts go back to the queue

    async def _upload_one(self, aid: int, index: int, local: bytes, placed: _Placed) -> bool:
        try:
            with open(local, "rb", buffering=0) as file:
                mode = os.fstat(file.fileno()).st_mode & 0o777
                while not placed.stopped:
                    data = file.read(FILE_CHUNK)
                    put = Put(aid, index, data, not data, "", mode)
                    await self._send_drained(placed.host, put)
                    if not data:
                        return True
                return False
        except OSError as exc:
            why = f"--transfer: cannot read {os.fsdecode(local)!r}: {exc.strerror or exc}"
            if not placed.stopped:
                await self._send_drained(placed.host, Put(aid, index, b"", True, why))
            return False

    # -- back ---------------------------------------------------------------------------------

    def back(self, host: str, msg: Back) -> None:
        """A chunk of a returned file, written to its hidden file; HostError (permanent)
        when the host was not asked for it."""
        placed = self._placed.get(msg.aid)
        if placed is None or placed.host != host:
            raise protocol_error(host, f"Back about attempt {msg.aid}, not placed on this host")
        backs = placed.files.back
        if msg.index >= len(backs) or msg.index < placed.at:
            raise protocol_error(host, f"Back of file {msg.index} of attempt {msg.aid}, unasked")
        if msg.index > placed.at:  # the ones before could not be sent (said on its stderr)
            self._close(placed)
            placed.at, placed.dropping = msg.index, False
        placed.size += len(msg.data)
        if not placed.over and (cap := self._passed(placed)) is not None:
            log.warning(f"job {placed.job}: its returned files passed {cap.why}; none is kept")
            self._close(placed)
            placed.over = True
        if not placed.dropping and not placed.over:
            try:
                self._write(msg, placed, backs[msg.index][1])
            except OSError as exc:
                target = os.fsdecode(backs[msg.index][1])
                log.warning(f"job {placed.job}: cannot write {target!r}: {exc.strerror or exc}")
                self._close(placed)
                placed.dropping = True
        if msg.last:
            if not placed.dropping and not placed.over:
                placed.whole.append((placed.hidden[-1], backs[msg.index][1]))
            self._close(placed)
            placed.at, placed.dropping = msg.index + 1, False

    def _passed(self, placed: _Placed) -> OutputCap | None:
        return next((cap for cap in self._caps if placed.size > cap.size), None)

    def _write(self, msg: Back, placed: _Placed, target: bytes) -> None:
        if placed.fd < 0:
            folder = os.path.dirname(target)
            if folder:
                os.makedirs(folder, exist_ok=True)
            name = b".anet-%d-%d-%d.part" % (os.getpid(), msg.aid, msg.index)
            hidden = os.path.join(folder, name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            placed.fd = os.open(hidden, flags, 0o666)
            placed.hidden.append(hidden)
        view = memoryview(msg.data)
        while view:
            view = view[os.write(placed.fd, view) :]

    def _close(self, placed: _Placed) -> None:
        if placed.fd >= 0:
            os.close(placed.fd)
            placed.fd = -1

    # -- the end --------------------------------------------------------------------------------

    def ended(self, aid: int, results: Iterable[JobResult]) -> None:
        """The attempt's Exit came, with the final results it brought: its files are its
        job's if one of them is its job's (renamed into place now, before the result leaves),
        else removed."""
        placed = self._placed.pop(aid, None)
        if placed is None:
            return
        placed.stopped = True
        self._close(placed)
        if not placed.over and any(result.id == placed.job for result in results):
            self._commit(placed)
        _remove(placed.hidden)

    def _commit(self, placed: _Placed) -> None:
        """Rename each whole hidden file onto its target; the rest is removed by the caller."""
        for hidden, target in placed.whole:
            try:
                os.replace(hidden, target)
            except OSError as exc:
                why = exc.strerror or exc
                log.warning(f"job {placed.job}: cannot write {os.fsdecode(target)!r}: {why}")

    def host_lost(self, host: str) -> None:
        for aid in [aid for aid, placed in self._placed.items() if placed.host == host]:
            self.ended(aid, ())

    def stop_all(self) -> None:
        """The run is over or stops: no more Puts, and what came back of attempts that did
        not end is removed."""
        for aid in list(self._placed):
            self.ended(aid, ())


def _remove(paths: Iterable[bytes]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
