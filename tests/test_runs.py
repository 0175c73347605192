"""anet.runs.RunPlan on a real journal, without hosts: what a resumed run skips and owes.

The end-to-end resume tests need sshd hosts and notice a broken filter only through the whole
stack; these notice it in milliseconds, with and without keep-order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anet.core.batch import Job
from anet.core.record import JobResult
from anet.runs import RunOptions, RunPlan
from anet.streams.journal import Journal

FP = "f" * 64


def result(job_id: int, ok: bool) -> JobResult:
    return JobResult(job_id, ok, 0 if ok else 1, None, "node1", 1, 0.1, b"out %d\n" % job_id, b"")


def earlier_run(path: Path, succeeded: list[int], failed: list[int], delivered: list[int]) -> None:
    """A first run that recorded these results and delivered some of them, then stopped."""
    with Journal.open(path, FP, "batch.txt", resume=False) as journal:
        for job_id in sorted(succeeded + failed):
            journal.record(result(job_id, job_id in succeeded))
        for job_id in delivered:
            journal.mark_delivered(job_id)
        journal.flush()


def batch(n: int) -> list[Job]:
    return [Job(i, b"echo %d" % i) for i in range(n)]


@pytest.mark.parametrize("keep_order", [False, True])
def test_a_resumed_plan_runs_only_what_did_not_succeed_and_owes_every_success(tmp_path, keep_order):
    path = tmp_path / "j.sqlite"
    earlier_run(path, succeeded=[0, 2, 3, 7], failed=[1, 5], delivered=[0, 2])
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        plan = RunPlan(batch(9), RunOptions(journal=journal, resume=True, keep_order=keep_order))
        try:
            assert [job.id for job in plan.jobs] == [1, 4, 5, 6, 8]  # failed ones run again
            journal.record(result(4, True))  # this run's own result, read by none of the below
            journal.flush()
            if not keep_order:  # with keep-order they leave in job order as the run goes
                assert sorted(r.id for r in plan.earlier()) == [0, 2, 3, 7]
        finally:
            plan.close()


def test_with_only_new_the_plan_owes_just_the_undelivered_successes(tmp_path):
    path = tmp_path / "j.sqlite"
    earlier_run(path, succeeded=[0, 2, 3, 7], failed=[1], delivered=[0, 2])
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        plan = RunPlan(batch(8), RunOptions(journal=journal, resume=True, only_new=True))
        assert [job.id for job in plan.jobs] == [1, 4, 5, 6]
        journal.record(result(4, True))
        journal.flush()
        assert sorted(r.id for r in plan.earlier()) == [3, 7]


def test_with_keep_order_earlier_successes_fill_their_places_in_the_order(tmp_path):
    path = tmp_path / "j.sqlite"
    earlier_run(path, succeeded=[0, 2], failed=[1], delivered=[])
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        plan = RunPlan(batch(4), RunOptions(journal=journal, resume=True, keep_order=True))
        try:
            assert [job.id for job in plan.jobs] == [1, 3]
            out = [r.id for r in plan.ordered(result(3, True))]
            out += [r.id for r in plan.ordered(result(1, True))]
            out += [r.id for r in plan.rest()]
            assert out == [0, 1, 2, 3]
        finally:
            plan.close()


def test_without_resume_the_journal_skips_nothing(tmp_path):
    path = tmp_path / "j.sqlite"
    earlier_run(path, succeeded=[0, 1], failed=[], delivered=[])
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        plan = RunPlan(batch(3), RunOptions(journal=journal))
        assert [job.id for job in plan.jobs] == [0, 1, 2]
        assert list(plan.earlier()) == []


def test_a_plain_plan_is_one_whose_results_leave_as_they_arrive():
    """Cluster.run skips `arrive` for a plain plan: only a plan with no hook and no order to
    keep may be plain, since `arrive` would give such a result back alone and unchanged."""
    assert RunPlan(batch(2), RunOptions()).plain
    assert not RunPlan(batch(2), RunOptions(keep_order=True)).plain
    assert not RunPlan(batch(2), RunOptions(arrived=lambda result: None)).plain
