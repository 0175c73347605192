"""The byte-bounded result queue, driven by hand: no timing, no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from anet.streams.flow import ByteBoundedQueue


@pytest.mark.parametrize("take", ["get", "pop"])
def test_put_waits_when_the_bytes_are_used_up_and_resumes_after_a_take(take: str):
    """`pop` (no coroutine: the consumer found an item waiting) frees room as `get` does."""

    async def main():
        queue: ByteBoundedQueue[str] = ByteBoundedQueue(max_items=100, max_bytes=10)
        await queue.put("a", 6)
        blocked = asyncio.create_task(queue.put("b", 6))
        await asyncio.sleep(0)
        assert not blocked.done() and len(queue) == 1
        assert (await queue.get() if take == "get" else queue.pop()) == "a"
        await asyncio.wait_for(blocked, timeout=5)  # the room it freed let "b" in
        return await queue.get(), queue.bytes

    assert asyncio.run(main()) == ("b", 0)


def test_put_waits_when_the_item_count_is_reached():
    async def main():
        queue: ByteBoundedQueue[int] = ByteBoundedQueue(max_items=2, max_bytes=1 << 30)
        await queue.put(1)
        await queue.put(2)
        blocked = asyncio.create_task(queue.put(3))
        await asyncio.sleep(0)
        assert not blocked.done()
        await queue.get()
        await blocked
        return [await queue.get(), await queue.get()]

    assert asyncio.run(main()) == [2, 3]


def test_an_item_bigger_than_the_budget_passes_an_empty_queue():
    async def main():
        queue: ByteBoundedQueue[str] = ByteBoundedQueue(max_items=10, max_bytes=10)
        await asyncio.wait_for(queue.put("huge", 1000), timeout=1)
        blocked = asyncio.create_task(queue.put("next", 1))
        await asyncio.sleep(0)
        assert not blocked.done()  # nothing joins a queue that is already over budget
        assert await queue.get() == "huge"
        await blocked
        return await queue.get()

    assert asyncio.run(main()) == "next"


def test_put_last_ignores_the_limits_and_wakes_a_waiting_get():
    async def main():
        queue: ByteBoundedQueue[str] = ByteBoundedQueue(max_items=1, max_bytes=1)
        await queue.put("full", 1)
        assert await queue.get() == "full"
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put_last("done")  # from synchronous code, e.g. a loop callback
        return await asyncio.wait_for(getter, timeout=1)

    assert asyncio.run(main()) == "done"


def test_close_releases_a_blocked_put_and_drops_what_comes_after():
    """A consumer that stopped for good: a producer waiting for room (a host's pump) must not
    wait forever, and nothing piles up behind no reader."""

    async def main():
        queue: ByteBoundedQueue[str] = ByteBoundedQueue(max_items=1, max_bytes=10)
        await queue.put("read never", 6)
        blocked = asyncio.create_task(queue.put("b", 6))
        await asyncio.sleep(0)
        assert not blocked.done()
        queue.close()
        await asyncio.wait_for(blocked, 1)
        await queue.put("c", 100)
        queue.put_last("end")
        return len(queue), queue.bytes, queue.offer("d", 100)

    assert asyncio.run(main()) == (0, 0, True)
