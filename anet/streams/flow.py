"""A queue bounded by bytes as well as items: results wait here for a slow consumer.

Counting items alone would let 64 results of 100 MB each pile up in memory; counting bytes
keeps memory proportional to the work in flight (invariant 4). When the queue is full the
producer's `put` waits, the host's pump stops reading, and SSH flow control slows the host.
One item larger than the whole budget is still let through when the queue is empty, or it
could never be delivered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ByteBoundedQueue(Generic[T]):
    """FIFO with `max_items` and `max_bytes` limits; `put` waits for room, `get` for an item."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _has_room(self, size: int) -> bool:
        if not self._items or self._closed:
            return True
        return len(self._items) < self._max_items and self._bytes + size <= self._max_bytes

    async def put(self, item: T, size: int = 0) -> None:
        while not self._has_room(size):
            await _wait_in(self._putters)
        self._append(item, size)

    def offer(self, item: T, size: int = 0) -> bool:
        """`put` without waiting: False (and nothing added) when there is no room, or when
        others wait to put (they go first)."""
        if self._putters or not self._has_room(size):
            return False
        self._append(item, size)
        return True

    def close(self) -> None:
        """No one will read again: what waits is dropped, and every `put` from now on, waiting
        or not, returns at once with its item dropped. A producer blocked for room would
        otherwise wait forever (and whoever waits for it)."""
        self._closed = True
        self._items.clear()
        self._bytes = 0
        _wake(self._putters, every=True)

    def put_last(self, item: T) -> None:
        """Append a final marker now, whatever the limits: it must never wait behind them."""
        self._append(item, 0)

    async def get(self) -> T:
        while not self._items:
            await _wait_in(self._getters)
        return self.pop()

    def pop(self) -> T:
        """The first item, when there is one (`get` without a coroutine: a consumer that finds
        items waiting takes them this way, one call each)."""
        item, size = self._items.popleft()
        self._bytes -= size
        if self._putters:  # room for one may be room for several small ones
            _wake(self._putters, every=True)
        return item

    def _append(self, item: T, size: int) -> None:
        if self._closed:
            return
        self._items.append((item, size))
        self._bytes += size
        if self._getters:
            _wake(self._getters, every=False)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


async def _wait_in(waiters: deque[asyncio.Future[None]]) -> None:
    future = asyncio.get_running_loop().create_future()
    waiters.append(future)
    try:
        await future
    finally:
        if future in waiters:  # cancelled before being woken
            waiters.remove(future)


def _wake(waiters: deque[asyncio.Future[None]], *, every: bool) -> None:
    while waiters:
        future = waiters.popleft()
        if not future.done():
            future.set_result(None)
            if not every:
                return
