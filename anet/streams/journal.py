"""The durable record of a batch run, so killing the master loses no finished result (invariant 3).

One SQLite file per batch: a `meta` table says which batch it belongs to (a fingerprint of the
batch file's bytes), `results` holds every job's final `JobResult`, `attempts` logs every try.
`anet --resume` reads it back: the ids that succeeded are skipped, their results re-emitted.

Exactly once across a stop of the master rests on one order, kept by the writer of stdout:
a result is *committed* here before any byte of it is written, and marked *delivered* once the
kernel has taken all its bytes (`mark_delivered`, committed with the next group commit).
`--resume --only-new` then writes the results that were committed but never delivered, and runs
only the jobs that have no success here. A stop the master handles (Ctrl-C, TERM, HUP, an error)
commits its last marks, so nothing is lost or repeated; a kill -9 can only repeat the results
written since the last commit, never lose one. docs/formats.md says what a consumer can rely on.

An output the master spooled (past spool.SPOOL_AT, a megabyte) is kept beside the journal, in
its folder `<journal>.outputs/` (0700), as the file `<id>.out` or `<id>.err`: the spool's own file,
given a name there (a hard link: no byte copied), or a copy made in the kernel where a link
cannot be made (another file system). Copying a gigabyte into SQLite instead wrote it twice
(the WAL, then the checkpoint) through Python, halving a big output's speed. The row's `chunked`
column says where each output is (FILE_OUT, FILE_ERR: in the folder; 1: in `output_chunks`,
as results held in memory past INLINE_OUTPUT still are, since SQLite refuses a value over about
1 GB). The folder goes with the journal, and with its outputs (retention.py).

This module knows the tables and their columns: `Journal` writes them and reads back what
a resume needs; `JournalReader` (journalreader.py) reads them read-only for `anet status` and
`anet report`, while a run writes or after (anet/views/stats.py turns its rows into what those
show). The one exception is retention.py, which empties the outputs of a finished run (and says
so in `meta`, under OUTPUTS_DROPPED): the readers of outputs here then refuse with one line, not
empty results.

One run at a time per journal: `open` takes an exclusive lock beside the file (flock on
`<journal>.lock`), so a second run of the same batch gets a clear error, not a shared journal.

Writes are group commits: `record()` only buffers, and the buffer is committed when it is full or
when the master calls `flush()` (on a timer, and at exit). In WAL mode with `synchronous=NORMAL` a
commit is a write to the WAL without fsync, so thousands of results per second cost a handful of
small transactions, and a committed result survives `kill -9` of the master (the OS has the
pages); only a power cut can take the last commits, as it would any unsynced file.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import fields, replace
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from .._version import __version__
from ..core.batch import NUMBERING, numbered_alike
from ..core.record import JobResult, SpooledResult
from ..core.spool import Output, Spool, keep, opened, pieces
from ..errors import UsageError

SCHEMA_VERSION = 2
"""2: outputs may be files in the journal's folder. An older anet (which reads 1 only) refuses
such a journal in one line rather than read those outputs as empty."""
_READABLE = frozenset({"1", str(SCHEMA_VERSION)})
APPLICATION_ID = 0x414E4554  # "ANET" in the SQLite header: tells our journal from any database
BATCH_SIZE = 500
"""Results per group commit; beyond a few hundred the per-commit cost is already negligible."""
MAX_PENDING_BYTES = 16 << 20
"""Buffered output that forces a commit, so big outputs cannot pile up in memory (invariant 4)."""
_READ_PAGE = 64
"""Results per query while streaming them back: bounded memory even with large outputs."""
INLINE_OUTPUT = 64 << 20
"""Output bytes (stdout + stderr) a result row holds itself; beyond, it goes to output_chunks."""
CHUNK = 16 << 20
"""Bytes per output_chunks row: far below SQLite's 1 GB limit on one value."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE results (
    id INTEGER PRIMARY KEY, ok INTEGER NOT NULL, exit_code INTEGER, signal INTEGER,
    host TEXT NOT NULL, attempts INTEGER NOT NULL, duration REAL NOT NULL,
    stdout BLOB NOT NULL, stderr BLOB NOT NULL, error TEXT,
    delivered INTEGER NOT NULL DEFAULT 0, chunked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE attempts (
    job_id INTEGER NOT NULL, attempt INTEGER NOT NULL, host TEXT NOT NULL, start REAL NOT NULL,
    runtime REAL NOT NULL, exit_code INTEGER, signal INTEGER, bytes_out INTEGER NOT NULL,
    excused INTEGER NOT NULL DEFAULT 0
);
"""
_HOST_EVENTS = """CREATE TABLE IF NOT EXISTS host_events (
    time REAL NOT NULL, host TEXT NOT NULL, event TEXT NOT NULL, detail TEXT
);"""
"""Hosts joining, lost, back, given up: `anet report`'s timeline. Added after schema version 1
shipped, so opening any journal creates it if missing rather than bumping the version."""
_OUTPUT_CHUNKS = """CREATE TABLE IF NOT EXISTS output_chunks (
    id INTEGER NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS output_chunks_key ON output_chunks (id, stream, seq);"""
"""The pieces of outputs too big for one SQLite value (stream 1 = stdout, 2 = stderr)."""
_ADDED_COLUMNS = {
    "delivered": "INTEGER NOT NULL DEFAULT 1",
    "chunked": "INTEGER NOT NULL DEFAULT 0",
}
"""Result columns added after schema version 1 shipped, with the value older rows get: an older
anet wrote each result before committing it, so its results count as delivered."""
_EXCUSED = "excused INTEGER NOT NULL DEFAULT 0"
"""The attempts column added after schema version 1 shipped: polite mode's kills, no failure."""
_FIELDS = [field.name for field in fields(JobResult)]  # the results columns, in this order
_COLUMNS = ", ".join(_FIELDS)
_AS_ROW = attrgetter(*_FIELDS)  # one C call per result: a tuple to bind, no dict, no copy
_STORED = [*_FIELDS, "delivered", "chunked"]
# A success is final: a later failure for the same id (which resume never causes, since it skips
# successes) must not erase it; any other later result replaces the earlier one. A new result is
# never delivered yet; `chunked` is the last value bound.
_UPSERT_RESULT = (
    f"INSERT INTO results ({', '.join(_STORED)}) VALUES ({', '.join('?' * len(_FIELDS))}, 0, ?)"
    f" ON CONFLICT (id) DO UPDATE SET ({', '.join(_STORED)})"
    f" = ({', '.join(f'excluded.{c}' for c in _STORED)})"
    " WHERE excluded.ok OR NOT results.ok"
)
_MARK_DELIVERED = "UPDATE results SET delivered = 1 WHERE id = ?"
_INSERT_CHUNK = "INSERT INTO output_chunks VALUES (?, ?, ?, ?)"
IN_CHUNKS, FILE_OUT, FILE_ERR = 1, 2, 4
"""`results.chunked`: the outputs are in `output_chunks` (IN_CHUNKS, both), or stdout / stderr
is a file in the journal's folder (FILE_OUT, FILE_ERR; the other one is in the row)."""
_SELECT = f"SELECT {_COLUMNS}, chunked FROM results"
_INSERT_ATTEMPT = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_HOST_EVENT = "INSERT INTO host_events VALUES (?, ?, ?, ?)"
OUTPUTS_DROPPED = "outputs_dropped"
"""Meta key, set (to a UTC time) once retention.py dropped the outputs of a finished run."""


class JournalError(UsageError):
    """The journal cannot be created, read or written; the message names its path, one line."""


class JournalBusy(JournalError):
    """Another anet run holds the journal (the same batch, running now)."""


class IdSet:
    """A set of non-negative job ids, one bit each, in 1 KiB pages allocated on first use.

    A million succeeded jobs in a Python `set` of ints cost ~60 MB; here they cost ~130 KB.
    Paging keeps a lone large id (up to 2**32-1 and beyond) from costing a bitmap up to it.
    """

    __slots__ = ("_len", "_pages")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._pages: dict[int, bytearray] = {}  # page number -> 1024 bytes = 8192 ids
        self._len = 0
        for job_id in ids:
            self.add(job_id)

    def add(self, job_id: int) -> None:
        if job_id < 0:
            raise ValueError(f"job ids are non-negative, not {job_id}")
        byte, mask = job_id >> 3, 1 << (job_id & 7)
        page = self._pages.get(byte >> 10)
        if page is None:
            page = self._pages[byte >> 10] = bytearray(1024)
        if not page[byte & 1023] & mask:
            page[byte & 1023] |= mask
            self._len += 1

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, int) or job_id < 0:
            return False
        page = self._pages.get(job_id >> 13)
        return page is not None and bool(page[(job_id >> 3) & 1023] >> (job_id & 7) & 1)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        """Ascending ids."""
        for page_no in sorted(self._pages):
            base = page_no << 13
            for index, byte in enumerate(self._pages[page_no]):
                if byte:
                    yield from (base + index * 8 + b for b in range(8) if byte >> b & 1)


