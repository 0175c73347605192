"""One host's life on a fake clock: connect, fail, back off, come back, give up; no sleeping.

The transport and the session are in-memory fakes scripted by the test; the loop's clock jumps
whenever every task waits (tests/fakeclock.py), so the times asserted are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random

from fakeclock import fake_clock

from anet.core.backoff import Backoff
from anet.errors import HostError
from anet.remote.hostlife import HostPhase, HostState, host_life, stuck
from anet.remote.hosts import parse_spec


class Transport:
    """Connects after `refusals` refused tries, each taking `handshake` seconds."""

    def __init__(self, refusals: int = 0, handshake: float = 0.1) -> None:
        self.refusals, self.handshake = refusals, handshake
        self.connected = False
        self.tries: list[float] = []

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.tries.append(loop.time())
        await asyncio.sleep(self.handshake)
        if len(self.tries) <= self.refusals:
            raise HostError("h", "connection refused")
        self.connected = True

    def close(self) -> None:
        self.connected = False


class Session:
    """Each `run` serves `serve` seconds, then ends as scripted: a lost connection (the
    transport drops), a dead dispatcher (the transport stays), or a permanent error."""

    label = "h"
    slots = 4
    hello = type("Hello", (), {"hostname": "h", "python": "3.11", "cores": 4})()

    def __init__(self, transport: Transport, endings: list[str], serve: float = 10.0) -> None:
        self.transport, self.endings, self.serve = transport, endings, serve
        self.runs: list[float] = []
        self.closing = asyncio.Event()  # the cluster's Shutdown: the dispatcher says Bye

    async def run(self, transport, ready, prepare=None) -> None:
        self.runs.append(asyncio.get_running_loop().time())
        if prepare is not None:
            await prepare(self)
        ready(self)
        await asyncio.sleep(self.serve)
        ending = self.endings.pop(0) if self.endings else "forever"
        if ending == "forever":
            await self.closing.wait()
            return
        if ending == "lost":
            self.transport.connected = False
            raise HostError("h", "connection lost")
        if ending == "died":
            raise HostError("h", "the dispatcher exited")
        raise HostError("h", ending, permanent=True)


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []

    def _note(self, what: str) -> None:
        self.log.append((asyncio.get_running_loop().time(), what))

    def host_ready(self, session) -> None:
        self._note("ready")

    async def host_gone(self, label: str) -> None:
        self._note("gone")

    async def host_failed(self, label: str) -> None:
        self._note("failed")

    def host_event(self, label: str, event: str, detail: str | None) -> None:
        self._note(f"event {event}")


def state(seed: int = 1) -> HostState:
    return HostState(parse_spec("h"), backoff=Backoff(rng=random.Random(seed)))


async def live(host: HostState, session: Session, transport: Transport, until: float) -> Events:
    events, closing = Events(), session.closing
    asyncio.get_running_loop().call_later(until, closing.set)
    await host_life(host, session, transport, events, closing)
    return events


def test_refused_connections_are_retried_with_growing_jittered_delays_until_one_works():
    transport = Transport(refusals=10)
    host = state(seed=7)
    session = Session(transport, [])
    with fake_clock() as run:
        run(live(host, session, transport, until=1000.0))
    expected = Backoff(rng=random.Random(7))
    gaps = [b - a - transport.handshake for a, b in itertools.pairwise(transport.tries)]
    assert len(transport.tries) == 11 and len(session.runs) == 1
    assert [round(g, 9) for g in gaps] == [round(expected.next_delay(), 9) for _ in range(10)]
    assert host.state == HostPhase.CLOSED and host.failures == 10 and host.ever_ready


def test_a_dead_dispatcher_restarts_over_the_same_connection_a_lost_one_reconnects():
    transport = Transport()
    session = Session(transport, ["died", "lost"], serve=10.0)
    host = state()
    with fake_clock() as run:
        events = run(live(host, session, transport, until=100.0))
    assert len(transport.tries) == 2  # the death kept the connection; the loss did not
    assert len(session.runs) == 3
    kinds = [what for _, what in events.log]
    assert kinds.count("ready") == 3 and kinds.count("gone") == 3
    timeline = [k for k in kinds if k.startswith("event")]
    assert timeline == ["event ready", "event lost", "event back", "event lost", "event back"]


def test_a_permanent_error_gives_the_host_up_and_it_is_never_tried_again():
    transport = Transport()
    session = Session(transport, ["authentication failed"], serve=1.0)
    host = state()
    with fake_clock() as run:
        events = run(live(host, session, transport, until=1000.0))
    assert host.state == HostPhase.FAILED and host.error == "authentication failed"
    assert len(session.runs) == 1
    assert events.log[-1] == (1.1, "failed")  # at once, not after the cluster closed


def test_closing_ends_a_host_that_is_backing_off_at_once():
    transport = Transport(refusals=100)
    host = state()
    session = Session(transport, [])
    with fake_clock() as run:

        async def main():
            events = await live(host, session, transport, until=30.0)
            return asyncio.get_running_loop().time(), events

        ended, _ = run(main())
    assert ended == 30.0 and host.state == HostPhase.CLOSED


def test_stuck_only_when_no_host_can_ever_take_the_work():
    a, b = state(), state()
    a.state = b.state = HostPhase.CONNECTING
    assert stuck([a, b]) is None  # still trying for the first time
    a.state, a.failures, a.error = HostPhase.BACKING_OFF, 1, "connection refused"
    assert stuck([a, b]) is None
    b.state, b.failures, b.error = HostPhase.BACKING_OFF, 1, "no route"
    assert stuck([a, b]) == "no usable host (h: connection refused; h: no route)"
    b.ever_ready = True  # it worked once: it is waited for
    assert stuck([a, b]) is None
    a.state = b.state = HostPhase.FAILED
    assert stuck([a, b]) is not None
    b.state = HostPhase.READY
    assert stuck([a, b]) is None


class SwallowingTransport(Transport):
    """A handshake that completes although its task was cancelled, as Python 3.11's
    `asyncio.wait_for` (which asyncssh.connect uses) returns a result that arrived in the same
    loop iteration as the cancel, and drops the cancel."""

    async def connect(self) -> None:
        self.tries.append(asyncio.get_running_loop().time())
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(self.handshake)
        self.connected = True


def test_a_host_cancelled_while_connecting_starts_no_dispatcher_even_if_the_cancel_is_lost():
    """The 32-host run: hosts still connecting when the last job ended were cancelled, but on
    3.11 a cancel can be lost in the handshake's wait_for; the host then booted a dispatcher
    that nobody told to stop, and the run waited out the 5 s shutdown bound for it."""
    transport = SwallowingTransport(handshake=1.0)
    host = state()
    session = Session(transport, [])

    async def main() -> float:
        closing = session.closing
        life = asyncio.ensure_future(host_life(host, session, transport, Events(), closing))
        await asyncio.sleep(0.5)  # mid-handshake: the cluster closes and cuts the host off
        closing.set()
        life.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await life
        return asyncio.get_running_loop().time()

    with fake_clock() as run:
        ended = run(main())
    assert session.runs == [], "a dispatcher was started after the cluster closed"
    assert ended == 0.5 and host.state == HostPhase.CLOSED
