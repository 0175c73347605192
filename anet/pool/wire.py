"""Messages between the pool and its clients: a 4-byte big-endian length, then one msgpack
value (a map for a request or reply, a list for a result). The socket is private, so the bound
is against mistakes, not attacks: a frame of more than MAX_FRAME ends the connection."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from ..core.record import JobResult

MAX_FRAME = 1 << 30
_LENGTH = struct.Struct(">I")


class WireError(Exception):
    """The other side broke the framing, or left mid-frame."""


def pack(value: Any) -> bytes:
    body = msgpack.packb(value, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise WireError(f"a message of {len(body)} bytes, over {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> Any:
    """The next value; None at a clean end (between frames), WireError at a torn one."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("the connection ended inside a frame") from None
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes, over {MAX_FRAME}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise WireError("the connection ended inside a frame") from None
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise WireError(f"a frame that does not decode: {exc}") from None


def result_fields(result: JobResult) -> list[Any]:
    """A result as a list; its output read whole (a spooled output too, which is a known
    limit of the pool's first version: see docs/daemon.md)."""
    return [
        result.id, result.ok, result.exit_code, result.signal, result.host, result.attempts,
        result.duration, result.stdout, result.stderr, result.error,
    ]  # fmt: skip


def result_from(fields: list[Any]) -> JobResult:
    if not isinstance(fields, list) or len(fields) != 10:
        raise WireError("a result that is not a list of 10 fields")
    return JobResult(*fields)
