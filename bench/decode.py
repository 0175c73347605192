"""How fast the master decodes a dispatcher's frames: its CPU per job starts here.

    python3 -m bench.decode [--jobs 20000] [--chunk 65536] [--repeat 5]

The stream is what a dispatcher sends for `--jobs` short jobs: Started, Output, Exit each
(60,000 frames for 20,000 jobs), fed in `--chunk` byte reads as the session reads its channel.
It prints frames per second of `FrameDecoder.feed` (framing and field checks) and, where the
tree has one, of the master's `Connection` (the same plus direction and state checks); then
the CPU per job of a whole `HostSession` pumping that stream from an in-memory channel to an
owner that answers each Exit with a Run, as the engine does at saturation. The best of
`--repeat` runs each. No sshd: the cost of the code, not of the box (on a shared machine the
sshd scenarios vary by a third from run to run). It measures any tree of anet: run it with
`PYTHONPATH=<tree>` from that tree.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

from anet.remote.bootstrap import Payload
from anet.remote.hosts import parse_spec
from anet.remote.session import HostSession, SessionConfig
from anet.remote.transport import Channel
from dispatcher import protocol
from dispatcher.protocol import (
    BOOT_FRAMES,
    BOOT_MARK,
    PROTOCOL_VERSION,
    STDOUT,
    Bye,
    Exit,
    FrameDecoder,
    Hello,
    Message,
    Output,
    Run,
    Started,
)

try:
    from dispatcher import connection
except ImportError:  # a tree from before the session's state machine: the decoder alone
    connection = None  # type: ignore[assignment]


def job_stream(jobs: int) -> bytes:
    """The frames of `jobs` short jobs, as a dispatcher sends them."""
    frames = []
    for aid in range(jobs):
        frames.append(Started(aid, 4242 + aid % 1000, 1 + aid % 8))
        frames.append(Output(aid, STDOUT, b"job %d done\n" % aid))
        frames.append(Exit(aid, 0, None, 0.0123, 0.004, 2048))
    return b"".join(map(protocol.encode, frames))


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def with_decoder(reads: list[bytes]) -> int:
    decoder = FrameDecoder()
    return sum(len(decoder.feed(data)) for data in reads)


def with_connection(reads: list[bytes]) -> int:
    """The master's Connection, past its start-up (boot mark, Hello), then the job frames."""
    assert connection is not None
    conn = connection.Connection(connection.MASTER)
    hello = Hello(PROTOCOL_VERSION, "h", 8, "3.11", 0.0, 42, "/w")
    conn.receive_data(protocol.BOOT_MARK + protocol.BOOT_FRAMES + protocol.encode(hello))
    assert isinstance(conn.next_event(), Hello)
    need_data = connection.NEED_DATA
    count = 0
    for data in reads:
        conn.receive_data(data)
        while conn.next_event() is not need_data:
            count += 1
    return count


def best_rate(decode: Callable[[list[bytes]], int], reads: list[bytes], repeat: int) -> float:
    """Frames per second, the best of `repeat` runs."""
    best = float("inf")
    frames = 0
    for _ in range(repeat):
        start = time.perf_counter()
        frames = decode(reads)
        best = min(best, time.perf_counter() - start)
    return frames / best


class _Channel:
    """A dispatcher that says the whole stream, `chunk` bytes a read, and reads nothing."""

    connected = True

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.pos = data, chunk, 0

    async def read(self, n: int = -1) -> bytes:
        await asyncio.sleep(0)  # a read is a wait on the event loop, as on a real channel
        piece = self.data[self.pos : self.pos + self.chunk]
        self.pos += len(piece)
        return piece

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    async def wait(self) -> int | None:
        return 0

    def close(self) -> None:
        pass

    async def start(self, payload: Payload) -> Channel:
        return Channel(self, self, _Silent(), self.close, self.wait, self.close)  # type: ignore[arg-type]


class _Silent:
    async def read(self, n: int = -1) -> bytes:
        return b""


def session_cost(stream: bytes, jobs: int, chunk: int) -> float:
    """CPU microseconds per job of one HostSession pumping `stream` (then Bye)."""
    hello = Hello(PROTOCOL_VERSION, "h", 8, "3.11", 0.0, 42, "/w")
    data = BOOT_MARK + BOOT_FRAMES + protocol.encode(hello) + stream + protocol.encode(Bye())
    ended = 0

    async def on_message(session: HostSession, msg: Message) -> None:
        nonlocal ended
        if type(msg) is Exit:
            ended += 1
            session.send(Run(jobs + ended, ended, b"echo %d" % ended))

    async def pump() -> Any:
        config = SessionConfig(None, "", heartbeat=3.0, dead_after=15.0)
        session = HostSession(parse_spec("h"), Payload(b"", "", ""), on_message, config)
        await session.run(_Channel(data, chunk), lambda session: None)  # type: ignore[arg-type]

    before = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(pump())
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert ended == jobs
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    stream = job_stream(args.jobs)
    reads = chunks(stream, args.chunk)
    contenders = [("FrameDecoder.feed", with_decoder)]
    if connection is not None:
        contenders.append(("Connection(MASTER)", with_connection))
    for name, decode in contenders:
        rate = best_rate(decode, reads, args.repeat)
        print(f"{name:20} {3 * args.jobs:,} frames: {rate / 1000:,.0f}k frames/s")
    cost = min(session_cost(stream, args.jobs, args.chunk) for _ in range(args.repeat))
    print(f"{'HostSession':20} {args.jobs:,} jobs: {cost:.1f} us of CPU per job")


if __name__ == "__main__":
    main()
