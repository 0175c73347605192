"""What anet keeps of its default journals, so the state directory does not grow for ever.

Every `anet run BATCH` keeps a journal under `$XDG_STATE_HOME/anet/journals` holding every
job's output: one run printing 300 MB left a 300 MB journal, and nothing ever removed one. The
policy (docs/guide.md, "Journal retention"):

- *A finished run keeps its job table, not its outputs.* When every job of the batch succeeded
  and every result was delivered (the kernel took its bytes), the outputs are dropped: the
  journal is replaced by a copy without them. What stays is what `anet status`, `anet report`
  and `--resume` read: ids, exit codes, hosts, times, attempts, host events. `--resume
  --only-new` finds everything done and owed nothing; a plain `--resume`, which would write
  every earlier output again, says in one line that they were dropped. A run with a failed
  job, an unfinished one, or a result it still owes keeps everything: `--resume` retries the
  failures and writes the earlier outputs first.
- *Caps:* at most `keep` journals and `max_size` bytes, the most recent first; beyond them the
  oldest go, whole.
- *Never removed automatically:* a journal a run holds (its flock on `<journal>.lock`), one
  that owes results (`--resume --only-new` needs them), the journal of the run that just
  ended, and any `--journal FILE` (this module only looks in the default directory).

The settings are environment variables, as anet's other settings are (ANET_HOSTS,
ANET_PROGRESS): ANET_JOURNALS_KEEP, ANET_JOURNALS_MAX_SIZE, ANET_JOURNALS_KEEP_OUTPUTS.

The retention step at the end of a run must never fail the run: `after_run` turns any failure
(a read-only or full file system) into one warning. The journal module owns the schema; the
few statements that drop outputs live here, beside the policy that decides when.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..core.batch import count_jobs
from ..errors import AnetError, UsageError
from ..logs import get_logger
from .journal import (
    APPLICATION_ID,
    OUTPUTS_DROPPED,
    Journal,
    JournalBusy,
    JournalError,
    check_meta,
    create_journal,
    is_journal_file,
    lock_journal,
    migrate,
    one_line,
    outputs_dir,
    unlock_journal,
)
from .journalreader import JournalReader

log = get_logger()

DEFAULT_KEEP = 20
"""Journals kept: enough to resume or inspect the last few days of anyone's batches."""
DEFAULT_MAX_SIZE = 1 << 30
"""Bytes all default journals may take: its outputs dropped, a finished run's journal takes about
a hundred bytes per job, so this binds on unfinished runs with big outputs."""
JOBS_TOTAL = "jobs_total"
"""Meta key: jobs in the batch, recorded at the end of a run, so a journal still tells
complete from interrupted once its batch file changed or is gone."""
SUFFIXES = ("", "-wal", "-shm")
"""A journal's files besides its lock: SQLite's write-ahead log and shared memory."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The retention settings: None means no such cap."""

    keep: int | None = DEFAULT_KEEP
    max_size: int | None = DEFAULT_MAX_SIZE
    drop_outputs: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Policy:
        """ANET_JOURNALS_KEEP (a count, or `off`), ANET_JOURNALS_MAX_SIZE (a size such as
        `500M`, or `off`), ANET_JOURNALS_KEEP_OUTPUTS (`1` keeps finished runs' outputs)."""
        keep = _setting(environ, "ANET_JOURNALS_KEEP", DEFAULT_KEEP, _count, "a number of journals")
        size = _setting(environ, "ANET_JOURNALS_MAX_SIZE", DEFAULT_MAX_SIZE, parse_size, "a size")
        outputs = environ.get("ANET_JOURNALS_KEEP_OUTPUTS", "").strip()
        if outputs not in ("", "0", "1"):
            raise UsageError(f"ANET_JOURNALS_KEEP_OUTPUTS takes 0 or 1, not {outputs!r}")
        return cls(keep, size, outputs != "1")


