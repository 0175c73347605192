"""The fake clock itself: timers fire in order at their exact times, instantly."""

from __future__ import annotations

import asyncio
import time

from fakeclock import fake_clock


def test_sleeps_and_timeouts_take_fake_time_only():
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        for delay in (30.0, 0.5, 7.25):
            loop.call_later(delay, lambda d=delay: fired.append((d, loop.time())))
        await asyncio.sleep(100)
        try:
            async with asyncio.timeout(3600):
                await asyncio.Event().wait()
        except TimeoutError:
            fired.append(("timeout", loop.time()))
        return fired

    started = time.monotonic()
    with fake_clock() as run:
        fired = run(main())
    assert fired == [(0.5, 0.5), (7.25, 7.25), (30.0, 30.0), ("timeout", 3700.0)]
    assert time.monotonic() - started < 2


def test_tasks_that_are_ready_run_before_the_clock_moves():
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def worker(n):
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append((n, loop.time()))

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker(1))
            tasks.create_task(worker(2))
            tasks.create_task(asyncio.sleep(5))
        return seen, loop.time()

    with fake_clock() as run:
        seen, end = run(main())
    assert [t for _, t in seen] == [0.0] * 6 and end == 5.0
