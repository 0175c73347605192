"""Several runs at once on one Cluster (the resident master's groundwork): each gets its own
results exactly once, and an equal share of the slots (anet/core/shares.py); a run that ends
gives its share back. On the local machine, through the real dispatcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anet


async def collect(cluster: anet.Cluster, commands: list[str]) -> list[anet.JobResult]:
    return [r async for r in cluster.run(commands)]


def test_two_runs_at_once_each_get_their_own_results_exactly_once(tmp_path):
    async def main():
        async with anet.Cluster(["4/:"], cwd=str(tmp_path)) as cluster:
            return await asyncio.gather(
                collect(cluster, [f"echo a{i}; sleep 0.0{i % 3}" for i in range(60)]),
                collect(cluster, [f"echo b{i}; sleep 0.0{i % 2}" for i in range(40)]),
            )

    a, b = asyncio.run(main())
    assert sorted((r.id, r.stdout) for r in a) == [(i, b"a%d\n" % i) for i in range(60)]
    assert sorted((r.id, r.stdout) for r in b) == [(i, b"b%d\n" % i) for i in range(40)]
    assert all(r.ok and r.attempts == 1 for r in a + b)


def _spans(marks: Path, run: str) -> list[tuple[float, float]]:
    """(start, end) of each job of `run`, as the jobs wrote them (their own clock reads)."""
    spans = []
    for file in sorted(marks.glob(f"{run}.*")):
        start, end = file.read_text().split()
        spans.append((float(start), float(end)))
    return spans


def _job(marks: Path, name: str) -> str:
    now = "python3 -c 'import time; print(time.time())'"
    return f"s=$({now}); sleep 0.2; echo $s $({now}) > {marks}/{name}"


def test_a_second_run_waits_for_a_slot_of_its_own_and_gets_the_first_runs_share_at_its_end(
    tmp_path,
):
    """One slot, two runs: the slot is the first run's until it ends, then the second's. Were
    shares not kept, the second run's jobs would be queued on the host before the first's last
    three (it has 1 slot and 2 queued there; the rest wait in the master)."""
    marks = tmp_path / "marks"
    marks.mkdir()

    async def main():
        async with anet.Cluster(["1/:"], cwd=str(tmp_path)) as cluster:
            first = asyncio.create_task(collect(cluster, [_job(marks, f"a.{i}") for i in range(6)]))
            async with asyncio.timeout(30):
                while not cluster.hosts["local"].running:  # the first run holds the slot
                    await asyncio.sleep(0.01)
            second = await collect(cluster, [_job(marks, f"b.{i}") for i in range(2)])
            return await first, second

    a, b = asyncio.run(main())
    assert [r.ok for r in a] == [True] * 6 and [r.ok for r in b] == [True] * 2
    a_spans, b_spans = _spans(marks, "a"), _spans(marks, "b")
    assert len(a_spans) == 6 and len(b_spans) == 2
    assert min(start for start, _ in b_spans) >= max(end for _, end in a_spans)


def test_runs_on_one_host_split_its_slots_and_neither_waits_for_the_other_to_end(tmp_path):
    """Four slots, two runs of many jobs: both progress side by side (the second run's jobs
    run while the first still has most of its jobs to do), and never more than the four."""
    marks = tmp_path / "marks"
    marks.mkdir()

    async def main():
        async with anet.Cluster(["4/:"], cwd=str(tmp_path)) as cluster:
            return await asyncio.gather(
                collect(cluster, [_job(marks, f"a.{i:02}") for i in range(16)]),
                collect(cluster, [_job(marks, f"b.{i:02}") for i in range(16)]),
            )

    a, b = asyncio.run(main())
    assert len(a) == len(b) == 16 and all(r.ok for r in a + b)
    a_spans, b_spans = _spans(marks, "a"), _spans(marks, "b")
    a_end, b_end = max(e for _, e in a_spans), max(e for _, e in b_spans)
    half_of_a = sorted(e for _, e in a_spans)[7]
    half_of_b = sorted(e for _, e in b_spans)[7]
    assert half_of_b < a_end and half_of_a < b_end  # each did half its jobs before the other ended
    events = sorted(
        [(s, 1) for s, _ in a_spans + b_spans] + [(e, -1) for _, e in a_spans + b_spans]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 4


def _stamped(marks: Path, name: str) -> str:
    return f"s=$(date +%s.%N); sleep 0.25; echo $s $(date +%s.%N) > {marks}/{name}"


def _busy(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Job-seconds of `spans` inside [start, end]."""
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)


def test_two_runs_on_four_sshd_hosts_share_the_slots_evenly(cluster, tmp_path):
    """Four real hosts of two slots, two runs of many jobs: while both run, each holds half
    the slots, give or take a job (measured as the job-seconds each got in that window)."""
    from anet.remote.connect import SshOptions

    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = [f"2/{name}" for name in cluster.names]

    async def main():
        ssh = SshOptions(config=cluster.ssh_config)
        async with anet.Cluster(hosts, ssh=ssh) as pool:
            return await asyncio.gather(
                collect(pool, [_stamped(marks, f"a.{i:03}") for i in range(48)]),
                collect(pool, [_stamped(marks, f"b.{i:03}") for i in range(48)]),
            )

    a, b = asyncio.run(main())
    assert sorted(r.id for r in a) == sorted(r.id for r in b) == list(range(48))
    assert all(r.ok for r in a + b)
    a_spans, b_spans = _spans(marks, "a"), _spans(marks, "b")
    start = max(min(s for s, _ in a_spans), min(s for s, _ in b_spans))
    end = min(max(e for _, e in a_spans), max(e for _, e in b_spans))
    assert end - start > 1.0, "the runs hardly overlapped"
    share_a, share_b = _busy(a_spans, start, end), _busy(b_spans, start, end)
    slots = 8 * (end - start)
    assert abs(share_a - share_b) <= 0.25 * slots, (share_a, share_b, slots)  # 1 job in 4 slots
