"""One dispatcher's life on the master side: start it, boot it, pump its frames.

The same code runs over an SSH channel and over a local subprocess's pipes: only the transport
differs. Start-up reads past whatever a login shell prints until the boot mark, ships the payload
when the host's cache misses it, then checks the dispatcher's Hello before any job is sent.
Frames are handed to the owner's `on_message` and awaited one by one, so a slow consumer slows
the reading of this channel (SSH flow control) instead of piling frames up in memory.

The session's states (boot, Hello, Setup, Bye) are the protocol's: a `Connection(MASTER)`
(dispatcher/connection.py) reads the bytes and says what they mean; this class does the I/O and
turns the connection's verdicts into HostErrors. Every frame it refuses (bytes that do not
decode, a field out of its bounds, a message only the master sends, a frame after Bye) is a
protocol error of this host: it is given up (errors.protocol_error). Whether a frame about an
attempt is the host's own to speak of is the engine's to check (invariant 8): it alone knows
which attempts went where.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from dispatcher.connection import (
    MAX_LINE,
    NEED_DATA,
    BootFailed,
    Connection,
    ConnectionClosed,
    PayloadWanted,
    State,
    clip_line,
)
from dispatcher.polite import Polite
from dispatcher.protocol import (
    MASTER,
    Heartbeat,
    Hello,
    Message,
    RemoteProtocolError,
    Setup,
    Shutdown,
    StartupError,
    batched,
)
from dispatcher.record import values

from ..errors import HostError, protocol_error
from ..logs import get_logger
from .bootstrap import Payload
from .hosts import HostSpec
from .sshlib import channel_errors
from .transport import Channel, Reader, Transport

log = get_logger()

M = TypeVar("M", bound=Message)

RUNNING, CLOSED = State.RUNNING, State.CLOSED  # read per frame sent: an Enum's class is slow
MAX_AUTO_SLOTS = 1024
"""Slots a host gets from its own core count, at most: a host cannot draw a whole batch to
itself by claiming 10,000 cores. The user's `N/host` or `-j N` is believed as it is."""
BOOT_TIMEOUT = 60.0
READ_SIZE = 1 << 18
EXIT_WAIT = 3.0
"""Seconds a dispatcher gets to kill its jobs and exit once its channel is closed."""
FOLD = 0.05
"""Seconds a dispatcher holds a new job's Started (Setup.fold): a job done by then (an `echo`)
comes as one Done frame instead of three, a third of the master's frames to decode and
handle; a longer job's start is known that much later, a small error for its timeout."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    slots: int | None
    cwd: str
    heartbeat: float = 2.0
    dead_after: float = 15.0
    polite: Polite = field(default_factory=Polite)
    fold: float = FOLD


class Request:
    """The replies to one request, matched by its `rid`, or the host's failure if it goes first.

    Requests (a deps sync, a process listing) run beside jobs on the same channel; the pump
    routes every frame carrying this `rid` here instead of to the session's owner.
    """

    def __init__(self, rid: int, label: str) -> None:
        self.rid = rid
        self._label = label
        self._replies: asyncio.Queue[Message | HostError] = asyncio.Queue()

    def put(self, item: Message | HostError) -> None:
        self._replies.put_nowait(item)

    async def get(self, timeout: float) -> Message:
        """The next reply; HostError when the host is lost or stays silent past `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._replies.get()
        except TimeoutError:
            raise HostError(self._label, f"no reply within {timeout:g}s") from None
        if isinstance(item, HostError):
            raise item
        return item

    async def reply(self, kind: type[M], timeout: float) -> M:
        """The next reply, which must be a `kind`: any other message is the host's protocol
        error (HostError), as a reply that does not decode is."""
        msg = await self.get(timeout)
        if not isinstance(msg, kind):
            raise protocol_error(self._label, f"{type(msg).__name__} in reply, not {kind.__name__}")
        return msg

    def has_reply(self) -> bool:
        """True when a reply (or the host's failure) is waiting: an early error to act on."""
        return not self._replies.empty()


class StderrTail:
    """The last lines the remote side wrote on stderr, to explain a failure."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=5)

    @property
    def last(self) -> str:
        return self._lines[-1] if self._lines else ""

    async def collect(self, stderr: Reader) -> None:
        """Read `stderr` to its end, keeping its last lines."""
        pending = b""
        while True:
            try:
                data = await stderr.read(65536)
            except channel_errors():
                data = b""  # the connection died: the pump reports that
            if not data:
                break
            lines = (pending + data).split(b"\n")
            pending = lines.pop()[: MAX_LINE + 1]  # an endless line must not fill the memory
            self._lines.extend(clip_line(line) for line in lines if line.strip())
        if pending.strip():
            self._lines.append(clip_line(pending))


class HostSession:
    """Boot and pump one dispatcher; every failure ends as a HostError with a one-line reason.

    One HostSession serves a host for the whole run: `run()` is called again, on the same or a
    new transport, each time the host's life loop brings a dispatcher back.
    """

    def __init__(
        self,
        spec: HostSpec,
        payload: Payload,
        on_message: Callable[[HostSession, Message], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        self.spec = spec
        self.label = spec.label
        self._payload = payload
        self._on_message = on_message
        self._config = config
        self._channel: Channel | None = None
        self._conn = Connection(MASTER)
        self._stderr = StderrTail()
        self._waiting_since: float | None = None
        self._silence: str | None = None
        self._stopping = False
        self._stop_asked = False  # by shutdown(), for good: no dispatcher may start after it
        self.hello: Hello | None = None
        self.worked = False
        """This dispatcher was given a job frame: see `Cluster._shutdown`."""
        self.asked = False
        """It was sent a request (a sync, `onall`'s command, which may outlive its caller)."""
        self.slots = 0
        self.bytes_sent = 0
        self._requests: dict[int, Request] = {}
        self._rids = itertools.count(1)

    @property
    def started(self) -> bool:
        """A dispatcher process is running for this session (booting, syncing or serving)."""
        return self._channel is not None

    @property
    def closing(self) -> bool:
        """Nothing more is sent: this side asked the dispatcher to stop, or it said Bye (or its
        stream ended)."""
        return self._stopping or self._conn.their_state is CLOSED

    def send(self, *messages: Message) -> None:
        """Queue frames in one write; the transport buffers it, the dispatcher always reads.

        Only a serving dispatcher gets frames: before its Hello (it may still be reading its
        payload) and once it is closing, they are dropped, as the requeue of this host's
        attempts makes up for."""
        conn = self._conn
        if self._channel is not None and not self.closing and conn.our_state is RUNNING:
            self._write(
                b"".join(map(conn.send, batched(messages) if len(messages) > 1 else messages))
            )

    def _write(self, data: bytes) -> None:
        channel = self._channel
        assert channel is not None
        self.bytes_sent += len(data)
        try:
            channel.stdin.write(data)
        except (RuntimeError, *channel_errors()):  # evaluated only when one was raised
            # RuntimeError: uvloop's word for a pipe it closed when the dispatcher died, which
            # the pump hears of some loop turns later. A dispatcher that cannot hear this side
            # cannot be steered: end it, so the pump sees its stream end and the host is lost;
            # the requeue of its attempts makes up for the frames lost here.
            channel.kill()

    async def send_drained(self, *messages: Message) -> None:
        """Send, then wait for the transport's buffer to drain: flow control for bulk data."""
        channel = self._channel
        if channel is None or self.closing:
            raise HostError(self.label, "connection lost")
        self.send(*messages)
        try:
            async with asyncio.timeout(self._config.dead_after or None):
                await channel.stdin.drain()
        except TimeoutError:
            raise HostError(self.label, "the host stopped reading") from None
        except channel_errors() as exc:
            raise HostError(self.label, f"connection lost: {exc}") from None

    @contextlib.contextmanager
    def request(self) -> Iterator[Request]:
        """A fresh request id whose replies are routed to the yielded Request until exit."""
        if self._channel is None or self.closing or self.hello is None:
            raise HostError(self.label, "not ready")
        self.asked = True
        req = Request(next(self._rids), self.label)
        self._requests[req.rid] = req
        try:
            yield req
        finally:
            del self._requests[req.rid]

    async def run(
        self,
        transport: Transport,
        ready: Callable[[HostSession], None],
        prepare: Callable[[HostSession], Awaitable[None]] | None = None,
    ) -> None:
        """One dispatcher's life; returns after its Bye, raises HostError on any failure.

        `prepare` (a deps sync) runs once the dispatcher said Hello, with frames already
        flowing; `ready` is called only after it succeeded, so no job meets a half-made host.
        """
        if self._stop_asked:  # a cut-off whose cancel was lost: see shutdown()
            raise HostError(self.label, "stopped before its dispatcher started")
        self.hello, self._stopping, self._silence = None, False, None
        self.worked = self.asked = False
        self._conn, self._stderr = Connection(MASTER), StderrTail()
        try:
            self._channel = await transport.start(self._payload)
        except HostError:
            raise
        except OSError as exc:
            raise HostError(self.label, f"cannot start the dispatcher: {exc}") from exc
        if self._stop_asked:  # asked while the process was starting: it is stopped at once
            await self.shutdown()
        error: HostError | None = None
        async with asyncio.TaskGroup() as tasks:
            helpers = [
                tasks.create_task(self._stderr.collect(self._channel.stderr)),
                tasks.create_task(self._heartbeat()),
                tasks.create_task(self._watchdog(self._channel, transport)),
            ]
            try:
                await self._serve(self._channel, ready, prepare, tasks)
            except HostError as exc:
                error = exc  # raised below, not wrapped in the task group's ExceptionGroup
            finally:
                channel, self._channel = self._channel, None
                self._fail_requests(error)  # those the pump could not (it was cancelled)
                channel.close()
                for helper in helpers:
                    helper.cancel()
                await _reap(channel)
        if error is not None:
            raise error

    async def _serve(
        self,
        channel: Channel,
        ready: Callable[[HostSession], None],
        prepare: Callable[[HostSession], Awaitable[None]] | None,
        tasks: asyncio.TaskGroup,
    ) -> None:
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                hello = await self._start(channel)
        except TimeoutError:
            raise HostError(
                self.label, f"dispatcher did not start within {BOOT_TIMEOUT:.0f}s"
            ) from None
        except StartupError as exc:  # not the stream's fault: retried, as ever
            raise HostError(self.label, str(exc)) from None
        except RemoteProtocolError as exc:
            raise protocol_error(self.label, f"garbled start-up: {exc}") from None
        self._greet(hello)
        pump = tasks.create_task(self._pump_to_end(channel))
        if prepare is not None:
            await prepare(self)  # a lost pump fails its requests: prepare raises HostError
        ready(self)
        error = await pump
        if error is not None:
            raise error

    async def _pump_to_end(self, channel: Channel) -> HostError | None:
        """The pump as a task: its failure is returned (raising would tear the task group
        down) and handed to every open request, which would otherwise wait for a reply."""
        error: HostError | None = None
        try:
            await self._pump(channel)
        except HostError as exc:
            error = exc
        self._fail_requests(error)
        return error

    def _fail_requests(self, error: HostError | None) -> None:
        """Every open request gets the host's end as its reply, rather than wait for one."""
        gone = error or HostError(self.label, "the dispatcher exited")
        for req in self._requests.values():
            req.put(gone)

    async def _start(self, channel: Channel) -> Hello:
        """Past the login noise, with the payload shipped if asked, up to the dispatcher's
        Hello; the connection judges every byte, this reads and writes."""
        conn = self._conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(await _read(channel))
            elif isinstance(event, Hello):
                return event
            elif isinstance(event, PayloadWanted):
                await self._send_payload(channel)
            elif isinstance(event, BootFailed):
                raise HostError(self.label, event.reason, permanent=True)
            else:
                assert isinstance(event, ConnectionClosed)
                booting = event.state in (State.BOOTING, State.PAYLOAD)
                what = (
                    "cannot start python3" if booting else "the dispatcher exited during start-up"
                )
                raise await self._died(what)

    async def _send_payload(self, channel: Channel) -> None:
        size = len(self._payload.data)
        log.info(f"{self.label}: dispatcher not cached there, sending it ({size} bytes)")
        try:
            channel.stdin.write(self._conn.send_payload(self._payload.data))
            await channel.stdin.drain()
        except channel_errors():
            raise await self._died("the stub stopped reading its payload") from None

    def _greet(self, hello: Hello) -> None:
        """Size the host from its Hello (the connection checked the version) and answer it."""
        self.hello = hello
        self.slots = self.spec.slots or min(hello.cores, MAX_AUTO_SLOTS)
        if self.slots < hello.cores and not self.spec.slots:
            log.warning(
                f"{self.label}: reports {hello.cores} cores; using {MAX_AUTO_SLOTS} "
                f"(say {hello.cores}/{self.label} to use them all)",
                host=self.label,
            )
        config = self._config
        setup = Setup(
            self.slots, self.label, config.cwd, config.heartbeat, config.dead_after,
            *values(config.polite),  # Setup's next fields are Polite's, in its order
            fold=config.fold,
        )  # fmt: skip
        self._write(self._conn.send(setup))

    async def _pump(self, channel: Channel) -> None:
        conn, loop = self._conn, asyncio.get_running_loop()
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                raise protocol_error(self.label, str(exc)) from None
            if event is NEED_DATA:
                self._waiting_since = loop.time()
                data = await _read(channel)
                self._waiting_since = None
                conn.receive_data(data)
            elif isinstance(event, ConnectionClosed):
                if event.clean or self._stopping:
                    return
                if self._silence is not None:
                    raise HostError(self.label, self._silence)
                raise await self._died("connection lost")
            elif self._requests and (req := self._requests.get(getattr(event, "rid", -1))):
                req.put(event)  # a request's reply goes to its request
            else:
                await self._on_message(self, event)  # any other frame (Bye too) to the owner

    async def shutdown(self, *, tell: bool = True) -> None:
        """Ask the dispatcher to kill its jobs and go; the pump ends at its EOF. With `tell`
        False nothing is sent: the caller cuts the connection, whose end is the dispatcher's
        EOF (the pump takes that end as the clean one it waits for).

        For good: a dispatcher that starts later (its host was connecting, and the cancel that
        should have cut it off was lost, as Python 3.11's wait_for can lose one) is stopped
        as soon as it exists, and none is started after that.
        """
        self._stop_asked = True
        if self._channel is not None and not self.closing:
            if tell:  # only to a serving dispatcher: a booting one gets the EOF
                self.send(Shutdown())
            self._stopping = True
            if tell:
                with contextlib.suppress(RuntimeError, AttributeError, *channel_errors()):
                    self._channel.stdin.write_eof()

    async def _heartbeat(self) -> None:
        """Proof of life for the dispatcher, which gives up after `dead_after` of silence."""
        while True:
            await asyncio.sleep(self._config.heartbeat)
            if self.hello is not None:
                self.send(Heartbeat(0.0))

    async def _watchdog(self, channel: Channel, transport: Transport) -> None:
        """Declare the host lost after `dead_after` of silence (a frozen host, a partition).

        Silence counts only while the pump is waiting to read: when the pump is held up
        delivering results to a slow consumer, the host is not to blame. The check runs often
        enough, and a little early, that the host is declared lost *within* `dead_after`; the
        dispatcher's heartbeats come every `heartbeat` seconds, several times in that span.
        """
        bound, loop = self._config.dead_after, asyncio.get_running_loop()
        tick = min(0.25, bound / 8)
        while bound > 0:
            await asyncio.sleep(tick)
            since = self._waiting_since
            if since is not None and loop.time() - since > bound - 2 * tick:
                self._silence = f"lost: no word from the host for {bound:g}s"
                channel.close()
                transport.close()  # a frozen peer never answers a polite channel close
                return

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
        said = self._stderr.last
        if status is not None and status < 0:  # no exit status came: the channel was cut
            return HostError(
                self.label, f"connection lost during start-up{': ' + said if said else ''}"
            )
        if status == 127:
            reason = f"python3 not found on the host ({said or 'exit 127'})"
            return HostError(self.label, reason, permanent=True)
        detail = f": {said}" if said else (f" (exit status {status})" if status is not None else "")
        return HostError(self.label, f"{what}{detail}")


async def _reap(channel: Channel) -> None:
    """Wait (briefly) for the dispatcher process to end, so no transport outlives the loop."""
    with contextlib.suppress(TimeoutError, *channel_errors()):
        async with asyncio.timeout(EXIT_WAIT):
            await channel.wait()
    channel.kill()


async def _read(channel: Channel) -> bytes:
    """Next bytes from the dispatcher; b"" at EOF, however the connection ended."""
    try:
        return await channel.stdout.read(READ_SIZE)
    except channel_errors():
        return b""