class JournalSummary(NamedTuple):
    """Final results so far, for status displays."""

    succeeded: int
    failed: int


class Failure(NamedTuple):
    """A failed job as `anet status` lists it."""

    id: int
    host: str
    duration: float
    error: str | None  # anet's own explanation, if any
    stderr: bytes  # its last bytes only
    exit_code: int | None
    signal: int | None


class AttemptRecord(NamedTuple):
    """One try of a job, as a GNU-parallel-style joblog would show it."""

    job_id: int
    attempt: int
    host: str
    start: float  # Unix time
    runtime: float
    exit_code: int | None
    signal: int | None
    bytes_out: int
    excused: bool = False  # not a failure: killed by polite mode, its copy's win or a halt


def fingerprint_batch(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of the batch file's bytes, read in chunks: resume must not run another batch."""
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as exc:
        raise UsageError(f"cannot read batch file {os.fspath(path)!r}: {one_line(exc)}") from None


def default_journal_path(batch_path: str | os.PathLike[str], environ: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/anet/journals/<name>-<8 hex>.sqlite`: the hash of the absolute batch path
    keeps two `batch.txt` in different directories apart; the name keeps the file recognisable."""
    absolute = Path(batch_path).resolve()
    tag = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:8]
    return journals_dir(environ) / f"{absolute.name}-{tag}.sqlite"


def journals_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/anet/journals`: where the default journals live (and retention looks)."""
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is invalid and ignored
        home = environ.get("HOME") or str(Path.home())
        state = os.path.join(home, ".local", "state")
    return Path(state, "anet", "journals")


def outputs_dir(path: Path) -> Path:
    """The folder beside a journal holding its spooled outputs as files."""
    return path.with_name(f"{path.name}.outputs")


def kept_path(path: Path, job_id: int, flag: int) -> Path:
    """The file of journal `path` holding a kept output of `job_id` (FILE_OUT: its stdout,
    FILE_ERR: its stderr)."""
    return outputs_dir(path) / f"{job_id}.{'out' if flag == FILE_OUT else 'err'}"


def one_line(exc: BaseException) -> str:
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _make_private_dirs(directory: Path) -> None:
    """`mkdir -p` with mode 0700 for every directory it creates: journals hold job outputs."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        with suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(each, 0o700)


def is_journal_file(path: Path) -> bool:
    """From the SQLite header alone, so a stranger's file is never opened (or changed) by SQLite."""
    with open(path, "rb") as stream:
        header = stream.read(100)
    if not header:
        return True  # an empty file is an empty database; nothing to lose
    app_id = int.from_bytes(header[68:72], "big") if len(header) == 100 else None
    return header.startswith(b"SQLite format 3\x00") and app_id == APPLICATION_ID


def create_journal(path: Path, fingerprint: str, batch_path: str | os.PathLike[str]) -> None:
    """Write a fresh journal beside `path`, then rename it over any old one.

    Built in rollback-journal mode, so its header (with APPLICATION_ID) is in the main file
    before WAL mode is switched on; the rename means a crash leaves the old journal or the new
    one, never half of either. The old WAL and shm files go first: SQLite would replay a stale
    WAL onto the new file.
    """
    if path.exists() and not is_journal_file(path):
        raise UsageError(f"{path} exists and is not an anet journal; remove it or choose another")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # -wal/-shm follow
    try:
        with closing(sqlite3.connect(tmp, isolation_level=None)) as db:
            # Unsynced while it is built (a file nobody uses yet); synced once, whole, before
            # the rename: three syncs fewer, 20 ms less at every start on this box. OFF comes
            # first: the application id written before it was a synced transaction (4 syncs).
            db.executescript(
                f"PRAGMA synchronous = OFF; PRAGMA application_id = {APPLICATION_ID};"
                f" BEGIN; {_SCHEMA} {_HOST_EVENTS} {_OUTPUT_CHUNKS}"
            )
            meta = {
                "fingerprint": fingerprint,
                "batch_path": os.fspath(Path(batch_path).resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "anet_version": __version__,
                "schema_version": str(SCHEMA_VERSION),
                "job_ids": NUMBERING,
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode = WAL")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The old journal's outputs, after it is replaced: a crash in between leaves files no row
    # points at, never a row whose file is gone.
    shutil.rmtree(outputs_dir(path), ignore_errors=True)


class Journal:
    """An open journal; `Journal.open` makes one. Not thread-safe: the master's loop owns it."""

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        meta: dict[str, str],
        batch_size: int,
        lock: int | None = None,
    ) -> None:
        self.path = path
        self.meta = meta
        """What `open` found: fingerprint, batch_path, created, anet_version, schema_version,
        job_ids (the numbering rule)."""
        self._db = db
        self._lock = lock
        self._batch_size = batch_size
        self._results: list[tuple[Any, ...]] = []
        self._chunked: list[JobResult] = []
        self._delivered: list[tuple[int]] = []
        self._attempts: list[AttemptRecord] = []
        self._host_events: list[tuple[float, str, str, str | None]] = []
        self._pending_bytes = 0
        self._broken: JournalError | None = None
        self._closed = False
        self._has_folder = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        fingerprint: str,
        batch_path: str | os.PathLike[str],
        *,
        resume: bool,
        batch_size: int = BATCH_SIZE,
        what: str = "batch file",
    ) -> Journal:
        """Start a fresh journal (replacing an old one), or with `resume` reopen the existing one,
        which must belong to the same batch file contents (`what` names them in the refusal).
        JournalBusy while another run has it."""
        path = Path(path)
        if resume and not os.path.lexists(path):
            raise UsageError(f"no journal to resume at {path}; run without --resume")
        lock: int | None = None
        try:
            if not resume:
                _make_private_dirs(path.parent)
            lock = lock_journal(path)
            if not resume:
                create_journal(path, fingerprint, batch_path)
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            unlock_journal(lock)
            raise JournalError(f"cannot create journal {path}: {one_line(exc)}") from None
        except BaseException:
            unlock_journal(lock)
            raise
        try:
            meta = check_meta(db, path)
            if resume and meta.get("fingerprint") != fingerprint:
                raise UsageError(
                    f"the {what} changed since the journal {path} was written;"
                    " run without --resume to start over"
                )
            if resume and meta.get("job_ids") != NUMBERING and not numbered_alike(batch_path):
                raise UsageError(
                    f"the journal {path} numbered the jobs as an older anet did;"
                    " run without --resume to start over"
                )
            db.execute("PRAGMA journal_mode = WAL")  # kept in the file; set again in case
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA journal_size_limit = {64 << 20}")  # shrink the WAL after bursts
            migrate(db)
            if not resume:
                _warm(db, meta)
            if meta["schema_version"] != str(SCHEMA_VERSION):  # resumed: may now keep files
                meta["schema_version"] = str(SCHEMA_VERSION)
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (meta["schema_version"],),
                )
        except sqlite3.Error as exc:
            db.close()
            unlock_journal(lock)
            raise JournalError(f"cannot open journal {path}: {one_line(exc)}") from None
        except BaseException:
            db.close()
            unlock_journal(lock)
            raise
        return cls(path, db, meta, batch_size, lock)

    # -- writing ----------------------------------------------------------------------------

    def record(self, result: JobResult) -> None:
        """Buffer a final result; it is durable after the next commit (see `flush`)."""
        size = result.output_size
        if size > INLINE_OUTPUT or result.spooled:  # a spool is copied in chunks, never read whole
            self._chunked.append(result)
        else:
            self._results.append((*_AS_ROW(result), 0))
        self._pending_bytes += size
        self._flush_if_full()

    async def record_spooled(self, result: JobResult) -> None:
        """`record` for a result with a spooled output: each spooled stream's file is kept in
        the journal's folder (linked, or copied in a thread: the event loop runs on), then the
        row is buffered like any result's, committed by the next flush.

        A kill before that commit leaves a file no row points at yet, which the job's next
        result (a --resume runs it again) replaces; a failed result already in the journal for
        the id may then read that newer output, never a success (a success recorded for the id
        is never touched, as `_UPSERT_RESULT` keeps it)."""
        if self._broken is not None:
            raise self._broken
        try:
            if self._db.execute(
                "SELECT 1 FROM results WHERE id = ? AND ok", (result.id,)
            ).fetchone():
                return
            where = 0
            for flag, output in ((FILE_OUT, result.out), (FILE_ERR, result.err)):
                path = self._output_path(result.id, flag)
                if isinstance(output, Spool):
                    await asyncio.to_thread(keep, output, path)
                    where |= flag
                else:  # an earlier result's file: never read for this one, and its room back
                    path.unlink(missing_ok=True)
        except (OSError, sqlite3.Error) as exc:
            self._broken = JournalError(f"cannot write journal {self.path}: {one_line(exc)}")
            raise self._broken from None
        inline = replace(
            result,
            stdout=b"" if where & FILE_OUT else result.out,
            stderr=b"" if where & FILE_ERR else result.err,
        )
        self._results.append((*_AS_ROW(inline), where))
        self._flush_if_full()

    def _output_path(self, job_id: int, flag: int) -> Path:
        """Where to keep an output of `job_id` (`kept_path`); the folder made (0700) on
        first use."""
        if not self._has_folder:
            _make_private_dirs(outputs_dir(self.path))
            self._has_folder = True
        return kept_path(self.path, job_id, flag)

    def mark_delivered(self, job_id: int) -> None:
        """The whole of this job's result reached stdout (the kernel took its bytes): a resume
        with --only-new must not write it again. Committed with the next group commit."""
        self._delivered.append((job_id,))
        if len(self._delivered) >= self._batch_size:
            self.flush()

    def record_attempt(self, attempt: AttemptRecord) -> None:
        """Buffer one try of a job for the joblog; committed with the results."""
        self._attempts.append(attempt)
        self._flush_if_full()

    def record_host_event(self, when: float, host: str, event: str, detail: str | None) -> None:
        """Buffer a host's change of state (Unix time `when`); committed with the results."""
        self._host_events.append((when, host, event, detail))
        self._flush_if_full()

    @property
    def broken(self) -> bool:
        """A commit failed: every later write raises the same error."""
        return self._broken is not None

    @property
    def unflushed(self) -> bool:
        """Results recorded but not committed yet: they must not reach stdout before a flush."""
        return bool(self._results or self._chunked)

    def _flush_if_full(self) -> None:
        pending = len(self._results) + len(self._chunked) + len(self._attempts)
        full = pending >= self._batch_size or self._pending_bytes >= MAX_PENDING_BYTES
        if full or self._broken or self._closed:  # misuse and breakage fail loudly, at once
            self.flush()

    def flush(self) -> None:
        """Commit everything buffered in one transaction: what returns from here survives kill -9.

        A failed commit (disk full, file gone read-only) leaves the journal unusable: every later
        write raises the same one-line error, rather than pretending results are kept.
        """
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise RuntimeError("the journal is closed")
        buffers = (self._results, self._chunked, self._delivered, self._attempts, self._host_events)
        if not any(buffers):
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_UPSERT_RESULT, self._results)
            for result in self._chunked:
                self._write_chunked(result)
            self._db.executemany(_MARK_DELIVERED, self._delivered)
            self._db.executemany(_INSERT_ATTEMPT, self._attempts)
            self._db.executemany(_INSERT_HOST_EVENT, self._host_events)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self._broken = JournalError(f"cannot write journal {self.path}: {one_line(exc)}")
            raise self._broken from None
        finally:
            for buffer in buffers:
                buffer.clear()
            self._pending_bytes = 0

    def _write_chunked(self, result: JobResult) -> None:
        """A result whose output is too big for one row: the row, then its output in pieces."""
        row = (*_AS_ROW(replace(result, stdout=b"", stderr=b"")), 1)
        if self._db.execute(_UPSERT_RESULT, row).rowcount == 0:
            return  # a success already stands for this id
        self._db.execute("DELETE FROM output_chunks WHERE id = ?", (result.id,))
        for stream, output in ((1, result.out), (2, result.err)):
            self._db.executemany(
                _INSERT_CHUNK,
                (
                    (result.id, stream, seq, piece)
                    for seq, piece in enumerate(pieces(output, CHUNK))
                ),
            )

    def close(self) -> None:
        """Flush and close; idempotent. After a failed flush it only closes."""
        if self._closed:
            return
        try:
            if self._broken is None:
                self.flush()
        finally:
            self._closed = True
            self._db.close()
            unlock_journal(self._lock)
            self._lock = None

    @contextmanager
    def last_words(self) -> Iterator[sqlite3.Connection]:
        """The journal's own connection, everything buffered committed first, for what
        retention.py writes at the end of the run that holds it (`settle_own`): written here,
        it is synced by the close's checkpoint with the rest, where a connection of its own
        cost a lock, a read of the file and four syncs after the close. A failure there makes
        the journal broken, as a failed commit does (the close then only closes)."""
        self.flush()
        try:
            yield self._db
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self._broken = JournalError(f"cannot write journal {self.path}: {one_line(exc)}")
            raise self._broken from None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # flushes even on Ctrl-C: results that finished are worth keeping

    # -- reading (each flushes first, so it sees everything recorded) --------------------------

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        self.flush()
        try:
            yield self._db
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {one_line(exc)}") from None

    def succeeded_ids(self) -> IdSet:
        """Ids of the jobs that succeeded: those `--resume` must not run again."""
        ids = IdSet()
        with self._reading() as db:
            for (job_id,) in db.execute("SELECT id FROM results WHERE ok"):
                ids.add(job_id)
        return ids

    def succeeded_results(self, *, undelivered: bool = False) -> Iterator[JobResult]:
        """Stored successes in id order, a page at a time, so a resume can re-emit them all
        without holding them all; with `undelivered`, only those that never reached stdout
        (what `--resume --only-new` owes its consumer)."""
        if not undelivered:  # a finished run owes nothing: those always read as none
            self._check_outputs()
        which = "ok AND NOT delivered" if undelivered else "ok"
        return self._results_where(f"{which} AND id > ?")

    def results_from(self, first: int, *, own_only: bool = False) -> Iterator[JobResult]:
        """Stored results with id >= `first`, in id order, a page at a time (for --keep-order:
        results waiting for an earlier job are read back from here, not held in memory).
        `own_only`: the caller keeps only the results its own run recorded (a pool's resumed
        run), so a journal whose earlier outputs retention dropped is no refusal."""
        if not own_only:
            self._check_outputs()
        return self._results_where("id > ?", first - 1)

    def _check_outputs(self) -> None:
        """One line, at the call, rather than results whose outputs read as empty."""
        if OUTPUTS_DROPPED in self.meta:
            raise JournalError(
                f"the outputs of journal {self.path} were dropped once its run had finished and"
                " delivered them all (journal retention); --resume --only-new has nothing to"
                " write, or run the batch again without --resume"
            )

    def _results_where(self, where: str, after: int = -1) -> Iterator[JobResult]:
        query = f"{_SELECT} WHERE {where} ORDER BY id LIMIT ?"
        for row in self._paged(query, after):
            kept = row[-1]
            if kept == IN_CHUNKS:
                out, err = self._chunks(row[0])
            elif kept:
                out = self._kept(row[0], FILE_OUT) if kept & FILE_OUT else row[7]
                err = self._kept(row[0], FILE_ERR) if kept & FILE_ERR else row[8]
            else:
                yield JobResult(row[0], bool(row[1]), *row[2:7], row[7], row[8], row[9])
                continue
            yield SpooledResult(row[0], bool(row[1]), *row[2:7], out, err, row[9])  # type: ignore[arg-type]

    def _kept(self, job_id: int, flag: int) -> Spool:
        """An output kept as a file in the journal's folder, open as a spool (nothing copied)."""
        path = kept_path(self.path, job_id, flag)
        try:
            return opened(path)
        except OSError as exc:
            raise JournalError(
                f"cannot read journal {self.path}: the output of job {job_id} ({path.name}):"
                f" {one_line(exc)}"
            ) from None

    def _chunks(self, job_id: int) -> tuple[Output, Output]:
        """A chunked result's stdout and stderr, copied into spools a chunk at a time: a
        resumed or reordered result of gigabytes never sits whole in memory either."""
        spools: list[Spool | None] = [None, None]
        with self._reading() as db:
            query = "SELECT stream, data FROM output_chunks WHERE id = ? ORDER BY stream, seq"
            for stream, data in db.execute(query, (job_id,)):
                spool = spools[stream - 1]
                if spool is None:
                    spool = spools[stream - 1] = Spool()
                spool.write(data)
        out, err = spools
        return out if out is not None else b"", err if err is not None else b""

    def summary(self) -> JournalSummary:
        """How many jobs have a final result, by outcome."""
        with self._reading() as db:
            return read_summary(db)

    def attempts(self) -> Iterator[AttemptRecord]:
        """Every recorded try, in the order recorded (across resumed runs too)."""
        query = "SELECT rowid, * FROM attempts WHERE rowid > ? ORDER BY rowid LIMIT ?"
        return (AttemptRecord(*row[1:]) for row in self._paged(query))

    def _paged(self, query: str, after: int = -1) -> Iterator[tuple[Any, ...]]:
        """Rows of `query` (keyed on its first column) by pages of _READ_PAGE: memory stays
        bounded, and no statement stays open between yields while the master writes."""
        while True:
            with self._reading() as db:
                rows = db.execute(query, (after, _READ_PAGE)).fetchall()
            yield from rows
            if len(rows) < _READ_PAGE:
                return
            after = rows[-1][0]


