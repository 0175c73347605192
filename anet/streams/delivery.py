"""Results to stdout as `anet run` writes them: encoded, counted, and marked delivered in the
journal once the kernel has their bytes (the order exactly-once rests on: see journal.py).

Marks are taken after each write and on a short timer: bytes a slow reader takes later, or
the last result before a lull, are marked within MARK_INTERVAL, so a kill -9 can repeat only
what was written in the last moments (the marks' commit interval), never a result read long
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from types import TracebackType

from ..core.record import JobResult
from ..core.spool import Span
from ..logs import get_logger
from .journal import Journal, JournalError
from .output import ResultOutput
from .sinks import Encoder

log = get_logger()

MARK_INTERVAL = 0.05
"""Seconds between two looks at what the kernel has taken: well within the journal's commit
interval, so a mark waits for its commit, not for the look."""
STOP_DRAIN = 5.0
"""Seconds a stopped run (Ctrl-C, TERM, HUP, an error) waits for the reader to take the results
it holds; what the reader does not take stays owed in the journal for --resume --only-new."""


class Delivery:
    """`async with Delivery(output, encoder, journal) as out: await out.emit(result)`.

    A result counts as failed when the job failed, or when it cannot be written in the chosen
    format; `total` counts the results written, those of an earlier run written again too.
    Leaving writes what is left: all of it after a normal end, what the reader takes within
    STOP_DRAIN after an error or a stop.
    """

    def __init__(self, output: ResultOutput, encoder: Encoder, journal: Journal | None) -> None:
        self._output = output
        self._encoder = encoder
        self._journal = journal
        self._stack = contextlib.AsyncExitStack()
        self.total = 0
        self.failed = 0

    async def __aenter__(self) -> Delivery:
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        marker = tasks.create_task(self._mark_often())
        self._stack.callback(marker.cancel)  # runs before the task group waits for it
        await self._output.write(self._encoder.header)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stack.aclose()
        finally:
            await self._close(None if exc is None else STOP_DRAIN)

    async def emit(self, result: JobResult) -> None:
        self.total += 1
        if result.spooled:
            await self._emit_parts(result)
            return
        try:
            data = self._encoder.encode(result)
        except ValueError as exc:  # e.g. over the format's record size limit
            log.error(f"job {result.id}: cannot write its result as {self._encoder.name}: {exc}")
            self.failed += 1
            return
        self.failed += not result.ok
        await self._output.write(data, result.id)
        self._mark()

    async def write(self, data: bytes) -> None:
        """Bytes that belong to no result's record (--line-buffer's lines), in stream order."""
        await self._output.write(data)

    async def _emit_parts(self, result: JobResult) -> None:
        """A result with a spooled output, written a chunk at a time: each write waits while
        the reader lags, so the record never sits whole in memory. Its size is checked before
        its first byte: a record the format cannot carry is never begun."""
        encoder = self._encoder
        parts = (encoder.spans or encoder.parts)(result)  # spans: spools copied by the kernel
        try:
            first = next(parts, b"")
        except ValueError as exc:
            log.error(f"job {result.id}: cannot write its result as {self._encoder.name}: {exc}")
            self.failed += 1
            return
        self.failed += not result.ok
        output = self._output
        for piece in itertools.chain((first,), parts):
            if isinstance(piece, Span):
                await output.send_span(piece)
                continue
            await output.write(piece)
            await asyncio.sleep(0)  # a file or a terminal never makes it wait: let others run
        await self._output.write(b"", result.id)  # the record's end: delivered once taken
        self._mark()

    async def _mark_often(self) -> None:
        while True:
            await asyncio.sleep(MARK_INTERVAL)
            self._mark()

    def _mark(self) -> None:
        journal = self._journal
        delivered = self._output.delivered()
        if journal is not None and not journal.broken:
            with contextlib.suppress(JournalError):  # the run says so when the journal breaks
                for job_id in delivered:
                    journal.mark_delivered(job_id)

    async def _close(self, timeout: float | None) -> None:
        """Write what is left (waiting at most `timeout` for the reader), then mark it."""
        try:
            await self._output.close(timeout)
        finally:
            self._mark()
