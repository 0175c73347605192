"""The public async API on the local machine: the same dispatcher, over pipes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from waiting import until

import anet
import anet.drive
from anet.core.batch import Job


async def collect(cluster: anet.Cluster, commands) -> list[anet.JobResult]:
    return [r async for r in cluster.run(commands)]


def test_run_yields_each_result_once_with_its_id(tmp_path):
    async def main():
        async with anet.Cluster([":"], cwd=str(tmp_path)) as cluster:
            return await collect(cluster, [f"echo {i}; exit $(({i} % 3 == 0))" for i in range(50)])

    results = asyncio.run(main())
    assert sorted(r.id for r in results) == list(range(50))
    for r in results:
        assert r.stdout == f"{r.id}\n".encode()
        assert r.ok is (r.id % 3 != 0)
        assert r.exit_code == (0 if r.ok else 1)
        assert r.host == "local"


def test_jobs_and_bytes_commands_are_accepted():
    async def main():
        async with anet.Cluster() as cluster:
            first = await collect(cluster, [Job(7, b"printf '\\377'")])
            second = await collect(cluster, [b"printf x"])
            return first, second

    first, second = asyncio.run(main())
    assert [(r.id, r.stdout) for r in first] == [(7, b"\xff")]
    assert [(r.id, r.stdout) for r in second] == [(0, b"x")]


def test_a_killed_job_reports_its_signal():
    async def main():
        async with anet.Cluster() as cluster:
            return await collect(cluster, ["kill -9 $$"])

    (result,) = asyncio.run(main())
    assert not result.ok and result.signal == 9 and result.exit_code is None


def test_heartbeats_keep_a_long_job_alive_past_the_keepalive_bound():
    """The dispatcher kills everything after `keepalive` of silence: the master must talk."""

    async def main():
        async with anet.Cluster(keepalive=1.0) as cluster:
            return await collect(cluster, ["sleep 3; echo survived"])

    start = time.monotonic()
    (result,) = asyncio.run(main())
    assert result.ok and result.stdout == b"survived\n"
    assert time.monotonic() - start >= 3


def test_empty_run_needs_no_host():
    async def main():
        async with anet.Cluster(["127.0.0.1:1"]) as cluster:
            return await collect(cluster, [])

    assert asyncio.run(main()) == []


def test_commands_that_cannot_run_fail_cleanly_instead_of_hanging():
    async def main():
        async with anet.Cluster() as cluster:
            commands = [b"echo ok", b"x" * 2_000_000, b"echo a\0b"]
            return await asyncio.wait_for(collect(cluster, commands), timeout=60)

    results = {r.id: r for r in asyncio.run(main())}
    assert results[0].ok
    assert not results[1].ok and b"longer than" in results[1].stderr
    assert not results[2].ok and b"NUL byte" in results[2].stderr


def test_a_host_listed_twice_gets_one_connection():
    async def main():
        async with anet.Cluster([":", "4/:"]) as cluster:
            return list(cluster.hosts.values())

    (only,) = asyncio.run(main())
    assert only.spec.slots is None  # the first listing wins, as on the command line


def test_the_local_dispatcher_is_outside_the_terminals_process_group():
    """A terminal signals its whole foreground group (^C, ^Z, a hang-up): the master must get
    them alone and stop the dispatcher in order, as on an SSH host."""

    async def main() -> tuple[int, int]:
        async with anet.Cluster([":"]) as cluster:
            session = await cluster.ready_session(":")
            assert session.hello is not None
            return os.getpgid(session.hello.pid), os.getsid(session.hello.pid)

    group, session_id = asyncio.run(main())
    assert group != os.getpgrp() and session_id != os.getsid(0)


def test_the_last_result_is_not_overtaken_by_the_end_of_the_run(monkeypatch):
    """With the result queue full, the last job's result waits to get in; the scheduler already
    counts the job final, so the run's end marker used to jump the queue: that result was lost
    and the run still ended well (seen as 99 of 100 results under a slow consumer)."""
    monkeypatch.setattr(anet.drive, "RESULT_QUEUE", 1)

    async def main():
        got = []
        async with anet.Cluster([":"]) as cluster:
            async for result in cluster.run(["echo 0", "echo 1", "echo 2"]):
                got.append(result.id)
                await asyncio.sleep(0.5)  # a slow consumer: every job ends meanwhile
        return got

    assert sorted(asyncio.run(main())) == [0, 1, 2]


def test_a_run_left_early_kills_its_jobs_and_the_next_run_on_the_cluster_goes_on(tmp_path):
    """The consumer stops reading a run: its jobs still running are killed, and their late
    frames are that run's, not lies: the host keeps serving the next run."""
    marks = tmp_path / "marks"
    marks.mkdir()

    async def main():
        async with anet.Cluster([":"]) as cluster:
            slow = [f"echo $$ > {marks}/{i}; sleep 30" for i in range(4)]
            first = cluster.run(["echo quick", *slow])
            async for result in first:
                assert result.id == 0
                break
            await first.aclose()
            await until(lambda: not any(map(running, marks.iterdir())), 10, "the kills")
            second = await collect(cluster, ["echo again"])
            return second, cluster.hosts["local"].state

    started = time.monotonic()
    second, state = asyncio.run(main())
    assert [r.stdout for r in second] == [b"again\n"] and state == "ready"  # not given up
    assert time.monotonic() - started < 20  # not the 30 s the slow jobs would take
    assert not any(map(running, marks.iterdir()))


def running(mark: Path) -> bool:
    """Whether the job that writes its shell's pid into ``mark`` still runs (not a zombie)."""
    pid = mark.read_text().strip()
    if not pid:  # the shell is writing it
        return True
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False
