"""What carries a dispatcher: an SSH connection, or pipes to a local subprocess.

A transport outlives the dispatcher processes it starts: when a dispatcher dies but its SSH
connection is fine, the next one starts over the same connection (no new handshake, still one
connection per end machine). `connected` tells the host's life loop which of the two to redo.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import HostError
from . import early, earlyssh
from .bootstrap import Payload
from .connect import Connector
from .hosts import HostSpec
from .lean import lighten_channel
from .sshlib import channel_errors

if TYPE_CHECKING:
    import asyncssh

WRITE_HIGH_WATER = 4 << 20
"""Bytes the master may buffer towards a dispatcher before `drain()` waits. The transports'
default (64 KiB) would make a deps transfer stop and wait after every 256 KiB frame; the
SSH window still bounds what is in flight, this only keeps the pipe full."""


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def write_eof(self) -> None: ...


@dataclass(slots=True)
class Channel:
    """A started dispatcher process, whatever carries it: its pipes and how to stop it."""

    stdin: Writer
    stdout: Reader
    stderr: Reader
    close: Callable[[], None]
    wait: Callable[[], Awaitable[int | None]]
    kill: Callable[[], None]


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def start(self, payload: Payload) -> Channel: ...

    def close(self) -> None: ...


class LocalTransport:
    """The local machine: the same stub, run by this Python, over pipes."""

    connected = True

    async def connect(self) -> None:
        pass

    async def start(self, payload: Payload) -> Channel:
        started = early.take(payload)
        if started is not None:  # `anet`'s entry point started it: its boot overlapped imports
            return await _adopted(started)
        proc = await asyncio.create_subprocess_exec(
            *early.command(payload.code),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Out of the terminal's foreground group: a ^C there must reach the master alone,
            # which stops the dispatcher in order (its jobs first), as it does on SSH hosts.
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        stdin = proc.stdin
        stdin.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

        def close() -> None:
            if proc.returncode is None:
                stdin.close()  # EOF: the dispatcher kills its jobs and exits

        def kill() -> None:
            if proc.returncode is None:
                proc.kill()

        return Channel(stdin, proc.stdout, proc.stderr, close, proc.wait, kill)

    def close(self) -> None:
        pass


async def _adopted(proc: subprocess.Popen[bytes]) -> Channel:
    """A Channel on a dispatcher started before the loop ran (`early.start`)."""
    stdin, stdout, stderr, wait = await early.adopt(proc, WRITE_HIGH_WATER)

    def close() -> None:
        if proc.poll() is None:
            stdin.close()  # EOF: the dispatcher kills its jobs and exits

    def kill() -> None:
        if proc.poll() is None:
            proc.kill()

    return Channel(stdin, stdout, stderr, close, wait, kill)


class SshTransport:
    """One asyncssh connection to an end machine; dispatchers are processes on it."""

    def __init__(self, connector: Connector, spec: HostSpec) -> None:
        self._connector = connector
        self._spec = spec
        self._conn: asyncssh.SSHClientConnection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        self.close()
        self._conn = await self._connector.connect(self._spec)

    async def start(self, payload: Payload) -> Channel:
        if self._conn is None:
            raise HostError(self._spec.label, "not connected")
        command = payload.shell_command()
        try:
            process = earlyssh.take_process(self._conn, command) or (
                await self._conn.create_process(command, encoding=None)
            )
        except channel_errors() as exc:
            self.close()
            raise HostError(self._spec.label, f"cannot start a session: {exc}") from exc
        process.stdin.channel.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        lighten_channel(process.stdin.channel)

        async def wait() -> int | None:
            completed = await process.wait()
            return completed.exit_status

        return Channel(
            process.stdin, process.stdout, process.stderr, process.close, wait, process.close
        )

    def close(self) -> None:
        """End the connection at once, saying nothing: sshd closes the dispatcher's stdin, the
        EOF it ends at. A polite close sent a channel close and a disconnect (each packet
        encrypted and written) at every host's end, for a peer that was going anyway."""
        if self._conn is not None:
            self._conn.abort()
            self._conn = None
