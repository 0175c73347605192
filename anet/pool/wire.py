"""Messages between the pool and its clients: a 4-byte big-endian length, then one msgpack
value (a map for a request or reply, a list for a result). The socket is private, so the bound
is against mistakes, not attacks: a frame of more than MAX_FRAME ends the connection.

A result whose outputs pass CHUNK together goes in parts: a list of 11 fields (the outputs'
sizes in their places, then `True`), then its stdout and its stderr as frames of at most CHUNK
bytes each. Neither side holds such an output whole: the pool reads it from its spool (or its
journal's) a chunk at a time, the client writes it into a spool of its own as it comes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import msgpack

from ..core.record import JobResult, SpooledResult
from ..core.spool import CHUNK, Spool, pieces

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


def result_frames(result: JobResult) -> Iterator[bytes]:
    """A result's frames: one for a small one, else its head and its outputs in chunks (read
    from a spool a chunk at a time: a big output is never whole in memory here)."""
    out, err = result.out, result.err
    head = [
        result.id, result.ok, result.exit_code, result.signal, result.host, result.attempts,
        result.duration,
    ]  # fmt: skip
    if len(out) + len(err) <= CHUNK:
        yield pack([*head, result.stdout, result.stderr, result.error])
        return
    yield pack([*head, len(out), len(err), result.error, True])
    for output in (out, err):
        for piece in pieces(output):
            yield pack(piece)


async def read_result(reader: asyncio.StreamReader, fields: list[Any]) -> JobResult:
    """The result whose first frame was `fields` (a list): whole, or its head, then its
    outputs' chunks read into spools (on disk, as the master spools a big output)."""
    if len(fields) == 10:
        return JobResult(*fields)
    if len(fields) != 11 or fields[10] is not True:
        raise WireError("a result that is not a list of 10 fields, nor a chunked one's head")
    sizes = fields[7:9]
    if not all(isinstance(size, int) and size >= 0 for size in sizes):
        raise WireError("a chunked result's sizes are not sizes")
    spools = [Spool(), Spool()]
    for spool, size in zip(spools, sizes, strict=True):
        while spool.size < size:
            piece = await read(reader)
            if not isinstance(piece, bytes) or spool.size + len(piece) > size or not piece:
                raise WireError("a chunk of a result's output that does not fit it")
            spool.write(piece)
    return SpooledResult(*fields[:7], spools[0], spools[1], fields[9])
