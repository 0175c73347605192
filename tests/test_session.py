"""One HostSession over an in-memory channel, on a fake clock: no sockets, no processes.

The dispatcher is the test's: a `Connection(DISPATCHER)` (or raw bytes, to lie) scripted line by
line; the session is anet's own. The loop's clock jumps whenever every task waits
(tests/fakeclock.py), so "lost within 15 s of silence" is checked in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from fakeclock import fake_clock

from anet.errors import HostError
from anet.remote.bootstrap import Payload
from anet.remote.hosts import parse_spec
from anet.remote.session import FOLD, HostSession, SessionConfig
from anet.remote.transport import Channel
from dispatcher.connection import NEED_DATA, Connection
from dispatcher.forked import Cancel
from dispatcher.procs import FindProcs
from dispatcher.protocol import (
    BOOT_ERROR,
    BOOT_FRAMES,
    BOOT_MARK,
    BOOT_NEED_PAYLOAD,
    DISPATCHER,
    PROTOCOL_VERSION,
    Bye,
    Heartbeat,
    Hello,
    Kill,
    Message,
    Run,
    Setup,
    Shutdown,
    Started,
    encode,
)
from dispatcher.syncproto import SyncOffer

HELLO = Hello(PROTOCOL_VERSION, "node1", 4, "3.11.7", 0.5, 4242, "/w")
PAYLOAD = Payload(b"the dispatcher's zip", "0" * 64, "stub")
DEAD_AFTER = 15.0


class Pipe:
    """One direction of the channel: what the fake host says, read by the session."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._eof = False
        self._more = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if data:
            self._data += data
        else:
            self._eof = True
        self._more.set()

    async def read(self, n: int = -1) -> bytes:
        while not self._data and not self._eof:
            self._more.clear()
            await self._more.wait()
        chunk = bytes(self._data[: n if n > 0 else None])
        del self._data[: len(chunk)]
        return chunk


class FakeHost:
    """Transport, channel and dispatcher at once: what the session writes is in `written`."""

    connected = True

    def __init__(self) -> None:
        self.conn = Connection(DISPATCHER)
        self.stdout, self.stderr = Pipe(), Pipe()
        self.written = bytearray()
        self.eof_written = False
        self.status: int | None = 0
        self._ended = asyncio.Event()

    # -- the transport and its channel, as the session sees them --

    async def connect(self) -> None:
        pass

    async def start(self, payload: Payload) -> Channel:
        return Channel(self, self.stdout, self.stderr, self.end, self.wait, self.end)

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        self.eof_written = True

    async def wait(self) -> int | None:
        await self._ended.wait()
        return self.status

    def close(self) -> None:
        self.end()

    # -- the test's side --

    def say(self, *said: Message | bytes) -> None:
        """Send messages through the dispatcher's Connection, or raw bytes (a lie)."""
        for each in said:
            self.stdout.feed(each if isinstance(each, bytes) else self.conn.send(each))

    def greet(self) -> None:
        self.say(self.conn.start(), HELLO)

    def end(self, status: int | None = None, stderr: bytes = b"") -> None:
        """The dispatcher process ends: its stderr, then end of file, then its status."""
        if status is not None:
            self.status = status
        self.stderr.feed(stderr)
        self.stderr.feed(b"")
        self.stdout.feed(b"")
        self._ended.set()

    def heard(self) -> list[Message]:
        """What the session sent, as this dispatcher's Connection reads it."""
        self.conn.receive_data(bytes(self.written))
        self.written.clear()
        got = []
        while (event := self.conn.next_event()) is not NEED_DATA:
            got.append(event)
        return got


