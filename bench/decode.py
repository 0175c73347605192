"""How fast the master decodes a dispatcher's frames: its CPU per job starts here.

    python3 -m bench.decode [--jobs 20000] [--chunk 65536] [--repeat 5]

The stream is what a dispatcher sends for `--jobs` short jobs: Started, Output, Exit each
(60,000 frames for 20,000 jobs), fed in `--chunk` byte reads as the session reads its channel.
It prints frames per second of `FrameDecoder.feed` (framing and field checks) and, where the
tree has one, of the master's `Connection` (the same plus direction and state checks), the
best of `--repeat` runs each. No sshd, no asyncio: the cost of the code, not of the box.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from dispatcher import protocol
from dispatcher.protocol import PROTOCOL_VERSION, STDOUT, Exit, FrameDecoder, Hello, Output, Started

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reads = chunks(job_stream(args.jobs), args.chunk)
    contenders = [("FrameDecoder.feed", with_decoder)]
    if connection is not None:
        contenders.append(("Connection(MASTER)", with_connection))
    for name, decode in contenders:
        rate = best_rate(decode, reads, args.repeat)
        print(f"{name:20} {3 * args.jobs:,} frames: {rate / 1000:,.0f}k frames/s")


if __name__ == "__main__":
    main()
