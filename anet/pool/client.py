"""The commands' side of a pool: one request per connection (server.py says which)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..core.record import JobResult
from ..errors import AnetError
from . import wire
from .place import Place


class PoolDown(AnetError):
    """No pool answers at this place."""


class PoolError(AnetError):
    """The pool answered with an error: the user's mistake (no such run, a bad batch)."""


@contextlib.asynccontextmanager
async def _connection(
    place: Place,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    try:
        reader, writer = await asyncio.open_unix_connection(str(place.socket))
    except (FileNotFoundError, ConnectionRefusedError):
        raise PoolDown(f"no pool {place.name!r} is up (`anet up` starts one)") from None
    except OSError as exc:
        raise PoolDown(
            f"cannot reach pool {place.name!r} at {place.socket}: {exc.strerror}"
        ) from None
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _checked(reply: Any, place: Place) -> dict[str, Any]:
    if reply is None:
        raise PoolDown(f"pool {place.name!r} closed the connection without an answer")
    if not isinstance(reply, dict):
        raise wire.WireError(f"pool {place.name!r} answered with a {type(reply).__name__}")
    if "error" in reply:
        raise PoolError(str(reply["error"]))
    return reply


async def request(place: Place, message: dict[str, Any]) -> dict[str, Any]:
    """One request, its one reply (a `wait` may take as long as its run)."""
    async with _connection(place) as (reader, writer):
        writer.write(wire.pack(message))
        await writer.drain()
        return _checked(await wire.read(reader), place)


async def attach(place: Place, run_id: int) -> AsyncIterator[JobResult | dict[str, Any]]:
    """The run's results from its start, each once, then its row (a dict) when it has ended."""
    async with _connection(place) as (reader, writer):
        writer.write(wire.pack({"op": "attach", "run": run_id}))
        await writer.drain()
        while True:
            item = await wire.read(reader)
            if isinstance(item, list):
                yield wire.result_from(item)
            else:
                yield _checked(item, place)
                return


async def is_up(place: Place) -> int | None:
    """The pool's pid when one answers here; None when none does (a socket file left by a
    pool that died answers nothing: it is stale)."""
    try:
        async with asyncio.timeout(5):
            reply = await request(place, {"op": "ping"})
    except (PoolDown, TimeoutError, wire.WireError):
        return None
    return int(reply["pid"])
