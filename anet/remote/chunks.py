"""A dispatcher's stdout over SSH taken as asyncssh delivers it: a list of chunks, not a stream.

asyncssh's stream layer (`SSHClientProcess.stdout.read(n)`) keeps each channel packet (32 KiB
from OpenSSH) in a list and, at each read, takes a lock, walks the list and joins what it holds
into one `bytes`: for a job printing 1 GB that is 0.3-0.4 s of the master's CPU over the same
bytes taken in a bare session's `data_received` (bench/sshfloor.py's row), a fifth of all the
master's work for those bytes. Here the process's stdout packets are appended to a list as they
come and the pump takes the whole list at once (`read_chunks`), each piece fed to the frame
decoder as it is: no lock, no join. Flow control is asyncssh's own, as its stream layer does
it: past the channel's receive window of data waiting, the channel stops reading (and the
window stops opening) until the pump takes them.

stdin, stderr and the exit status stay asyncssh's (`SSHClientProcess`): only stdout's data
takes this way. Nothing here imports asyncssh: the class is made on first use (sshlib).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from .sshlib import asyncssh


class ChunkReader:
    """The chunks of one channel's stdout: `feed` them as they come, `read_chunks` them all."""

    __slots__ = ("_channel", "_chunks", "_eof", "_limit", "_paused", "_size", "_waiter")

    def __init__(self, channel: Any, limit: int) -> None:
        self._channel = channel  # an SSHClientChannel: pause_reading(), resume_reading()
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        if not data:  # b"" is the end of the stream to whoever reads these
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self._limit and not self._paused:
            self._paused = True
            self._channel.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_chunks(self) -> list[bytes]:
        """Every chunk come since the last call, waiting for one; [] at the end of stdout."""
        while not self._chunks and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks, self._chunks, self._size = self._chunks, [], 0
        if self._paused:
            self._paused = False
            self._channel.resume_reading()
        return chunks

    async def read(self, n: int = -1) -> bytes:
        """What `read_chunks` takes, joined (the Reader of the other transports)."""
        return b"".join(await self.read_chunks())


@functools.cache
def process_class() -> type:
    """asyncssh's SSHClientProcess with its stdout's data fed to a ChunkReader (`chunks`)."""
    base: Any = asyncssh().SSHClientProcess

    class ChunkedProcess(base):  # type: ignore[misc,valid-type]
        chunks: ChunkReader

        def connection_made(self, chan: Any) -> None:
            super().connection_made(chan)
            self.chunks = ChunkReader(chan, chan.get_recv_window())

        def data_received(self, data: bytes, datatype: int | None) -> None:
            if datatype is None:
                self.chunks.feed(data)
            else:
                super().data_received(data, datatype)

        def eof_received(self) -> bool:
            self.chunks.feed_eof()
            return bool(super().eof_received())

        def connection_lost(self, exc: Exception | None) -> None:
            self.chunks.feed_eof()
            super().connection_lost(exc)

    return ChunkedProcess