def read_summary(db: sqlite3.Connection) -> JournalSummary:
    total, succeeded = db.execute("SELECT count(*), total(ok) FROM results").fetchone()
    return JournalSummary(int(succeeded), total - int(succeeded))


def lock_journal(path: Path) -> int:
    """Hold `<journal>.lock` exclusively for the run; its text names the holder's pid.

    A separate file, because a fresh journal is renamed over the old one (a lock on the old
    inode would not keep a second run out), and flock because SQLite's own locks are fcntl
    locks that come and go with each transaction. Retention removes a journal with its lock
    file while holding the lock: a lock taken on a file no longer at `lock_path` is taken again.
    """
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise JournalBusy(
            f"journal {path} is in use by another anet run of this batch{who};"
            " wait for it, or give this run its own --journal FILE (or --no-journal)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    if not _still_at(fd, lock_path):  # removed (`anet journals clean`) before our flock
        os.close(fd)
        return lock_journal(path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _still_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one at `path` (not removed or replaced)."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def unlock_journal(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


def migrate(db: sqlite3.Connection) -> None:
    """Tables and columns added since schema version 1, created where an older anet left none."""
    db.execute(_HOST_EVENTS)
    db.executescript(_OUTPUT_CHUNKS)
    have = {row[1] for row in db.execute("PRAGMA table_info(results)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")
    if "excused" not in {row[1] for row in db.execute("PRAGMA table_info(attempts)")}:
        db.execute(f"ALTER TABLE attempts ADD COLUMN {_EXCUSED}")


def _warm(db: sqlite3.Connection, meta: dict[str, str]) -> None:
    """A fresh journal's first commit, at its open: when the run opened it (`opened`).

    The first commit of a connection creates the WAL and syncs its header and the folder (two
    syncs, SQLite's own, whatever `synchronous` says short of OFF); made by the first result's
    commit, they stood between that result and its bytes on stdout. At the open, they overlap
    the hosts' handshakes and the dispatchers' boots.
    """
    meta["opened"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    db.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)", (meta["opened"],))


def check_meta(db: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The journal's meta, once it is sure the file is an anet journal this anet can read."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta")) if app_id == APPLICATION_ID else {}
    except sqlite3.DatabaseError as exc:  # "file is not a database", "no such table", locked...
        raise UsageError(f"{path} is not a readable anet journal: {one_line(exc)}") from None
    if app_id != APPLICATION_ID:
        raise UsageError(f"{path} is not an anet journal")
    if meta.get("schema_version") not in _READABLE:
        raise UsageError(
            f"journal {path} has schema version {meta.get('schema_version')}, this anet reads"
            f" {SCHEMA_VERSION}; run without --resume to start over"
        )
    return meta
