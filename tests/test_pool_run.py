"""A pool's run, the pure part: what an attach reads back from the run's journal.

The journal takes each result as it arrives, before --keep-order releases it: an attach that
read every stored result sent a later job before an earlier one still running (seen as job 7
where job 5 belonged in `anet -k BATCH` through a pool under load)."""

from __future__ import annotations

from pathlib import Path

from anet.core.record import JobResult
from anet.pool.run import PoolRun
from anet.runs import RunOptions
from anet.streams.journal import Journal, fingerprint_batch


def result(job_id: int) -> JobResult:
    return JobResult(job_id, True, 0, None, "h1", 1, 0.1, b"job %d\n" % job_id, b"")


def test_an_attach_reads_back_only_what_the_run_released_in_order(tmp_path: Path) -> None:
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"echo job {i}\n" for i in range(10)))
    fingerprint = fingerprint_batch(batch)
    with Journal.open(tmp_path / "j.sqlite", fingerprint, batch, resume=False) as journal:
        run = PoolRun(1, str(batch), 10, journal.path, fingerprint, journal, RunOptions())
        for job_id in (0, 1, 2, 3, 4, 7):  # 7 came early: the journal has it at once
            journal.record(result(job_id))
        for job_id in range(5):  # keep-order released 0 to 4; 7 waits for 5 and 6
            run.arrived(result(job_id))
        assert [r.id for r in run.stored(journal)] == [0, 1, 2, 3, 4]
        for job_id in (5, 6):
            journal.record(result(job_id))
        for job_id in (5, 6, 7):
            run.arrived(result(job_id))
        assert [r.id for r in run.stored(journal)] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_once_the_run_ended_an_attach_reads_every_stored_result(tmp_path: Path) -> None:
    """A run ended before this pool started (restored from its files): nothing arrived here."""
    batch = tmp_path / "batch.txt"
    batch.write_text("echo a\necho b\n")
    fingerprint = fingerprint_batch(batch)
    with Journal.open(tmp_path / "j.sqlite", fingerprint, batch, resume=False) as journal:
        for job_id in (0, 1):
            journal.record(result(job_id))
        run = PoolRun(1, str(batch), 2, journal.path, fingerprint, None, RunOptions())
        run.end("done", tmp_path / "1.end")
        assert [r.id for r in run.stored(journal)] == [0, 1]