def run_policy(own_journal: bool, environ: Mapping[str, str]) -> Policy | None:
    """The policy a run's end applies to its default journal; None for a run that names its
    own journal (`--journal FILE`, never touched) or keeps none. Read before the run, so a bad
    setting is said before any job runs."""
    return None if own_journal else Policy.from_environ(environ)


def _setting(
    environ: Mapping[str, str],
    name: str,
    default: int,
    parse: Callable[[str], int],
    what: str,
) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if text.lower() == "off":
        return None
    try:
        return parse(text)
    except ValueError:
        raise UsageError(f"{name} takes {what} or 'off', not {text!r}") from None


def _count(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


def parse_size(text: str) -> int:
    """`512`, `4k`, `1.5G`, `2GiB`, `3 MB` -> bytes; units are powers of 1024. ValueError else."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    power = " kmgt".index(match[2].lower() or " ")
    return int(float(match[1]) * 1024**power)


def parse_age(text: str) -> float:
    """`30s`, `90m`, `12h`, `7d`, `2w` -> seconds; a bare number counts days. ValueError else."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an age: {text!r}")
    return float(match[1]) * _AGE_UNITS[match[2].lower()]


# -- what a journal is now ------------------------------------------------------------------------


@dataclass(slots=True)
class JournalInfo:
    """One default journal as `anet journals` lists it; `state` says what it is."""

    path: Path
    size: int  # bytes of the journal, its WAL and shared memory
    modified: float  # Unix time of its last write
    holder: int | None = None  # pid of the run that holds it (0: a run, pid unknown); None: none
    batch: str = "?"
    done: int = 0  # jobs with a final result
    failed: int = 0
    owed: int = 0  # successes never delivered: what --resume --only-new would write
    total: int | None = None  # jobs in the batch, if known
    dropped: bool = False  # the outputs are gone, the job table stays
    recorded: bool = False  # the batch size is in the journal
    problem: str | None = None  # why it could not be read

    @property
    def state(self) -> str:
        """running, complete (every job has a final result), interrupted, damaged, unknown."""
        if self.holder is not None:
            return "running"
        if self.problem is not None:
            return "damaged"
        if self.total is None:
            return "unknown"
        return "complete" if self.done >= self.total else "interrupted"

    @property
    def finished(self) -> bool:
        """Nothing left for a resume to run or write: its outputs can go."""
        return self.state == "complete" and not self.failed and not self.owed


def look(
    path: Path, *, count_batch: bool = True, total: int | None = None, probe: bool = True
) -> JournalInfo:
    """What `path` holds, read-only (a run may be writing it). The batch size is `total`, or
    the one recorded, or with `count_batch` counted if the batch file is still as it was.
    `probe=False` when the caller holds the lock itself."""
    info = JournalInfo(path, _disk_size(path), _modified(path), _holder(path) if probe else None)
    try:
        with _reading(path, idle=info.holder is None and not _wal_size(path)) as reader:
            _read_into(info, reader, total, count_batch)
    except (AnetError, sqlite3.Error) as exc:
        info.problem = one_line(exc)
    return info


def _read_into(info: JournalInfo, reader: JournalReader, total: int | None, count: bool) -> None:
    """What `look` reads from the journal: its counts, and the batch size (`total`, else the
    one recorded, else with `count` counted if the batch file is still as it was)."""
    info.batch = reader.meta.get("batch_path", "?")
    succeeded, info.failed = reader.summary()
    info.done = succeeded + info.failed
    info.owed = reader.owed()
    info.dropped = OUTPUTS_DROPPED in reader.meta
    recorded = reader.meta.get(JOBS_TOTAL, "")
    info.recorded = recorded.isdigit()
    if total is None and info.recorded:
        total = int(recorded)
    if total is None and count and (batch := reader.batch_unchanged()):
        with suppress(OSError, AnetError):
            total = count_jobs(batch)
    info.total = total


