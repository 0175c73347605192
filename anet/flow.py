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
        self._changed = asyncio.Condition()

    def _has_room(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self._max_items and self._bytes + size <= self._max_bytes

    async def put(self, item: T, size: int = 0) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._has_room(size))
            self._items.append((item, size))
            self._bytes += size
            self._changed.notify_all()

    async def get(self) -> T:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item, size = self._items.popleft()
            self._bytes -= size
            self._changed.notify_all()
            return item

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
