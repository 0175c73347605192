"""One end machine's life on the master side: open a channel, boot the dispatcher, pump frames.

The same code runs over an SSH channel and over a local subprocess's pipes: only `open_channel`
differs. Start-up reads past whatever a login shell prints until the boot mark, ships the payload
when the host's cache misses it, then checks the dispatcher's Hello before any job is sent.
Frames are handed to the owner's `on_message` and awaited one by one, so a slow consumer slows
the reading of this channel (SSH flow control) instead of piling frames up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from dispatcher.protocol import (
    BOOT_ERROR,
    BOOT_FRAMES,
    BOOT_NEED_PAYLOAD,
    PROTOCOL_VERSION,
    Bye,
    FrameDecoder,
    Heartbeat,
    Hello,
    Message,
    ProtocolError,
    Setup,
    Shutdown,
    encode,
    find_boot_mark,
)

from .bootstrap import Payload, payload_message
from .connect import Connector
from .errors import HostError
from .hosts import HostSpec

log = structlog.get_logger("anet")

MAX_NOISE = 1 << 20
"""Bytes a login shell may print before the boot mark; more means something is badly wrong."""
BOOT_TIMEOUT = 60.0
READ_SIZE = 1 << 18


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


async def open_local(payload: Payload) -> Channel:
    """The local machine: the same stub, run by this Python, over pipes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        payload.code,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr

    def close() -> None:
        if proc.returncode is None:
            proc.stdin.close()  # type: ignore[union-attr]

    return Channel(proc.stdin, proc.stdout, proc.stderr, close, proc.wait)


async def open_ssh(connector: Connector, spec: HostSpec, payload: Payload) -> Channel:
    conn = await connector.connect(spec)
    try:
        process = await conn.create_process(payload.shell_command(), encoding=None)
    except Exception as exc:
        conn.close()
        raise HostError(spec.label, f"cannot start a session: {exc}") from exc

    async def wait() -> int | None:
        completed = await process.wait()
        return completed.exit_status

    def close() -> None:
        process.close()
        conn.close()

    return Channel(process.stdin, process.stdout, process.stderr, close, wait)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    slots: int | None
    cwd: str
    heartbeat: float = 2.0
    dead_after: float = 15.0