class Owner:
    """The session's owner: what it was given, and when."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.ready_at: float | None = None

    async def on_message(self, session: HostSession, msg: Message) -> None:
        self.messages.append(msg)

    def ready(self, session: HostSession) -> None:
        self.ready_at = asyncio.get_running_loop().time()


def serve(
    script: Callable[[FakeHost, HostSession], Coroutine[Any, Any, None]],
) -> tuple[HostError | None, float, FakeHost, Owner]:
    """Run a session against a FakeHost driven by `script`, on a fake clock; returns how the
    session ended (None: it returned), when, the host and the owner."""
    owner = Owner()

    async def main() -> tuple[HostError | None, float, FakeHost]:
        host = FakeHost()
        config = SessionConfig(None, "", heartbeat=3.0, dead_after=DEAD_AFTER)
        session = HostSession(parse_spec("node1"), PAYLOAD, owner.on_message, config)
        error: HostError | None = None
        async with asyncio.timeout(100), asyncio.TaskGroup() as tasks:
            tasks.create_task(script(host, session))
            try:
                await session.run(host, owner.ready)  # type: ignore[arg-type]
            except HostError as exc:
                error = exc
        return error, asyncio.get_running_loop().time(), host

    with fake_clock() as run:
        error, when, host = run(main())
    return error, when, host, owner


async def then_silent(host: FakeHost, session: HostSession) -> None:
    host.greet()


def test_a_silent_host_is_lost_within_dead_after_on_the_loops_clock():
    error, when, host, owner = serve(then_silent)
    assert error is not None and not error.permanent
    assert error.reason == f"lost: no word from the host for {DEAD_AFTER:g}s"
    assert owner.ready_at == 0.0
    assert DEAD_AFTER - 0.5 <= when <= DEAD_AFTER  # within dead_after, a tick or two early
    heard = host.heard()
    assert heard[0] == Setup(4, "node1", "", 3.0, DEAD_AFTER, fold=FOLD)
    assert heard[1:] == [Heartbeat(0.0)] * 4  # every 3 s while it waited


def test_a_host_that_keeps_talking_is_never_lost():
    async def heartbeats(host: FakeHost, session: HostSession) -> None:
        host.greet()
        for _ in range(20):
            await asyncio.sleep(3.0)
            host.say(Heartbeat(0.25))
        host.say(Bye())
        host.end()

    error, when, _, owner = serve(heartbeats)
    assert error is None and when == 60.0
    assert owner.messages == [Heartbeat(0.25)] * 20 + [Bye()]


_MASTERS_ONLY = [
    Setup(4, "node1", "", 3.0, 15.0, fold=FOLD),
    Run(7, 7, b"rm -rf ~"),
    Kill(7, 2.0),
    Shutdown(),
    SyncOffer(1, b"tree", 1, 1),
    FindProcs(1, "sshd", "boot", 1, 1.0),
    Cancel(1),
]


@pytest.mark.parametrize("lie", _MASTERS_ONLY, ids=lambda m: type(m).__name__)
def test_a_dispatcher_that_sends_what_only_the_master_sends_is_given_up(lie: Message):
    async def lying(host: FakeHost, session: HostSession) -> None:
        host.greet()
        host.say(Started(1, 100, 1), encode(lie), Bye())
        host.end()

    error, _, _, owner = serve(lying)
    name = type(lie).__name__
    assert error is not None and error.permanent, error
    assert (
        error.reason == f"protocol error: the dispatcher sent {name}, which only the master sends"
    )
    assert owner.messages == [Started(1, 100, 1)]  # what came before it, not the lie


def test_frames_after_bye_are_a_protocol_error():
    async def after_bye(host: FakeHost, session: HostSession) -> None:
        host.greet()
        host.say(Bye(), encode(Started(1, 100, 1)))
        host.end()

    error, _, _, owner = serve(after_bye)
    assert error is not None and error.permanent
    assert error.reason == "protocol error: the dispatcher sent Started after Bye"
    assert owner.messages == [Bye()]


def test_a_second_hello_is_a_protocol_error():
    async def twice(host: FakeHost, session: HostSession) -> None:
        host.greet()
        host.say(encode(HELLO))

    error, _, _, _ = serve(twice)
    assert error is not None and error.permanent
    assert error.reason == "protocol error: the dispatcher sent a second Hello"


_START_UP: dict[str, tuple[bytes, int | None, bytes, str, bool]] = {
    # what the host says, its exit status, its stderr: the reason, given up?
    "noise over 1 MiB": (
        b"\n" * (1 << 20) + b"!",
        None,
        b"",
        "the login shell printed over 1 MiB before anet could start",
        False,
    ),
    "a boot error": (
        b"motd\n" + BOOT_MARK + BOOT_ERROR + b"python 3.7 is too old: anet needs 3.8\n",
        3,
        b"",
        "python 3.7 is too old: anet needs 3.8",
        True,
    ),
    "an unknown boot reply": (BOOT_MARK + b"Q", None, b"", "unexpected start-up reply b'Q'", False),
    "a first frame that is no Hello": (
        BOOT_MARK + BOOT_FRAMES + encode(Started(1, 2, 1)),
        None,
        b"",
        "dispatcher spoke Started before Hello",
        False,
    ),
    "another protocol version": (
        BOOT_MARK + BOOT_FRAMES + encode(Hello(1, "h", 1, "3.8", 0.0, 1, "/w")),
        None,
        b"",
        f"dispatcher speaks protocol 1, anet {PROTOCOL_VERSION}",
        False,
    ),
    "a garbled first frame": (
        BOOT_MARK + BOOT_FRAMES + b"\x00\x00\x00\x01\xc1",
        None,
        b"",
        "protocol error: garbled start-up: undecodable frame body",
        True,
    ),
    "no python3": (
        b"",
        127,
        b"bash: line 1: python3: command not found\n",
        "python3 not found on the host (bash: line 1: python3: command not found)",
        True,
    ),
    "a login that fails": (
        b"motd\n",
        1,
        b"This account is currently not available.\n",
        "cannot start python3: This account is currently not available.",
        False,
    ),
    "a connection cut while booting": (
        b"motd\n",
        -1,
        b"",
        "connection lost during start-up",
        False,
    ),
    "a dispatcher that dies at once": (
        BOOT_MARK + BOOT_FRAMES,
        1,
        b"",
        "the dispatcher exited during start-up (exit status 1)",
        False,
    ),
}


@pytest.mark.parametrize(
    ("said", "status", "stderr", "reason", "permanent"),
    list(_START_UP.values()),
    ids=list(_START_UP),
)
def test_start_up_failures_keep_their_one_line_reasons(
    said: bytes, status: int | None, stderr: bytes, reason: str, permanent: bool
):
    async def failing(host: FakeHost, session: HostSession) -> None:
        host.say(said)
        if status is not None:
            host.end(status, stderr)

    error, _, _, owner = serve(failing)
    assert error is not None and error.reason.startswith(reason), error
    assert error.permanent is permanent
    assert owner.ready_at is None


def test_the_payload_goes_when_the_stub_asks_and_setup_after_hello():
    async def cache_miss(host: FakeHost, session: HostSession) -> None:
        host.say(b"motd\n" + BOOT_MARK + BOOT_NEED_PAYLOAD + b"\n")
        while not host.written:
            await asyncio.sleep(0.01)
        assert bytes(host.written) == b"%d\n" % len(PAYLOAD.data) + PAYLOAD.data
        host.written.clear()
        host.greet()
        await asyncio.sleep(0.01)
        assert host.heard() == [Setup(4, "node1", "", 3.0, DEAD_AFTER, fold=FOLD)]
        await session.shutdown()
        assert host.heard() == [Shutdown()] and host.eof_written
        host.say(Bye())
        host.end()

    error, _, _, owner = serve(cache_miss)
    assert error is None and owner.ready_at is not None
    assert owner.messages == [Bye()]


def test_a_dispatcher_still_booting_gets_no_frame_only_the_end_of_its_input():
    """A frame written while the stub may still read its payload could be swallowed by its
    buffered stdin; so a booting dispatcher is stopped by the end of its input alone."""

    async def booting(host: FakeHost, session: HostSession) -> None:
        host.say(b"motd\n")
        await asyncio.sleep(1.0)
        session.send(Heartbeat(0.0))  # from an owner that is too early: dropped
        await session.shutdown()
        assert host.written == b"" and host.eof_written
        host.end(1)

    error, _, _, _ = serve(booting)
    assert error is not None and error.reason.startswith("cannot start python3")


class SlowStartHost(FakeHost):
    """A host whose dispatcher process takes `delay` seconds to start (an SSH session being
    opened); `starts` counts the processes asked for."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay, self.starts = delay, 0

    async def start(self, payload: Payload) -> Channel:
        self.starts += 1
        await asyncio.sleep(self.delay)
        return await super().start(payload)


