"""Numbers about a run, read from its journal: what `anet status` prints and `anet report` draws.

The journal is opened read-only (`mode=ro`), so this works while the batch still runs: SQLite's
WAL lets a reader see every committed result without blocking the master. Aggregates are
computed in SQL or by streaming rows: a journal of millions of attempts is never loaded whole.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .batch import open_batch, read_batch
from .errors import UsageError
from .journal import APPLICATION_ID, JournalError, fingerprint_batch
from .printable import printable

LISTED = 20
"""Failed and slowest jobs listed."""
TIME_BUCKETS = 60
"""Columns of the throughput-over-time plot."""
HISTOGRAM_BINS = 30


@dataclass(frozen=True, slots=True)
class HostStats:
    """One host over the whole journal."""

    host: str
    done: int  # final results it gave
    failed: int  # of those, failures
    attempts: int
    failed_attempts: int
    busy: float  # summed attempt run times
    first: float | None  # Unix time of its first attempt's start
    last: float | None  # and of its last attempt's end

    @property
    def mean(self) -> float | None:
        return self.busy / self.attempts if self.attempts else None


@dataclass(frozen=True, slots=True)
class JobLine:
    """A job in a list of failed or slow ones."""

    id: int
    host: str
    runtime: float
    why: str = ""


@dataclass(slots=True)
class RunStats:
    """Everything `status` and `report` show."""

    path: Path
    meta: dict[str, str]
    total: int | None  # jobs in the batch, when the batch file is still there, unchanged
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    start: float | None = None
    end: float | None = None
    hosts: list[HostStats] = field(default_factory=list)
    failed_jobs: list[JobLine] = field(default_factory=list)
    slowest: list[JobLine] = field(default_factory=list)
    events: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    bucket: float = 1.0  # seconds per throughput column
    throughput: dict[str, list[int]] = field(default_factory=dict)  # host -> jobs per column
    histogram: list[tuple[float, float, int]] = field(default_factory=list)  # (low, high, count)

    @property
    def wall(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


@contextmanager
def open_readonly(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """The journal for reading only; one-line errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no journal at {path}")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from None
    with closing(db):
        try:
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                raise UsageError(f"{path} is not an anet journal")
            yield db
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot read journal {path}: {exc}") from None


def _batch_total(meta: dict[str, str]) -> int | None:
    """Jobs in the batch, if its file is still there with the bytes the journal was made for."""
    batch = meta.get("batch_path")
    if not batch or not os.path.isfile(batch):
        return None
    try:
        if fingerprint_batch(batch) != meta.get("fingerprint"):
            return None
        with open_batch(batch) as stream:
            return sum(1 for _ in read_batch(stream))
    except (OSError, UsageError):
        return None


def _why(error: str | None, tail: bytes | None, exit_code: int | None, signal: int | None) -> str:
    if error:  # anet's words, maybe quoting a host's: escaped, as everything a host says
        return printable(" ".join(error.split()))
    for line in reversed((tail or b"").splitlines()):
        if line.strip():
            return printable(line.decode("utf-8", "replace").strip()[:200])
    return f"signal {signal}" if signal is not None else f"exit {exit_code}"


def load(path: str | os.PathLike[str], *, count_batch: bool = True) -> RunStats:
    """Read the journal's numbers (and, with `count_batch`, the batch size)."""
    with open_readonly(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        stats = RunStats(Path(path), meta, _batch_total(meta) if count_batch else None)
        row = db.execute("SELECT count(*), total(ok) FROM results").fetchone()
        stats.succeeded, stats.failed = int(row[1]), row[0] - int(row[1])
        row = db.execute(
            "SELECT count(*), min(start), max(start + runtime) FROM attempts"
        ).fetchone()
        stats.attempts, stats.start, stats.end = row
        stats.hosts = _hosts(db)
        stats.failed_jobs = [
            JobLine(i, h, d, _why(e, t, c, s))
            for i, h, d, e, t, c, s in db.execute(
                "SELECT id, host, duration, error, substr(stderr, -400), exit_code, signal"
                " FROM results WHERE NOT ok ORDER BY id LIMIT ?",
                (LISTED,),
            )
        ]
        stats.slowest = [
            JobLine(*r)
            for r in db.execute(
                "SELECT job_id, host, runtime FROM attempts WHERE exit_code = 0"
                " ORDER BY runtime DESC LIMIT ?",
                (LISTED,),
            )
        ]
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'host_events'").fetchone():
            stats.events = list(db.execute("SELECT * FROM host_events ORDER BY time"))
        if stats.start is not None:
            _throughput(db, stats)
            stats.histogram = _histogram(db)
    return stats


def _hosts(db: sqlite3.Connection) -> list[HostStats]:
    finals = {
        host: (done, failed)
        for host, done, failed in db.execute(
            "SELECT host, count(*), count(*) - total(ok) FROM results GROUP BY host"
        )
    }
    rows = db.execute(
        "SELECT host, count(*), total(exit_code IS NOT 0), total(runtime), min(start),"
        " max(start + runtime) FROM attempts GROUP BY host ORDER BY host"
    )
    hosts = []
    for host, attempts, failed_attempts, busy, first, last in rows:
        done, failed = finals.pop(host, (0, 0))
        hosts.append(
            HostStats(host, done, int(failed), attempts, int(failed_attempts), busy, first, last)
        )
    for host, (done, failed) in sorted(finals.items()):  # results with no attempt logged
        hosts.append(HostStats(host, done, int(failed), 0, 0, 0.0, None, None))
    return hosts


def _throughput(db: sqlite3.Connection, stats: RunStats) -> None:
    """Successful attempts per host per time column: the primes-per-second-per-computer plot."""
    assert stats.start is not None
    stats.bucket = max(stats.wall / TIME_BUCKETS, 1e-3)
    query = (
        "SELECT host, CAST((start + runtime - ?) / ? AS INTEGER) AS b, count(*) FROM attempts"
        " WHERE exit_code = 0 GROUP BY host, b"
    )
    for host, column, count in db.execute(query, (stats.start, stats.bucket)):
        series = stats.throughput.setdefault(host, [0] * (TIME_BUCKETS + 1))
        series[min(max(column, 0), TIME_BUCKETS)] += count


def _histogram(db: sqlite3.Connection) -> list[tuple[float, float, int]]:
    """Run times of successful attempts in log-spaced bins (job times span orders of magnitude)."""
    low, high = db.execute(
        "SELECT min(runtime), max(runtime) FROM attempts WHERE exit_code = 0 AND runtime > 0"
    ).fetchone()
    if low is None:
        return []
    low, high = math.log10(low), math.log10(high) + 1e-9
    width = max((high - low) / HISTOGRAM_BINS, 1e-6)
    counts = [0] * HISTOGRAM_BINS
    for (runtime,) in db.execute(
        "SELECT runtime FROM attempts WHERE exit_code = 0 AND runtime > 0"
    ):
        counts[min(int((math.log10(runtime) - low) / width), HISTOGRAM_BINS - 1)] += 1
    return [
        (10 ** (low + i * width), 10 ** (low + (i + 1) * width), n) for i, n in enumerate(counts)
    ]
