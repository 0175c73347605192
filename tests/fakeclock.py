"""An asyncio event loop on a fake clock that jumps when every task waits (trio's autojump).

Everything asyncio times (`sleep`, `timeout`, `call_later`, `loop.time()`) runs on the loop's
clock, so code that never reads the wall clock itself runs here unchanged: a backoff of 10
retries over 30 s takes milliseconds, and a test can assert on exact times.

The clock moves only when nothing is ready to run: then it jumps straight to the next timer.
Real I/O still works (checked without blocking first), but a test that waits on real I/O and
on timers at once would see the timers fire early: use it with in-memory fakes.

    with fake_clock() as run:
        elapsed = run(main())  # main() sees loop.time() start at 0.0
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """select() that, when a wait would block with a timeout, moves the clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: FakeClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake us
            return super().select(None)
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class FakeClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)


@contextlib.contextmanager
def fake_clock() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """A runner on a FakeClockLoop: `run(coro)` runs it to the end and returns its value."""
    with asyncio.Runner(loop_factory=FakeClockLoop) as runner:
        yield runner.run
