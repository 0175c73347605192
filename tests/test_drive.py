"""The drive's own seams, on a real event loop with the real engine (no host: frames are the
test's). What the engine decides is tests/test_engine.py's; here, how results leave."""

from __future__ import annotations

import asyncio

from anet.core.batch import Job
from anet.core.engine import HostStats, RunPolicy
from anet.core.record import JobResult
from anet.drive import Drive
from anet.streams.attemptlog import AttemptLog
from dispatcher.protocol import Message, Run, Started


def test_results_given_up_together_all_arrive_before_the_end_of_the_run():
    """A host lost with two timed-out attempts and no retry left gives up both jobs at once:
    the last of the batch. The run's end must come after both; it came after the first (the
    end was checked as each was queued), and the second was lost."""

    async def main() -> list[JobResult]:
        sent: list[tuple[str, Message]] = []
        stats = {"h": HostStats()}
        policy = RunPolicy(retries=0, timeout=0.05, speculate=False)
        async with asyncio.TaskGroup() as tasks:
            drive = Drive(
                [Job(0, b"sleep 9"), Job(1, b"sleep 9")],
                policy,
                stats,
                lambda host, frames: sent.extend((host, f) for f in frames),
                tasks,
                AttemptLog(),
            )
            drive.host_ready("h", 2)
            results = drive.results()
            waiting = asyncio.ensure_future(anext(results))  # the consumer is there
            await asyncio.sleep(0.01)  # a round sends both
            for _, run in [(h, f) for h, f in sent if isinstance(f, Run)]:
                assert not drive.frame("h", Started(run.aid, 1000 + run.aid, 1 + run.job))
            await asyncio.sleep(0.2)  # both time out: killed, no retry left
            await drive.host_lost("h")  # then the host goes: both jobs given up together
            got = [await asyncio.wait_for(waiting, 5)]
            got += [result async for result in results]
        return got

    got = asyncio.run(main())
    assert sorted(r.id for r in got) == [0, 1]
    assert all(not r.ok and "timed out" in (r.error or "") for r in got)
