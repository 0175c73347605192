"""Write result bytes to stdout without blocking the event loop on a slow reader, and know which
jobs' bytes have reached the kernel.

A pipe or socket is driven through the loop with flow control: when the downstream program
stops reading, `write` waits, results back up into bounded queues, hosts' channels stop being
read, and the jobs slow down (invariants 4 and 5). A regular file or a terminal is written
directly: the kernel does not make those wait for a reader.

Either way, results written in one loop iteration go out in one write(2) at its end: many
results often finish together (one read from a host carries many Exit frames), and one syscall
for all of them is the difference at thousands of jobs per second.

`delivered()` names the jobs whose every byte the kernel has taken: from then on the consumer
gets them even if anet dies at once, so the journal may mark them delivered (see journal.py for
why exactly-once across a stop rests on that mark). Bytes still in anet's own buffers are not
delivered: a stop that cannot write them leaves them owed, and `--resume --only-new` writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
from collections import deque
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from ..core.spool import CHUNK, NO_KERNEL_COPY, Span
from ..errors import AnetError

FLUSH_AT = 1 << 20
"""Bytes queued in one loop iteration beyond which they are written at once."""


class OutputClosed(AnetError):
    """The program reading anet's output went away (broken pipe)."""


_CLOSED = "the output was closed by its reader (broken pipe)"


