"""Jobs' stdin on the master's side: each attempt's input streamed to its host in chunks.

An attempt whose job has a stdin (core/batch.py: bytes, a file, a part of one) gets a feed
once its Run is sent: a task that reads the input a chunk at a time and sends it in Input
frames, each after the host's channel drained (the SSH window, or the local pipe), and never
more than INPUT_WINDOW bytes ahead of the dispatcher's InputAcks (docs/protocol.md, 5.6), one
chunk only while the attempt waits in the dispatcher's queue. So
the master holds a chunk per feed whatever the input's size, and a job that does not read its
stdin holds back its own feed only. A retry or a speculative copy is a new attempt, with a
feed of its own that reads the input again from its start.

An InputAck is believed only about an attempt fed on that host, and for no more than was sent
(invariant 8): anything else is the host's protocol error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from dispatcher.protocol import INPUT_CHUNK, INPUT_WINDOW, Input, InputAck, Message

from ..core.batch import FilePart, JobInput
from ..errors import HostError, protocol_error
from ..logs import get_logger

log = get_logger()

SendDrained = Callable[[str, Message], Awaitable[None]]
Reader = Callable[[], bytes]


class _Feed:
    """One attempt's input on its way: sent and acknowledged bytes, and a wake-up for both."""

    def __init__(self, host: str, aid: int) -> None:
        self.host = host
        self.aid = aid
        self.sent = 0
        self.acked = 0
        self.stopped = False  # the job closed its stdin, the attempt ended, the run stopped
        self.window = INPUT_CHUNK  # until the attempt started: see Feeds.started
        self.credit = asyncio.Event()

    def stop(self) -> None:
        self.stopped = True
        self.credit.set()


class Feeds:
    """The feeds of one run, by attempt id; the run's Drive starts, acknowledges and ends them."""

    def __init__(
        self,
        send_drained: SendDrained,
        tasks: asyncio.TaskGroup,
        failed: Callable[[str, int, str], None],
    ) -> None:
        self._send_drained = send_drained
        self._tasks = tasks
        self._failed = failed  # (host, aid, why): the input could not be read; kill the attempt
        self._feeds: dict[int, _Feed] = {}

    def start(self, host: str, aid: int, source: JobInput) -> None:
        """The attempt's Run was just sent: stream its input after it."""
        feed = self._feeds[aid] = _Feed(host, aid)
        self._tasks.create_task(self._feed(feed, source))

    def started(self, aid: int) -> None:
        """The attempt has a process: its feed may run a whole window ahead. Before, a chunk
        only: a dispatcher holds up to 8 queued attempts a slot (the look-ahead), and a window
        for each of them would be a lot of memory for input no job reads yet."""
        feed = self._feeds.get(aid)
        if feed is not None:
            feed.window = INPUT_WINDOW
            feed.credit.set()

    def ack(self, host: str, msg: InputAck) -> None:
        """Credit from the dispatcher; HostError (permanent) when it is not the host's to give."""
        feed = self._feeds.get(msg.aid)
        if feed is None or feed.host != host:
            raise protocol_error(host, f"InputAck about attempt {msg.aid}, not fed to this host")
        if feed.acked + msg.size > feed.sent:
            raise protocol_error(
                host, f"InputAck of {msg.size} bytes, {feed.sent - feed.acked} unacknowledged"
            )
        feed.acked += msg.size
        if msg.closed:
            feed.stop()  # the job closed its stdin: the rest would be thrown away
        feed.credit.set()

    @property
    def feeding(self) -> bool:
        """Some attempt is being fed (else `ended` has nothing to stop)."""
        return bool(self._feeds)

    def ended(self, aid: int) -> None:
        """The attempt's Exit came: no more input, no more InputAck."""
        feed = self._feeds.pop(aid, None)
        if feed is not None:
            feed.stop()

    def host_lost(self, host: str) -> None:
        for aid in [aid for aid, feed in self._feeds.items() if feed.host == host]:
            self.ended(aid)

    def stop_all(self) -> None:
        """The run is over or stops: every feed stops sending (acks are still accepted until
        each attempt's Exit, as its killed attempts end)."""
        for feed in self._feeds.values():
            feed.stop()

    async def _feed(self, feed: _Feed, source: JobInput) -> None:
        try:
            with _open(source) as read:
                while not feed.stopped:
                    data = read()
                    while not feed.stopped and feed.sent - feed.acked + len(data) > feed.window:
                        feed.credit.clear()
                        await feed.credit.wait()
                    if feed.stopped:
                        return
                    feed.sent += len(data)
                    await self._send_drained(feed.host, Input(feed.aid, data, not data))
                    if not data:
                        return
        except HostError:
            return  # the host is lost: its attempts go back to the queue
        except OSError as exc:
            if not feed.stopped:
                why = f"cannot read its input: {exc.strerror or exc}"
                self._failed(feed.host, feed.aid, why)


@contextlib.contextmanager
def _open(source: JobInput) -> Iterator[Reader]:
    """A function giving the input's next chunk (b"" at its end)."""
    if isinstance(source, bytes):
        view = memoryview(source)
        at = 0

        def next_bytes() -> bytes:
            nonlocal at
            chunk = bytes(view[at : at + INPUT_CHUNK])
            at += len(chunk)
            return chunk

        yield next_bytes
        return
    part = source if isinstance(source, FilePart) else FilePart(source)
    with open(part.path, "rb", buffering=0) as file:
        file.seek(part.offset)
        left = part.length

        def next_chunk() -> bytes:
            nonlocal left
            size = INPUT_CHUNK if left is None else min(INPUT_CHUNK, left)
            chunk = file.read(size) if size else b""
            if left is not None:
                left -= len(chunk)
            return chunk

        yield next_chunk