class HostSession:
    """Boot and pump one host; every failure ends as a HostError with a one-line reason."""

    def __init__(
        self,
        spec: HostSpec,
        open_channel: Callable[[Payload], Awaitable[Channel]],
        payload: Payload,
        on_message: Callable[[HostSession, Message], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        self.spec = spec
        self.label = spec.label
        self._open_channel = open_channel
        self._payload = payload
        self._on_message = on_message
        self._config = config
        self._channel: Channel | None = None
        self._stderr_tail: deque[str] = deque(maxlen=5)
        self.hello: Hello | None = None
        self.slots = 0
        self.closing = False

    def send(self, *messages: Message) -> None:
        """Queue frames in one write; the transport buffers it, the dispatcher always reads."""
        if self._channel is not None and not self.closing:
            self._channel.stdin.write(b"".join(map(encode, messages)))

    async def run(self, ready: Callable[[HostSession], None]) -> None:
        """The whole life of the host; returns at EOF, raises HostError on any failure."""
        try:
            self._channel = await self._open_channel(self._payload)
        except HostError:
            raise
        except OSError as exc:
            raise HostError(self.label, f"cannot start the dispatcher: {exc}") from exc
        error: HostError | None = None
        async with asyncio.TaskGroup() as tasks:
            stderr = tasks.create_task(self._collect_stderr(self._channel.stderr))
            heartbeat = tasks.create_task(self._heartbeat())
            try:
                await self._serve(self._channel, ready)
            except HostError as exc:
                error = exc  # raised below, not wrapped in the task group's ExceptionGroup
            finally:
                self._channel.close()
                stderr.cancel()
                heartbeat.cancel()
        if error is not None:
            raise error

    async def _serve(self, channel: Channel, ready: Callable[[HostSession], None]) -> None:
        decoder = FrameDecoder()
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                rest = await self._boot(channel)
                messages = decoder.feed(rest)
                while not messages:
                    data = await channel.stdout.read(READ_SIZE)
                    if not data:
                        raise await self._died("the dispatcher exited during start-up")
                    messages = decoder.feed(data)
        except TimeoutError:
            raise HostError(
                self.label, f"dispatcher did not start within {BOOT_TIMEOUT:.0f}s"
            ) from None
        except ProtocolError as exc:
            raise HostError(self.label, f"garbled start-up: {exc}") from None
        self._greet(messages[0])
        ready(self)
        await self._dispatch(messages[1:])
        await self._pump(channel, decoder)

    async def _boot(self, channel: Channel) -> bytes:
        """Skip login noise up to the boot mark; ship the payload if asked. Returns frame bytes."""
        seen = bytearray()
        while True:
            found = find_boot_mark(seen)
            if found is None:
                if len(seen) > MAX_NOISE:
                    raise HostError(
                        self.label, "the login shell printed over 1 MiB before anet could start"
                    )
                data = await channel.stdout.read(READ_SIZE)
                if not data:
                    raise await self._died("cannot start python3")
                seen += data
                continue
            kind, end = found
            if kind == BOOT_FRAMES:
                return bytes(seen[end:])
            if kind == BOOT_ERROR:
                line = bytes(seen[end:]).split(b"\n", 1)[0]
                while b"\n" not in bytes(seen[end:]):
                    data = await channel.stdout.read(READ_SIZE)
                    if not data:
                        break
                    seen += data
                    line = bytes(seen[end:]).split(b"\n", 1)[0]
                raise HostError(self.label, line.decode(errors="replace"))
            if kind == BOOT_NEED_PAYLOAD:
                size = len(self._payload.data)
                log.info(f"{self.label}: dispatcher not cached there, sending it ({size} bytes)")
                channel.stdin.write(payload_message(self._payload.data))
                await channel.stdin.drain()
                del seen[:end]
                continue
            raise HostError(self.label, f"unexpected start-up reply {kind!r}")

    def _greet(self, first: Message) -> None:
        if not isinstance(first, Hello):
            raise HostError(self.label, f"dispatcher spoke {type(first).__name__} before Hello")
        if first.version != PROTOCOL_VERSION:
            raise HostError(
                self.label, f"dispatcher speaks protocol {first.version}, anet {PROTOCOL_VERSION}"
            )
        self.hello = first
        self.slots = self.spec.slots or first.cores
        config = self._config
        self.send(Setup(self.slots, self.label, config.cwd, config.heartbeat, config.dead_after))

    async def _pump(self, channel: Channel, decoder: FrameDecoder) -> None:
        while True:
            data = await channel.stdout.read(READ_SIZE)
            if not data:
                if self.closing:
                    return
                raise await self._died("connection lost")
            try:
                messages = decoder.feed(data)
            except ProtocolError as exc:
                raise HostError(self.label, f"corrupt frame from the dispatcher: {exc}") from None
            await self._dispatch(messages)

    async def _dispatch(self, messages: list[Message]) -> None:
        for msg in messages:
            if isinstance(msg, Bye):
                self.closing = True
            await self._on_message(self, msg)

    async def shutdown(self) -> None:
        """Ask the dispatcher to kill its jobs and go; the pump ends at its EOF."""
        if self._channel is not None and not self.closing:
            self._channel.stdin.write(encode(Shutdown()))
            self.closing = True
            with contextlib.suppress(OSError, RuntimeError, AttributeError):
                self._channel.stdin.write_eof()

    async def _heartbeat(self) -> None:
        """Proof of life for the dispatcher, which gives up after `dead_after` of silence."""
        while True:
            await asyncio.sleep(self._config.heartbeat)
            if self.hello is not None:
                self.send(Heartbeat(0.0))

    async def _collect_stderr(self, stderr: Reader) -> None:
        """Keep the last lines the remote side wrote on stderr, to explain a failure."""
        pending = b""
        while data := await stderr.read(65536):
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            self._stderr_tail.extend(
                line.decode(errors="replace") for line in lines if line.strip()
            )
        if pending.strip():
            self._stderr_tail.append(pending.decode(errors="replace"))

    async def _died(self, what: str) -> HostError:
        """Explain an EOF with the exit status and what the remote side said on stderr."""
        status: int | None = None
        if self._channel is not None:
            try:
                async with asyncio.timeout(2):
                    status = await self._channel.wait()
            except (TimeoutError, OSError):
                pass
            await asyncio.sleep(0)  # let the stderr collector take the last lines
        said = self._stderr_tail[-1] if self._stderr_tail else ""
        if status == 127:
            return HostError(self.label, f"python3 not found on the host ({said or 'exit 127'})")
        detail = f": {said}" if said else (f" (exit status {status})" if status is not None else "")
        return HostError(self.label, f"{what}{detail}")
