"""-k/--keep-order: job-id order under any finish order, with what waits held on disk."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest

from anet.core.batch import Job
from anet.core.record import JobResult
from anet.streams.journal import Journal
from anet.streams.keeporder import FileSpill, JournalSpill, KeepOrder


def result(job_id: int, size: int = 8) -> JobResult:
    out = f"{job_id}:".encode().ljust(size, b"x")
    return JobResult(job_id, job_id % 7 != 3, 0, None, "h", 1, 0.1, out, b"")


def drive(order: KeepOrder, ids: list[int], finish: list[int], journal: Journal | None) -> list:
    """Issue `ids`, deliver results in `finish` order (recording them first, as the master
    does), and collect what comes out; also the most results ever held in memory."""
    issued = list(order.jobs(Job(i, b"true") for i in ids))
    assert [j.id for j in issued] == ids
    out, most_held = [], 0
    for job_id in finish:
        r = result(job_id)
        if journal is not None:
            journal.record(r)
        out += list(order.add(r))
        most_held = max(most_held, order.held)
    return out + list(order.rest()), most_held


@pytest.mark.parametrize("spill", ["journal", "file"])
@pytest.mark.parametrize("seed", range(5))
def test_random_finish_order_comes_out_in_id_order_within_the_bound(tmp_path, spill, seed):
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(3000), 1000))  # gaps, as after a --resume
    finish = ids[:]
    rng.shuffle(finish)
    journal = Journal.open(tmp_path / "j.sqlite", "f" * 64, "b.txt", resume=False)
    with journal:
        store = JournalSpill(journal) if spill == "journal" else FileSpill(str(tmp_path))
        order = KeepOrder(store, max_held=10)
        out, most_held = drive(order, ids, finish, journal if spill == "journal" else None)
        order.close()
    assert [r.id for r in out] == ids
    assert all(r == result(r.id) for r in out)
    assert most_held <= 10
    assert order.waiting == 0


def test_a_slow_first_job_costs_disk_not_memory(tmp_path):
    """5,000 results of 10 KB wait for job 0: 50 MB of output, a few MB of memory (held whole,
    they would be four times the bound)."""
    n, size = 5_000, 10_000
    order = KeepOrder(FileSpill(str(tmp_path)), max_held=100, max_bytes=1 << 20)
    list(order.jobs(Job(i, b"") for i in range(n)))
    tracemalloc.start()
    try:
        for job_id in range(1, n):
            assert list(order.add(result(job_id, size))) == []
        assert order.waiting == n - 1 and order.held <= 100
        count = 0
        for r in order.add(result(0, size)):
            assert r.id == count and len(r.stdout) == size
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        order.close()
    assert count == n
    assert peak < 12 << 20, f"peak {peak >> 20} MB for {n * size >> 20} MB of waiting output"


def test_resumed_results_are_merged_in_order(tmp_path):
    earlier = [result(i) for i in (0, 2, 5, 9)]
    order = KeepOrder(FileSpill(str(tmp_path)))
    order.merge_earlier(iter(earlier))
    ids = [1, 3, 4, 6, 7, 8]
    out, _ = drive(order, ids, [8, 4, 1, 7, 3, 6], None)
    assert [r.id for r in out] == list(range(10))


def test_rest_after_a_halt_skips_jobs_that_never_ended(tmp_path):
    order = KeepOrder(FileSpill(str(tmp_path)), max_held=1)
    list(order.jobs(Job(i, b"") for i in range(5)))
    assert list(order.add(result(3))) == []
    assert list(order.add(result(1))) == []  # spilled: over max_held
    assert [r.id for r in order.rest()] == [1, 3]


def test_journal_spill_reads_back_what_the_journal_holds(tmp_path: Path):
    with Journal.open(tmp_path / "j.sqlite", "f" * 64, "b.txt", resume=False) as journal:
        for i in (5, 6, 8):
            journal.record(result(i))
        assert [r.id for r in JournalSpill(journal).take([5, 6, 8])] == [5, 6, 8]
        with pytest.raises(RuntimeError, match="missing"):
            list(JournalSpill(journal).take([7]))


def test_waiting_spooled_results_past_a_few_are_parked_in_one_file(tmp_path, monkeypatch):
    from test_spool import spool_fds

    from anet.core import spool as spool_module
    from anet.core.record import SpooledResult
    from anet.core.spool import Spool
    from anet.streams import keeporder

    monkeypatch.setattr(spool_module, "spool_dir", lambda environ=None: tmp_path)
    monkeypatch.setattr(keeporder, "PARK_MAX", 6000)
    order = KeepOrder(FileSpill(str(tmp_path)))
    list(order.jobs(Job(i, b"true") for i in range(101)))
    expected = {}
    for job_id in range(1, 101):
        spool = Spool()
        spool.write(b"%d:" % job_id + bytes(5000 if job_id != 50 else 7000))
        expected[job_id] = spool.read()
        held = SpooledResult(job_id, True, 0, None, "h", 1, 0.1, spool, b"")  # type: ignore[arg-type]
        del spool
        assert list(order.add(held)) == []
        del held
    # 32 keep their files, one too big to park keeps its own, 67 share one; the FileSpill's
    assert spool_fds(tmp_path) == keeporder.MAX_OPEN_SPOOLED + 1 + 1 + 1
    out = [*order.add(result(0)), *order.rest()]
    assert [r.id for r in out] == list(range(101))
    assert [r.out.parked for r in out[1:]] == [i > 32 and i != 50 for i in range(1, 101)]
    assert all(r.stdout == expected[r.id] for r in out[1:])
    del out
    order.close()
    assert spool_fds(tmp_path) == 0  # the shared file went with its last slice