@contextmanager
def _reading(path: Path, *, idle: bool) -> Iterator[JournalReader]:
    """`JournalReader.open`, or for an idle journal (no run holds it, its WAL holds nothing) a
    read of the file as immutable: SQLite's read-only open of a WAL database leaves an empty
    WAL and a 32 KiB shared-memory file beside it, which a survey would do to every journal.
    A run that starts meanwhile writes its WAL or a new file, never this file under a read
    that takes milliseconds; at worst the read fails and the journal shows as damaged once."""
    if not idle:
        with JournalReader.open(path) as reader:
            yield reader
        return
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            raise UsageError(f"{path} is not an anet journal")
        yield JournalReader(path, db)


def _wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except OSError:
        return 0


def survey(directory: Path, *, count_batch: bool = True) -> list[JournalInfo]:
    """The default journals in `directory`, the most recently written first."""
    found = [look(path, count_batch=count_batch) for path in _journal_files(directory)]
    return sorted(found, key=lambda info: info.modified, reverse=True)


def _journal_files(directory: Path) -> Iterator[Path]:
    """anet journals only (by their SQLite header): a stranger's file there is left alone."""
    try:
        candidates = sorted(directory.glob("*.sqlite"))
    except OSError:
        return
    for path in candidates:
        with suppress(OSError):
            if not path.name.startswith(".") and path.is_file() and is_journal_file(path):
                yield path


def _disk_size(path: Path) -> int:
    """The journal's files and the outputs kept in its folder."""
    size = 0
    for suffix in SUFFIXES:
        with suppress(OSError):
            size += os.stat(f"{path}{suffix}").st_size
    return size + _folder_size(outputs_dir(path))


def _folder_size(folder: Path) -> int:
    size = 0
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with suppress(OSError):
                size += entry.stat(follow_symlinks=False).st_size
    return size


def _modified(path: Path) -> float:
    """The last write: a WAL not yet checkpointed is newer than the main file. An empty WAL
    says nothing: a read-only reader (`anet status`, this module) creates one."""
    times = [0.0]
    for suffix in ("", "-wal"):
        with suppress(OSError):
            stat = os.stat(f"{path}{suffix}")
            if stat.st_size or not suffix:
                times.append(stat.st_mtime)
    return max(times)


def _holder(path: Path) -> int | None:
    """The pid of the run holding `path` (0 if it wrote none), or None.

    Probed with a shared flock, released at once: a run starting in that instant would be told
    the journal is busy, a window of microseconds that a listing accepts. Removal takes the
    exclusive lock itself (`remove`), so it never relies on this answer.
    """
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)
    return None


# -- dropping outputs, removing journals ----------------------------------------------------------


def settle(path: Path, policy: Policy, total: int | None = None) -> int:
    """Record the batch size (once), and drop the outputs if the run is finished (every job
    succeeded, every result delivered). Bytes freed. JournalBusy if a run holds it; JournalError
    (one line, naming the path) if it cannot be written.

    The file's time of last write is put back afterwards: it says when the batch last ran,
    which the listing shows and the caps go by, and bookkeeping is not a run.
    """
    lock = _taken(path)
    try:
        info = look(path, total=total, probe=False)  # under our lock: no run changes it now
        record, drop = _to_settle(info, policy)
        if info.problem is not None or not (record or drop):
            return 0
        with closing(sqlite3.connect(path, isolation_level=None, timeout=5.0)) as db:
            check_meta(db, path)
            if drop:  # an older journal's columns first, with the values its rows stand for
                migrate(db)
            copy = drop and _holds_outputs(db, path)
            if not copy:  # the batch size, and the drop of outputs that are all empty
                _stamp(db, info.total if record else None, dropped=drop)
        if copy:  # the copy has the batch size and the drop written into it
            _without_outputs(path, info.modified, info.total if record else None)
        else:
            os.utime(path, (time.time(), info.modified))
        return max(0, info.size - _disk_size(path))
    except (OSError, sqlite3.Error) as exc:
        raise _cannot(path, exc) from None
    finally:
        unlock_journal(lock)


