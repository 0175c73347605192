"""One run of a pool's: its counts, its journal, its joblog, the clients listening to it.

Kept apart from server.py, which takes requests: this is what a run is and keeps on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.engine import RunPolicy
from ..core.halt import HaltPolicy
from ..core.record import JobResult
from ..core.speculation import Timeout
from ..core.spool import OutputCap
from ..errors import UsageError
from ..logs import get_logger
from ..runs import RunOptions
from ..streams.joblog import format_row
from ..streams.journal import AttemptRecord, IdSet, Journal, JournalError

log = get_logger()

LISTENER_LIMIT = 1024
"""Results waiting for one attached client before it is switched to catching up from the journal."""


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


@dataclass(slots=True)
class HostTally:
    """One host's part in one run, as the end summary shows it."""

    jobs: int = 0  # final results that came from it
    failed_attempts: int = 0  # exited non-zero, killed or timed out
    ended: int = 0  # attempts that ended with an exit
    busy: float = 0.0  # their summed run times

    def attempt(self, record: AttemptRecord) -> None:
        if record.exit_code is None and record.signal is None:
            return  # lost with its host: it did not end here
        self.ended += 1
        self.busy += record.runtime
        self.failed_attempts += record.exit_code != 0 and not record.excused

    def row(self) -> list[Any]:
        """jobs, failed attempts, mean run time (None before any ended)."""
        return [self.jobs, self.failed_attempts, self.busy / self.ended if self.ended else None]


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
    hosts: dict[str, HostTally] = field(default_factory=dict)
    """This run's own numbers by host (the hosts' own counters are every run's), for the
    summary `anet BATCH` prints through a pool: as a standalone run counts, since it began."""
    tried: IdSet = field(default_factory=IdSet)  # the jobs it made an attempt of
    rerunning: bool = False  # resumed and under way: its journal's failures run again
    given: IdSet = field(default_factory=IdSet)  # the ids of the results it gave (`arrived`)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "running"
    halted: bool = False  # --halt stopped it before the batch was done
    done: int = 0
    failed: int = 0
    task: asyncio.Task[None] | None = None
    listeners: set[Listener] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "state": self.state, "done": self.done,
            "failed": self.failed, "total": self.total, "started": self.started,
            "halted": self.halted,
        }  # fmt: skip

    def arrived(self, result: JobResult) -> None:
        self.given.add(result.id)
        if result.id in self.tried:  # run now, not an earlier run's success given again
            self.hosts.setdefault(result.host, HostTally()).jobs += 1
        self.done += 1
        self.failed += not result.ok
        for listener in self.listeners:
            listener.put(result)

    def end(self, state: str, end_file: Path) -> None:
        self.state = state
        self.finished = time.time()
        self.close_joblog()
        with contextlib.suppress(OSError):  # unwritten, the next pool resumes the run: no loss
            write_atomically(end_file, json.dumps(self.row()).encode())
        self.ended.set()
        for listener in self.listeners:
            listener.put(None)

    def attempted(self, record: AttemptRecord, command: bytes) -> None:
        """One ended attempt of this run: counted for its summary, and a line of its --joblog
        (written as `anet run` writes it)."""
        self.tried.add(record.job_id)
        self.hosts.setdefault(record.host, HostTally()).attempt(record)
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
        """Every final result of this run the journal holds now that the run has given
        (`arrived`), in id order (committed first). Until the run has given a job's result,
        the journal's is not to be sent yet: the journal takes each result as it arrives, before
        --keep-order releases it (sent now, a later job would come before an earlier one), or
        it is an earlier run's (a resumed run gives its earlier successes again, all or with
        --only-new those never delivered, and runs its failures again). Once a run that was not
        resumed has ended, every stored result is its own (even one this pool never saw: a run
        that ended before it started)."""
        journal.flush()
        if self.ended.is_set() and not self.rerunning:
            return journal.results_from(0)
        given = self.given
        return (r for r in journal.results_from(0, own_only=True) if r.id in given)

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


def run_options(
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
    policy = RunPolicy(retries, timeout, speculate, _caps(choices.get("caps", [])))
    Timeout.parse(timeout)  # a bad one is its own one-line refusal, here rather than mid-run
    return RunOptions(
        journal, resume=resume, halt=halt, batch_size=total, keep_order=keep_order, policy=policy,
        priority=priority, mark_delivered=False,  # marked once an attach has sent it
    )  # fmt: skip


def _caps(caps: object) -> tuple[OutputCap, ...]:
    """--max-output's and the output format's caps as the client computed them (the pool's
    run kills a job past them as a standalone run would)."""
    if not isinstance(caps, list) or not all(
        isinstance(cap, list)
        and len(cap) == 3
        and isinstance(cap[0], int)
        and not isinstance(cap[0], bool)
        and cap[0] >= 0
        and isinstance(cap[1], str)
        and isinstance(cap[2], bool)
        for cap in caps
    ):
        raise UsageError(f"caps: {caps!r} are not output caps")
    return tuple(OutputCap(*cap) for cap in caps)


def open_joblog(path: str, *, resumed: bool) -> TextIO | None:
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


def write_atomically(path: Path, data: bytes) -> None:
    """Whole or not at all, 0600: a pool killed mid-write leaves the old file or none."""
    part = path.with_name(path.name + ".part")
    with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(data)  # whole: a bare os.write may write less (over 2 GiB it always does)
        file.flush()
        os.fsync(file.fileno())
    os.replace(part, path)
