"""One HostSession over the real local transport: a dispatcher process on pipes.

What only real pipes show: once a dispatcher has died, uvloop raises RuntimeError on a write to
its closed pipe (the stock loop only logs), and the session learns of the death some loop
iterations later (the pump reads the end of the stream, then the channel is reaped). Every
frame the master sends in between must be lost quietly, never raise into the heartbeat or the
drive and take the master down.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest
import uvloop

from anet.errors import HostError
from anet.remote.bootstrap import payload
from anet.remote.hosts import parse_spec
from anet.remote.session import HostSession, SessionConfig
from anet.remote.transport import LocalTransport
from dispatcher.protocol import Heartbeat, Message

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


def _send_until_the_session_ends(loop: Callable[[], asyncio.AbstractEventLoop]) -> list[object]:
    """Kill a ready local session's dispatcher, then send a frame at every turn of the loop
    until the session ends. How the session and the sender ended, and how many were sent."""

    async def on_message(session: HostSession, msg: Message) -> None:
        pass

    async def sender(session: HostSession) -> int:
        assert session.hello is not None
        os.kill(session.hello.pid, signal.SIGKILL)
        sent = 0
        async with asyncio.timeout(30):
            while session.started:
                session.send(Heartbeat(0.0))
                sent += 1
                await asyncio.sleep(0)
        return sent

    async def main() -> list[object]:
        session = HostSession(parse_spec(":"), payload(), on_message, SessionConfig(None, ""))
        senders: list[asyncio.Task[int]] = []

        def ready(session: HostSession) -> None:
            senders.append(asyncio.get_running_loop().create_task(sender(session)))

        ended: BaseException | None = None
        try:
            async with asyncio.timeout(30):
                await session.run(LocalTransport(), ready)
        except BaseException as exc:  # how it ended is the result
            ended = exc
        assert senders, f"the session never became ready: {ended!r}"
        sent = await asyncio.gather(*senders, return_exceptions=True)
        return [ended, sent[0]]

    with asyncio.Runner(loop_factory=loop) as runner:
        return runner.run(main())


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_frames_sent_to_a_dispatcher_that_died_are_lost_quietly_and_the_host_is_lost(loop):
    ended, sent = _send_until_the_session_ends(loop)
    assert isinstance(sent, int), f"a send raised: {sent!r}"
    assert sent > 1  # the window between the death and the session's end was exercised
    assert isinstance(ended, HostError) and not ended.permanent, repr(ended)