def _to_settle(info: JournalInfo, policy: Policy) -> tuple[bool, bool]:
    """Whether to record the batch size (known, not recorded yet), and to drop the outputs
    (the run is finished, the policy drops them, and they were not dropped already)."""
    record = info.total is not None and not info.recorded
    return record, policy.drop_outputs and info.finished and not info.dropped


def settle_own(journal: Journal, policy: Policy, total: int | None) -> bool:
    """`settle` by the run that holds `journal`, before it closes it: the batch size and the
    drop are written in the run's own connection, under the lock it holds, synced by the
    close's checkpoint with its results. As a step of its own after the close, the same stamp
    took the lock again, a read of the file, a connection and four syncs (its WAL's creation
    and checkpoint): most of a one-job run's end.

    True when the journal is settled (or there was nothing to do); False when its outputs are
    to be dropped by the copy, which only `settle` makes, once the journal is closed, or when
    this failed (`settle` then tries, and says why in one line if it fails too).
    """
    if journal.broken:
        return False
    try:
        with journal.last_words() as db:
            info = JournalInfo(journal.path, 0, 0.0)
            _read_into(info, JournalReader(journal.path, db), total, count=True)
            record, drop = _to_settle(info, policy)
            if drop and _holds_outputs(db, journal.path):
                return False
            if record or drop:
                _stamp(db, info.total if record else None, dropped=drop)
    except (AnetError, OSError, sqlite3.Error):
        return False
    return True


def _holds_outputs(db: sqlite3.Connection, path: Path) -> bool:
    """Whether the journal keeps any output byte (in a result row, in output_chunks, or in
    its outputs folder). When it keeps none (jobs that printed nothing: `true`, `sleep`),
    the copy that frees a big journal's pages frees nothing, and its fresh file, syncs and
    rename were most of a one-job run's exit (20-40 ms of the last 50): a stamp does."""
    query = (
        "SELECT EXISTS (SELECT 1 FROM results WHERE length(stdout) OR length(stderr) OR chunked)"
        " OR EXISTS (SELECT 1 FROM output_chunks)"
    )
    if db.execute(query).fetchone()[0]:
        return True
    with suppress(OSError), os.scandir(outputs_dir(path)) as entries:
        return any(entries)
    return False


def _stamp(db: sqlite3.Connection, total: int | None, *, dropped: bool) -> None:
    """The batch size and the drop, written into the journal in place, in one transaction;
    not synced at its commit (WAL, synchronous NORMAL: the close's checkpoint syncs it, and
    a stamp lost to a crash is written again by the next clean-up)."""
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    if total is not None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (JOBS_TOTAL, total))
    if dropped:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (OUTPUTS_DROPPED, stamp))
    db.execute("COMMIT")


def _taken(path: Path) -> int:
    """The journal's lock, as a run takes it. JournalBusy if a run holds it."""
    try:
        return lock_journal(path)
    except OSError as exc:
        raise _cannot(path, exc) from None


def _cannot(path: Path, exc: BaseException) -> JournalError:
    return JournalError(f"cannot clean up journal {path}: {one_line(exc)}")


