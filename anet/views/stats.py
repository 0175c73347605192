"""Numbers about a run, read from its journal: what `anet status` prints and `anet report` draws.

The journal is read through `journalreader.JournalReader` (read-only, so this works while the batch
still runs; the journal module alone knows its tables); here the numbers become what is shown.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.batch import count_jobs
from ..errors import UsageError
from ..printable import failure_line
from ..streams.journalreader import JournalReader

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
    status: str = "-"  # "exit 1", "signal 9", or "-" when it never exited (lost, not started)


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
    held: dict[str, dict[str, float]] = field(default_factory=dict)  # host -> why -> seconds

    @property
    def time_held(self) -> float:
        """Seconds polite mode held hosts, summed over the hosts: their slots' time lost."""
        return sum(sum(kinds.values()) for kinds in self.held.values())

    @property
    def wall(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


def load(path: str | os.PathLike[str], *, count_batch: bool = True) -> RunStats:
    """Read the journal's numbers (and, with `count_batch`, the batch size)."""
    with JournalReader.open(path) as journal:
        batch = journal.batch_unchanged() if count_batch else None
        stats = RunStats(Path(path), journal.meta, _count(batch) if batch else None)
        stats.succeeded, stats.failed = journal.summary()
        stats.attempts, stats.start, stats.end = journal.attempt_span()
        stats.hosts = _hosts(journal)
        stats.failed_jobs = [
            JobLine(
                f.id,
                f.host,
                f.duration,
                _why(f.error, f.stderr, f.exit_code, f.signal),
                exit_status(f.exit_code, f.signal),
            )
            for f in journal.failures(LISTED)
        ]
        stats.slowest = [JobLine(*row) for row in journal.slowest_successes(LISTED)]
        stats.events = journal.host_events()
        stats.held = held_times(stats.events, stats.end)
        if stats.start is not None:
            _throughput(journal, stats)
            stats.histogram = _histogram(journal)
    return stats


def held_times(
    events: list[tuple[float, str, str, str | None]], end: float | None
) -> dict[str, dict[str, float]]:
    """Per host, seconds polite mode held it, by why ("loaded", "low memory", "yielding"): from
    each `held` event (its detail is the reason) to the host's next event (`free`, or its
    loss), or to the run's end (`end`, else the last event) for one still held then."""
    last = max([e[0] for e in events] + ([end] if end is not None else []), default=0.0)
    since: dict[str, tuple[float, str]] = {}
    held: dict[str, dict[str, float]] = {}

    def close(host: str, when: float) -> None:
        if host in since:
            start, why = since.pop(host)
            kinds = held.setdefault(host, {})
            kinds[why] = kinds.get(why, 0.0) + max(0.0, when - start)

    for when, host, event, detail in events:  # in time order
        close(host, when)
        if event == "held":
            since[host] = (when, (detail or "held").partition(":")[0])
    for host in list(since):
        close(host, last)
    return held


def _count(batch: str) -> int | None:
    """Jobs in the batch; None if it cannot be read now (the numbers are still worth showing)."""
    try:
        return count_jobs(batch)
    except (OSError, UsageError):
        return None


def _why(error: str | None, tail: bytes | None, exit_code: int | None, signal: int | None) -> str:
    said = failure_line(error, tail)
    return said if said is not None else exit_status(exit_code, signal)


def exit_status(exit_code: int | None, signal: int | None) -> str:
    """How a job's last attempt ended: `exit 1`, `signal 9`, or `-` if it never exited."""
    if signal is not None:
        return f"signal {signal}"
    return "-" if exit_code is None else f"exit {exit_code}"


def _hosts(journal: JournalReader) -> list[HostStats]:
    finals = {host: (done, failed) for host, done, failed in journal.results_by_host()}
    hosts = []
    for host, attempts, failed_attempts, busy, first, last in journal.attempts_by_host():
        done, failed = finals.pop(host, (0, 0))
        hosts.append(HostStats(host, done, failed, attempts, failed_attempts, busy, first, last))
    for host, (done, failed) in sorted(finals.items()):  # results with no attempt logged
        hosts.append(HostStats(host, done, failed, 0, 0, 0.0, None, None))
    return hosts


def _throughput(journal: JournalReader, stats: RunStats) -> None:
    """Successful attempts per host per time column: the primes-per-second-per-computer plot."""
    assert stats.start is not None
    stats.bucket = max(stats.wall / TIME_BUCKETS, 1e-3)
    for host, column, count in journal.successes_per_column(stats.start, stats.bucket):
        series = stats.throughput.setdefault(host, [0] * (TIME_BUCKETS + 1))
        series[min(max(column, 0), TIME_BUCKETS)] += count


def _histogram(journal: JournalReader) -> list[tuple[float, float, int]]:
    """Run times of successful attempts in log-spaced bins (job times span orders of magnitude)."""
    low, high = journal.success_runtime_range()
    if low is None or high is None:
        return []
    low, high = math.log10(low), math.log10(high) + 1e-9
    width = max((high - low) / HISTOGRAM_BINS, 1e-6)
    counts = [0] * HISTOGRAM_BINS
    for runtime in journal.success_runtimes():
        counts[min(int((math.log10(runtime) - low) / width), HISTOGRAM_BINS - 1)] += 1
    return [
        (10 ** (low + i * width), 10 ** (low + (i + 1) * width), n) for i, n in enumerate(counts)
    ]