class ResultOutput:
    """The common part: batching per loop iteration, and the byte ledger behind `delivered`."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._queued = 0  # bytes ever given to write()
        self._pushed = 0  # bytes handed on to the kernel or the pipe transport
        self._ends: deque[tuple[int, int]] = deque()  # (byte offset after a job's bytes, id)

    async def write(self, data: bytes, job_id: int | None = None) -> None:
        """Queue `data` (the end of `job_id`'s result, when given) for this iteration's write;
        past FLUSH_AT queued, written at once (a big result comes in many pieces, all within
        one iteration when nothing makes its writer wait)."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush_pending)
        self._enqueue(data, job_id)
        if self._queued - self._pushed >= FLUSH_AT:
            self._flush_pending()

    def _enqueue(self, data: bytes, job_id: int | None) -> None:
        self._pending.append(data)
        self._queued += len(data)
        if job_id is not None:
            self._ends.append((self._queued, job_id))

    def delivered(self) -> list[int]:
        """Jobs whose bytes the kernel has taken since the last call, in the order written."""
        taken = self._pushed - self._unsent()
        ends, done = self._ends, []
        while ends and ends[0][0] <= taken:
            done.append(ends.popleft()[1])
        return done

    def _flush_pending(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            self._push(data)
            self._pushed += len(data)

    def _push(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_span(self, span: Span) -> None:
        """A spool's bytes, in order after what was written before: read a chunk at a time
        and written, each write waiting while the reader lags (a writer that can have the
        kernel copy them overrides this)."""
        for piece in span.spool.chunks(CHUNK, span.start, span.stop):
            await self.write(piece)
            await asyncio.sleep(0)  # a file or a terminal never makes it wait: let others run

    async def _send_by_kernel(
        self, span: Span, fd: int, room: Callable[[], Awaitable[None]]
    ) -> None:
        """The spool's bytes copied to `fd` by the kernel (sendfile; a splice into a pipe),
        never through the master's memory: for a job printing a gigabyte, a read and a write
        of every byte saved. `room` waits until `fd` takes more. An output that cannot take a
        kernel copy (O_APPEND, some terminals) is written as any other."""
        done = 0
        try:
            while True:
                try:
                    sent = span.send_to(fd, done)
                except BlockingIOError:
                    await room()
                    continue
                if not sent:
                    return
                done += sent
                self._sent(sent)
                await asyncio.sleep(0)  # SEND_AT_MOST at a time: let others run
        except (BrokenPipeError, ConnectionResetError):
            raise OutputClosed(_CLOSED) from None
        except OSError as exc:
            if exc.errno not in NO_KERNEL_COPY or done:
                raise
            await ResultOutput.send_span(self, span)

    def _sent(self, count: int) -> None:
        """`count` bytes went to the kernel beside the queue (a kernel copy)."""
        self._queued += count
        self._pushed += count

    def _unsent(self) -> int:
        """Bytes pushed that the kernel has not taken yet."""
        return 0

    async def close(self, timeout: float | None = None) -> None:
        """Write what is queued, waiting at most `timeout` seconds (None: as long as it takes,
        which is only a slow reader's normal back-pressure) for the reader to take it."""
        self._flush_pending()


class _DirectOutput(ResultOutput):
    """A regular file or a terminal: write(2) straight from the loop, nothing kept back."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def _push(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:  # someone made the shared terminal non-blocking
                select.select([], [self._fd], [])
            except BrokenPipeError:
                raise OutputClosed(_CLOSED) from None

    async def send_span(self, span: Span) -> None:
        self._flush_pending()  # what came before goes first
        await self._send_by_kernel(span, self._fd, self._room)

    async def _room(self) -> None:
        """A file or a terminal takes everything at once, unless someone made a shared
        terminal non-blocking: then it is waited for as a blocking write would."""
        select.select([], [self._fd], [])


HIGH_WATER = 64 << 10
"""Bytes written but not yet taken by the kernel beyond which `write` waits for the reader:
what a slow reader lets pile up in anet's own buffers, so also what a kill -9 may cost
(results in those buffers are not delivered, and their delivery marks lag)."""


class _PipeOutput(ResultOutput):
    """A pipe or socket, through an asyncio write transport: `write` waits while the reader lags,
    so memory stays bounded; `delivered` subtracts what the transport still buffers."""

    def __init__(self, writer: asyncio.StreamWriter, fd: int) -> None:
        super().__init__()
        self._writer = writer
        self._fd = fd
        self._dropped: int | None = None  # what close() gave up on, once it has
        self._taken = 0  # what the kernel had taken when last looked at, the pipe still open

    def _push(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def _unsent(self) -> int:
        if self._dropped is not None:
            return self._dropped
        if self._writer.is_closing():  # the reader left: the transport threw its buffer away,
            return self._pushed - self._taken  # so only what was taken before counts
        unsent = self._writer.transport.get_write_buffer_size()
        self._taken = self._pushed - unsent
        return unsent

    async def write(self, data: bytes, job_id: int | None = None) -> None:
        if self._writer.is_closing():
            raise OutputClosed(_CLOSED)
        await super().write(data, job_id)
        if self._queued - self._pushed + self._unsent() < HIGH_WATER:
            return  # batched: pushed at the end of this loop iteration
        self._flush_pending()  # drain() alone would not see what this iteration batched
        try:
            await self._writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise OutputClosed(_CLOSED) from None

    async def send_span(self, span: Span) -> None:
        """Once the transport has written everything before it; waiting for the pipe's room
        as any write waits for the reader."""
        await self._written_out()
        await self._send_by_kernel(span, self._fd, self._room)

    def _sent(self, count: int) -> None:
        super()._sent(count)
        self._taken += count

    async def _written_out(self) -> None:
        """Wait until the transport holds nothing: what was written before goes first."""
        self._flush_pending()
        transport = self._writer.transport
        if self._writer.is_closing():
            raise OutputClosed(_CLOSED)
        if transport.get_write_buffer_size():
            transport.set_write_buffer_limits(0)  # drain() returns once all is written
            try:
                await self._writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise OutputClosed(_CLOSED) from None
            finally:
                transport.set_write_buffer_limits(HIGH_WATER)
            if self._writer.is_closing():
                raise OutputClosed(_CLOSED)
        self._unsent()  # the ledger's look: all of it taken

    async def _room(self) -> None:
        """Until the pipe has room (stdout's own fd: the transport holds another)."""
        loop = asyncio.get_running_loop()
        room = loop.create_future()
        loop.add_writer(self._fd, lambda: room.done() or room.set_result(None))
        try:
            await room
        finally:
            loop.remove_writer(self._fd)

    async def close(self, timeout: float | None = None) -> None:
        await super().close()
        transport = self._writer.transport
        if transport.is_closing():  # the reader left (the original ANet's example consumer does
            self._writer.close()  # once it has every id): nothing more can reach it
        else:
            transport.set_write_buffer_limits(0)  # drain() now returns once all is written
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
            self._unsent()  # the last look while the pipe may still be open
            # What the reader did not take in time is dropped, not left to a transport that
            # might write it after `delivered` called it undelivered: owed is never written.
            self._dropped = self._pushed - self._taken
            if self._dropped and not transport.is_closing():
                transport.abort()
            else:
                self._writer.close()
        os.set_blocking(self._fd, True)  # the shell may share this pipe after we exit


async def open_output(stream: BinaryIO) -> ResultOutput:
    """The right writer for what `stream` is; `stream` must stay open while it is used."""
    stream.flush()
    fd = stream.fileno()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return _DirectOutput(fd)
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    transport.set_write_buffer_limits(HIGH_WATER)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return _PipeOutput(writer, fd)