def _session(owner: Owner) -> HostSession:
    config = SessionConfig(None, "", heartbeat=3.0, dead_after=DEAD_AFTER)
    return HostSession(parse_spec("node1"), PAYLOAD, owner.on_message, config)


def test_a_session_told_to_stop_before_it_started_starts_no_dispatcher():
    """The cluster stops every session, then cuts off those with no dispatcher yet; a cut-off
    that is lost (a cancel dropped by Python 3.11's wait_for) must not start one nobody stops."""
    owner, host = Owner(), SlowStartHost()

    async def main() -> HostError:
        session = _session(owner)
        await session.shutdown()
        with pytest.raises(HostError) as caught:
            await session.run(host, owner.ready)  # type: ignore[arg-type]
        return caught.value

    with fake_clock() as run:
        error = run(main())
    assert host.starts == 0 and owner.ready_at is None
    assert error.reason == "stopped before its dispatcher started"


def test_a_dispatcher_started_while_the_session_was_told_to_stop_gets_its_end_of_input():
    owner, host = Owner(), SlowStartHost(delay=1.0)

    async def main() -> HostError | None:
        session = _session(owner)
        running = asyncio.ensure_future(session.run(host, owner.ready))  # type: ignore[arg-type]
        await asyncio.sleep(0.5)  # the SSH session is being opened
        await session.shutdown()
        await asyncio.sleep(1.0)
        assert host.eof_written and host.written == b"", "the new dispatcher was not stopped"
        host.end(0)
        try:
            await running
        except HostError as exc:
            return exc
        return None

    with fake_clock() as run:
        error = run(main())
    assert host.starts == 1 and owner.ready_at is None
    assert error is not None  # its end during start-up; host_life drops it, the cluster closing
