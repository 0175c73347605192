"""Write result bytes to stdout without ever blocking the event loop on a slow reader.

A pipe or socket is driven through the loop with flow control: when the downstream program
stops reading, `write` waits, results back up into bounded queues, hosts' channels stop being
read, and the jobs slow down (invariants 4 and 5). A regular file or a terminal is written
directly: the kernel does not make those wait for a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from typing import BinaryIO, Protocol

from .errors import AnetError


class OutputClosed(AnetError):
    """The program reading anet's output went away (broken pipe)."""


class ResultOutput(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class _DirectOutput:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    async def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
        except BrokenPipeError:
            raise OutputClosed("the output was closed by its reader (broken pipe)") from None

    async def close(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise OutputClosed("the output was closed by its reader (broken pipe)") from None


class _PipeOutput:
    """Results written in this loop iteration go out in one write(2) at its end.

    Many results often finish together (one read from a host carries many Exit frames); one
    syscall for all of them is the difference at thousands of jobs per second. `drain` still
    makes the caller wait while the reader lags, so memory stays bounded.
    """

    def __init__(self, writer: asyncio.StreamWriter, fd: int) -> None:
        self._writer = writer
        self._fd = fd
        self._pending: list[bytes] = []

    def _push(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if not self._writer.is_closing():
            self._writer.write(data)

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise OutputClosed("the output was closed by its reader (broken pipe)")
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._push)
        self._pending.append(data)
        try:
            await self._writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise OutputClosed("the output was closed by its reader (broken pipe)") from None

    async def close(self) -> None:
        if self._pending:
            self._push()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self._writer.drain()
        self._writer.close()
        os.set_blocking(self._fd, True)  # the shell may share this pipe after we exit


async def open_output(stream: BinaryIO) -> ResultOutput:
    """The right writer for what `stream` is; `stream` must stay open while it is used."""
    stream.flush()
    fd = stream.fileno()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return _DirectOutput(stream)
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return _PipeOutput(writer, fd)
