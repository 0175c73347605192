"""A TCP proxy that delays every byte by a fixed time each way: latency without tc netem.

    python3 -m bench.delayproxy --delay 0.025 127.0.0.2:PROXY=127.0.0.2:SSHD ...

Kernels without sch_netem (many containers and micro-VMs) cannot add delay on loopback, yet
the latency scenario needs a round trip of tens of milliseconds. Each direction of each
connection is a FIFO of (due time, bytes): data is forwarded in order, each chunk `delay` after
it arrived, so a round trip costs 2 x delay plus the proxy's own time (it runs on the same busy
cores, which the table's notes say). It prints `ready` once listening and runs until its stdin
closes, so it never outlives the bench that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections import deque

CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: deque[tuple[float, bytes]] = deque()
    ready = asyncio.Event()
    ended = False

    async def sender() -> None:
        while queue or not ended:
            if not queue:
                ready.clear()
                await ready.wait()
                continue
            due, data = queue[0]
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    try:
        while data := await reader.read(CHUNK):
            queue.append((loop.time() + delay, data))
            ready.set()
    except ConnectionError:
        pass
    finally:
        ended = True
        ready.set()
    with contextlib.suppress(ConnectionError):
        await task


async def _serve(routes: list[tuple[str, int, str, int]], delay: float) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay), return_exceptions=True
        )

    servers = []
    for listen_host, listen_port, host, port in routes:
        servers.append(
            await asyncio.start_server(
                lambda r, w, t=(host, port): handler(r, w, t), listen_host, listen_port
            )
        )
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # EOF: the bench is done or gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, required=True, help="seconds, each direction")
    parser.add_argument("routes", nargs="+", help="LISTEN_ADDR:PORT=TARGET_ADDR:PORT")
    args = parser.parse_args()
    routes = []
    for route in args.routes:
        listen, _, target = route.partition("=")
        (lh, lp), (th, tp) = listen.rsplit(":", 1), target.rsplit(":", 1)
        routes.append((lh, int(lp), th, int(tp)))
    try:
        import uvloop

        uvloop.run(_serve(routes, args.delay))
    except ImportError:
        asyncio.run(_serve(routes, args.delay))


if __name__ == "__main__":
    main()