def _without_outputs(path: Path, modified: float, total: int | None = None) -> None:
    """Replace the journal by a copy of it without outputs (and with the batch's `total`, when
    it is to be recorded), under the caller's lock.

    A copy, not a DELETE: freeing a 300 MB output page by page and vacuuming took 4 s, while
    the copy costs in proportion to the job table. Made as a fresh journal (journal.py's
    schema, so a table added there is copied too), then every table but the output chunks
    copied in by the columns both have, outputs emptied; renamed over the old file as
    `create_journal` does (its WAL read into the copy first, then removed, never replayed onto it).
    The copy is written unsynced and synced once, whole, before the rename, as `create_journal`
    builds a journal: until the rename nobody uses it, and a crash leaves the old journal.
    A one-job run's end made 24 syncs (strace), most of them here.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.lean")
    try:
        create_journal(tmp, "", path)
        with closing(sqlite3.connect(tmp, isolation_level=None, timeout=5.0)) as db:
            db.execute("PRAGMA synchronous = OFF")
            db.execute("ATTACH DATABASE ? AS old", (os.fspath(path),))
            db.execute("BEGIN IMMEDIATE")
            for table in _tables(db, "old") & _tables(db, "main") - {"output_chunks"}:
                _copy_table(db, table)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (OUTPUTS_DROPPED, stamp))
            if total is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (JOBS_TOTAL, total))
            db.execute("COMMIT")
            db.execute("DETACH DATABASE old")
        _sync(tmp)  # the closed copy's WAL is in it by now: what the rename publishes is on disk
        for suffix in SUFFIXES[1:]:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.utime(tmp, (time.time(), modified))
        os.replace(tmp, path)
    finally:
        for suffix in SUFFIXES:
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(outputs_dir(path), ignore_errors=True)  # after: no row points at them now


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_EMPTIED = {"stdout": "x''", "stderr": "x''", "chunked": "0"}
"""What the copy of `results` holds in place of the outputs."""


def _tables(db: sqlite3.Connection, schema: str) -> set[str]:
    query = f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
    return {name for (name,) in db.execute(query)}


def _copy_table(db: sqlite3.Connection, table: str) -> None:
    """`old.table` into `main.table` by the columns both have, rowids kept (the attempts are
    read back in rowid order); the outputs of `results` emptied."""
    main = [row[1] for row in db.execute(f"PRAGMA main.table_info({table})")]
    old = {row[1] for row in db.execute(f"PRAGMA old.table_info({table})")}
    columns = [column for column in main if column in old]
    values = [_EMPTIED.get(c, c) for c in columns] if table == "results" else list(columns)
    query = "SELECT sql FROM main.sqlite_master WHERE name = ?"
    if "WITHOUT ROWID" not in db.execute(query, (table,)).fetchone()[0].upper():
        columns.insert(0, "rowid")
        values.insert(0, "rowid")
    db.execute(f"DELETE FROM main.{table}")  # a fresh journal's own meta: the old one's instead
    db.execute(
        f"INSERT INTO main.{table} ({', '.join(columns)})"
        f" SELECT {', '.join(values)} FROM old.{table}"
    )


def remove(path: Path) -> int | None:
    """Remove a journal with its WAL, shared memory and lock; bytes freed, or None if a run
    holds it. The lock is held while the files go, so no run starts on a half-removed journal
    (and a run that opened the lock file just before sees it gone: journal.py `lock_journal`)."""
    try:
        lock = _taken(path)
    except JournalBusy:
        return None
    try:
        freed = _folder_size(outputs_dir(path))
        shutil.rmtree(outputs_dir(path), ignore_errors=True)
        for each in [f"{path}{suffix}" for suffix in SUFFIXES] + [f"{path}.lock"]:
            with suppress(FileNotFoundError):
                size = os.stat(each).st_size
                os.unlink(each)
                freed += size
        return freed
    except OSError as exc:
        raise _cannot(path, exc) from None
    finally:
        unlock_journal(lock)


def _remove_orphan_locks(directory: Path) -> None:
    """Lock files whose journal is gone (a run that could not create it), unless held."""
    with suppress(OSError):
        for lock in directory.glob("*.sqlite.lock"):
            journal = lock.with_name(lock.name.removesuffix(".lock"))
            if not journal.exists():
                remove(journal)


def over_caps(infos: list[JournalInfo], policy: Policy) -> Iterator[JournalInfo]:
    """The journals beyond the caps, oldest last: past the `keep` most recent, or past
    `max_size` counting from the most recent (a journal kept anyway still takes its room)."""
    used = 0
    for rank, info in enumerate(infos):
        used += info.size
        beyond_count = policy.keep is not None and rank >= policy.keep
        beyond_size = policy.max_size is not None and used > policy.max_size
        if beyond_count or beyond_size:
            yield info


def _within_caps(directory: Path, policy: Policy) -> bool:
    """Whether the journals fit the caps, so that `over_caps` would find none: told by their
    number and their files' sizes, which `survey` then adds up the same way, without reading
    any journal (a survey opened every journal kept, twenty by default, at every run's end)."""
    paths = list(_journal_files(directory))
    if policy.keep is not None and len(paths) > policy.keep:
        return False
    return policy.max_size is None or sum(map(_disk_size, paths)) <= policy.max_size


def protected(info: JournalInfo, spare: Path | None) -> bool:
    """Never removed automatically: the current run's, a running one, one that owes results."""
    return info.path == spare or info.holder is not None or info.owed > 0


def enforce(directory: Path, policy: Policy, spare: Path | None = None) -> list[JournalInfo]:
    """Remove the journals beyond the caps, unless protected; those removed. JournalError at
    the first one that cannot be removed."""
    if _within_caps(directory, policy):  # nothing to remove: no journal need be read
        _remove_orphan_locks(directory)
        return []
    infos = survey(directory, count_batch=False)
    removed = []
    for info in over_caps(infos, policy):
        if not protected(info, spare) and remove(info.path) is not None:
            removed.append(info)
    _remove_orphan_locks(directory)
    return removed


def after_run(path: Path, policy: Policy, total: int | None, *, settled: bool = False) -> None:
    """The retention step of a run that used its default journal at `path`: settle it (unless
    the run did, `settle_own`), then apply the caps to its directory. Never raises: a failure
    is one warning, the run's result stands."""
    try:
        freed = 0 if settled else settle(path, policy, total)
        removed = enforce(path.parent, policy, spare=path)
    except JournalBusy:
        return  # another run of this batch started meanwhile: its own end settles it
    except (AnetError, OSError, sqlite3.Error) as exc:
        log.warning(f"{one_line(exc)}; journals left as they are")
        return
    if freed:
        log.info(f"journal: outputs dropped, job table kept ({_mib(freed)} freed)", path=str(path))
    if removed:
        gone = _mib(sum(info.size for info in removed))
        log.info(f"journals: removed {len(removed)} beyond the limits ({gone})")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


# -- `anet journals clean` ------------------------------------------------------------------------


@dataclass(slots=True)
class Cleaning:
    """What a clean did: journals removed, journals whose outputs were dropped, busy ones kept,
    one-line errors, and the bytes freed."""

    removed: list[JournalInfo] = field(default_factory=list)
    dropped: list[JournalInfo] = field(default_factory=list)
    busy: list[JournalInfo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    freed: int = 0


def clean(
    directory: Path,
    policy: Policy,
    *,
    everything: bool = False,
    older_than: float | None = None,
    now: float | None = None,
) -> Cleaning:
    """With `everything` or `older_than` (seconds), remove those journals (never a running
    one); otherwise apply the policy now, as the end of a run does."""
    if everything or older_than is not None:
        cutoff = None if everything else (now or time.time()) - (older_than or 0)
        return _remove_all(directory, cutoff)
    done = Cleaning()
    for info in survey(directory):
        if info.holder is not None:
            continue
        with _noting(done):
            freed = settle(info.path, policy, info.total)
            if freed:
                done.dropped.append(info)
                done.freed += freed
    with _noting(done):
        removed = enforce(directory, policy)
        done.removed += removed
        done.freed += sum(info.size for info in removed)
    return done


def _remove_all(directory: Path, cutoff: float | None) -> Cleaning:
    done = Cleaning()
    for info in survey(directory):
        if cutoff is not None and info.modified >= cutoff:
            continue
        with _noting(done):
            freed = remove(info.path)
            if freed is None:
                done.busy.append(info)
            else:
                done.removed.append(info)
                done.freed += freed
    _remove_orphan_locks(directory)
    return done


@contextmanager
def _noting(done: Cleaning) -> Iterator[None]:
    """A journal's failure becomes a line in `done.errors`, and the clean goes on with the
    next one (JournalBusy: a run took it meanwhile, nothing to say)."""
    try:
        yield
    except JournalBusy:
        pass
    except (AnetError, OSError, sqlite3.Error) as exc:
        done.errors.append(one_line(exc))
