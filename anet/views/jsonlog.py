"""The run's own lines on stderr as JSON records, for `--log-json`: stderr is then JSON lines only.

The end summary and the `--progress` status lines are text for people (summary.py,
progress.py); with `--log-json` a program reads stderr, so each becomes one JSON object with a
log record's keys (`event`: "summary" or "status", `level`, `timestamp`) and the same numbers,
unrounded and named apart: a host's `failed_attempts` counts attempts, `failed` counts jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import logs
from .progress import HostRow, Rates, Snapshot
from .summary import FailedJobs


def summary_line(
    snap: Snapshot, failed: FailedJobs, places: Sequence[tuple[str, Path | str]] = ()
) -> str:
    """The end summary as one JSON line: totals, per host, the failed jobs kept, the files."""
    ran = sum(row.done for row in snap.hosts)
    record: dict[str, Any] = {
        "done": snap.done,
        "failed": snap.failed,
        "total": snap.total,
        "elapsed": round(snap.elapsed, 3),
        "jobs_per_s": round(ran / snap.elapsed, 3) if snap.elapsed > 0 else None,
        "hosts": [_host(row) for row in snap.hosts],
        "failed_jobs": [{"id": job_id, "why": why} for job_id, why in failed.first],
        "failed_jobs_not_listed": failed.count - len(failed.first),
        **{what: str(where) for what, where in places},
    }
    return logs.line("summary", **record)


def status_line(snap: Snapshot, rates: Rates) -> str:
    """A `--progress` status line as one JSON object (no newline: the view adds it)."""
    rate = rates.overall()
    record = {
        "done": snap.done,
        "failed": snap.failed,
        "running": snap.running,
        "queued": snap.queued,
        "total": snap.total,
        "jobs_per_s": None if rate is None else round(rate, 3),
        "eta": rates.eta(snap),
        "elapsed": round(snap.elapsed, 3),
        "hosts_ready": sum(row.state == "ready" for row in snap.hosts),
        "hosts": len(snap.hosts),
    }
    return logs.line("status", **record).rstrip("\n")


def _host(row: HostRow) -> dict[str, Any]:
    return {
        "host": row.label,
        "state": row.state,
        "slots": row.slots,
        "done": row.done,
        "failed_attempts": row.failed_attempts,
        "mean": None if row.mean_time is None else round(row.mean_time, 6),
        "spec_won": row.spec_won,
        "spec_lost": row.spec_lost,
        "held": round(row.held_time, 3),  # seconds polite mode held it: its slots' time lost
    }
