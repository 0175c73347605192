"""The end-of-run summary on stderr: totals, wall time, per host, failed jobs, where things are.

Pure text from a final `Snapshot` and a `FailedJobs` list, so it is the same on a terminal and
in a log file, and tests compare it whole. Failed jobs are kept up to a bound (`FailedJobs.keep`)
with their last error line: a batch with a million failures must not hold them all in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.record import JobResult
from ..core.spool import tail
from ..printable import failure_line
from .progress import HostRow, Snapshot, duration, host_state, job_time
from .tables import table

STDERR_TAIL = 64 << 10
"""Bytes of a failed job's stderr searched for its last line (never a whole spooled one)."""
FAILED_SHOWN = 20
"""Failed jobs listed by id in the summary; the journal (`anet status`) has them all."""


def last_error_line(result: JobResult) -> str:
    """Why a job failed, in one line: anet's own explanation, else its last stderr line (both
    may hold what a host said: escaped)."""
    said = failure_line(result.error, tail(result.err, STDERR_TAIL))
    if said is not None:
        return said
    if result.signal is not None:
        return f"killed by signal {result.signal}"
    return f"exit {result.exit_code}"


@dataclass(slots=True)
class FailedJobs:
    """The first `keep` failed jobs (id, last error line), and how many failed in all."""

    keep: int = FAILED_SHOWN
    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)

    def add(self, result: JobResult) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append((result.id, last_error_line(result)))


def _spec(row: HostRow) -> str:
    """Speculative copies won/lost; `-` where they are not counted (a pool's run: its hosts'
    counts are every run's)."""
    return "-" if row.spec_won < 0 else f"{row.spec_won}/{row.spec_lost}"


def render_summary(
    snap: Snapshot, failed: FailedJobs, places: Sequence[tuple[str, Path | str]] = ()
) -> str:
    """The whole summary, lines ending in newlines; `places` are (what, where) pairs."""
    wall = snap.elapsed
    ran = sum(row.done for row in snap.hosts)
    rate = f"{ran / wall:.1f} jobs/s" if wall > 0 and ran else "-"
    held = sum(row.held_time for row in snap.hosts)
    lost = f"; hosts held {duration(held)} by polite mode" if held >= 0.5 else ""
    lines = [
        f"anet: {snap.done} jobs done, {snap.failed} failed, in {duration(wall)} ({rate}){lost}",
    ]
    # Per host, jobs (each counted once, where its final result came from) and attempts (its
    # every try, retries included): a job that failed 3 times is 1 failed job, 3 failed attempts.
    header = ["host", "state", "slots", "jobs", "jobs/min", "mean", "failed attempts"]
    header.append("spec won/lost")
    if lost:  # the seconds each host's slots were held, loaded or yielding: the time lost
        header.append("held")
    rows = [
        [
            row.label,
            host_state(row),
            str(row.slots),
            str(row.done),
            f"{60 * row.done / wall:.0f}" if wall > 0 else "-",
            job_time(row.mean_time),
            str(row.failed_attempts),
            _spec(row),
            *([duration(row.held_time) if row.held_time >= 0.5 else "-"] if lost else []),
        ]
        for row in snap.hosts
    ]
    lines += ["  " + line for line in table(header, rows, left=2)]
    if failed.count:
        more = failed.count - len(failed.first)
        lines.append(f"failed jobs ({failed.count}):")
        lines += [f"  job {job_id}: {why}" for job_id, why in failed.first]
        if more > 0:
            lines.append(f"  ... and {more} more (anet status JOURNAL lists them all)")
    lines += [f"{what}: {where}" for what, where in places]
    return "".join(line + "\n" for line in lines)
