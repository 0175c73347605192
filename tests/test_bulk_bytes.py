"""The bulk-bytes path of a job that prints a lot, part by part (the real 1 GB runs are in
test_bigout.py): the dispatcher frames an output chunk without copying it (`encode_parts`:
the same bytes as `encode`), the master decodes a frame from a view of its buffer (which must
be let go, or the next read cannot resize it), and a spooled output reaches a file or
/dev/null by sendfile (`Encoder.spans`, `ResultOutput.send_span`): the same bytes, in order
after what was written before, and read and written where the file cannot take a kernel copy.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_connection import running
from test_protocol import messages
from test_spool import pattern, spooled_result

from anet.core.spool import Span, Spool, spans
from anet.streams import sinks
from anet.streams.output import OutputClosed, open_output
from anet.streams.sinks import FORMATS, PLAIN
from dispatcher.connection import Connection
from dispatcher.protocol import (
    MASTER,
    MAX_FRAME,
    OUTPUT_CHUNK,
    SPLIT_AT,
    STDERR,
    STDOUT,
    LocalProtocolError,
    Output,
    RemoteProtocolError,
    bin_header,
    encode,
    encode_parts,
)

# -- the dispatcher's frames ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_a_bin_header_is_the_one_msgpack_writes_before_as_many_bytes(size):
    """Each of the three widths at its edges: a header one width too short would cut the
    length, one too long would make a record no msgpack reader expects."""
    data = b"x" * size
    assert bin_header(size) + data == msgpack.packb(data, use_bin_type=True)


def test_the_widest_bin_header_holds_a_length_of_four_bytes():
    assert bin_header(2**32 - 1) == b"\xc6\xff\xff\xff\xff"
    assert msgpack.unpackb(bin_header(2**20) + bytes(2**20)) == bytes(2**20)


@given(data=st.data())
def test_any_message_in_parts_is_its_frame_byte_for_byte(data: st.DataObject) -> None:
    msg = data.draw(messages)
    assert b"".join(encode_parts(msg)) == encode(msg)


@pytest.mark.parametrize(
    "size", [0, 1, SPLIT_AT - 1, SPLIT_AT, 255, 256, 65535, 65536, OUTPUT_CHUNK]
)
@pytest.mark.parametrize("aid", [0, 127, 128, 2**32, 2**64 - 1])
def test_an_output_chunk_is_framed_around_its_bytes_not_copied(size: int, aid: int) -> None:
    data = pattern(size, aid % 251)
    msg = Output(aid, STDERR, data)
    parts = encode_parts(msg)
    assert b"".join(parts) == encode(msg)
    if size >= SPLIT_AT:
        head, body = parts
        assert body is data  # the very object: never copied
        assert len(head) < 32
    else:
        assert len(parts) == 1


def test_a_frame_in_parts_over_max_frame_is_refused_as_a_whole_one_is() -> None:
    with pytest.raises(LocalProtocolError, match=r"^frame of \d+ bytes exceeds MAX_FRAME$"):
        encode_parts(Output(1, STDOUT, b"x" * MAX_FRAME))
    with pytest.raises(LocalProtocolError, match=r"^cannot encode Output: "):
        encode_parts(Output(2**64, STDOUT, b"x" * SPLIT_AT))  # an aid msgpack cannot carry


def test_send_parts_refuses_what_send_refuses() -> None:
    master = Connection(MASTER)
    with pytest.raises(LocalProtocolError, match="only the dispatcher does"):
        master.send_parts(Output(1, STDOUT, b"x" * SPLIT_AT))


# -- the master's decoding ---------------------------------------------------------------------


def test_frames_decoded_from_the_buffer_leave_it_free_to_grow_and_shrink() -> None:
    master, _ = running()
    chunk = pattern(OUTPUT_CHUNK)
    wire = encode(Output(3, STDOUT, chunk)) * 3
    master.receive_data(wire[:-100])
    first, second = master.next_event(), master.next_event()
    assert (first.data, second.data) == (chunk, chunk)
    master.receive_data(wire[-100:])  # drops what was read: no view of it may be left
    assert master.next_event().data == chunk


def test_a_frame_that_does_not_decode_leaves_no_view_on_the_buffer() -> None:
    master, _ = running()
    body = b"\xc1" * 10  # 0xc1: never used by msgpack
    master.receive_data(len(body).to_bytes(4, "big") + body)
    with pytest.raises(RemoteProtocolError) as caught:
        master.next_event()
    assert caught.value.__traceback__ is not None  # held here, with whatever its frames hold
    master.receive_data(b"more")  # would be a BufferError if a view outlived the decoding


# -- the master's delivery ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anet", "msgpack", "plain"])
def test_spans_are_the_parts_with_each_spool_as_one_span(tmp_path: Path, name: str) -> None:
    encoder = PLAIN if name == "plain" else FORMATS[name]
    result = spooled_result(tmp_path, pattern(3 << 20), pattern(1 << 20, 5))
    assert encoder.spans is not None
    pieces = list(encoder.spans(result))
    assert any(isinstance(piece, Span) for piece in pieces)
    assert b"".join(map(_bytes, pieces)) == b"".join(encoder.parts(result))


def test_a_result_chunked_for_msgpack_spans_each_part(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(sinks, "MAX_RECORD", 1 << 20)
    monkeypatch.setattr(sinks, "PART", 300_000)
    result = spooled_result(tmp_path, pattern(3 << 20), b"")
    encoder = FORMATS["msgpack"]
    assert encoder.spans is not None
    pieces = list(encoder.spans(result))
    assert sum(isinstance(piece, Span) for piece in pieces) == -(-(3 << 20) // 300_000)
    assert b"".join(map(_bytes, pieces)) == b"".join(encoder.parts(result))


def _bytes(piece: bytes | Span) -> bytes:
    if isinstance(piece, Span):
        return b"".join(piece.spool.chunks(start=piece.start, stop=piece.stop))
    return piece


def test_spans_of_bytes_are_the_bytes_and_of_an_empty_spool_nothing(tmp_path: Path) -> None:
    assert list(spans(b"abc", 1)) == [b"bc"]
    assert list(spans(Spool(tmp_path))) == []


@pytest.mark.parametrize("how", ["file", "appended file", "/dev/null"])
def test_a_span_reaches_the_file_after_what_came_before(tmp_path: Path, how: str) -> None:
    """sendfile for a file and /dev/null; a file opened O_APPEND (`anet ... >> out`) cannot
    take it (EINVAL) and is written as before: the same bytes either way, in order, and the
    result marked delivered once they are all out."""
    spool = Spool(tmp_path)
    data = pattern(5 << 20)
    spool.write(data)
    path = Path("/dev/null") if how == "/dev/null" else tmp_path / "out"
    if how == "appended file":
        path.write_bytes(b"before\n")
    mode = "ab" if how == "appended file" else "wb"
    with open(path, mode) as stream:
        marks = asyncio.run(_send(stream, Span(spool, 1000, len(data) - 7)))
    assert marks == [[], [42]]
    if how != "/dev/null":
        lead = b"before\n" if how == "appended file" else b""
        assert path.read_bytes() == lead + b"head:" + data[1000:-7] + b":tail"


async def _send(stream: Any, span: Span) -> list[list[int]]:
    output = await open_output(stream)
    await output.write(b"head:")
    await output.send_span(span)
    marks = [output.delivered()]  # the record's end has not been written yet
    await output.write(b":tail", 42)
    await output.close()
    return [*marks, output.delivered()]


def test_a_span_to_a_pipe_is_read_and_written_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    data = pattern(3 << 20)
    spool.write(data)
    read_end, write_end = os.pipe()
    got = asyncio.run(_through_pipe(write_end, read_end, Span(spool, 0, len(data))))
    assert got == b"head:" + data + b":tail"


async def _through_pipe(write_end: int, read_end: int, span: Span) -> bytes:
    reader = asyncio.get_running_loop().run_in_executor(None, _read_all, read_end)
    with open(write_end, "wb") as stream:
        await _send(stream, span)
    return await reader  # the output's own dup closed with its close(): the reader saw the end


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while piece := os.read(fd, 1 << 16):
        out += piece
    os.close(fd)
    return bytes(out)


def test_a_reader_that_leaves_in_the_middle_of_a_span_ends_the_output(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(pattern(4 << 20))
    read_end, write_end = os.pipe()
    taken, marks = asyncio.run(_reader_leaves(write_end, read_end, Span(spool, 0, spool.size)))
    assert 0 < taken < spool.size
    assert marks == []  # the record never ended: its job is not marked delivered


async def _reader_leaves(write_end: int, read_end: int, span: Span) -> tuple[int, list[int]]:
    loop = asyncio.get_running_loop()
    reader = loop.run_in_executor(None, _read_some_and_leave, read_end)
    with open(write_end, "wb") as stream:
        output = await open_output(stream)
        with pytest.raises(OutputClosed):
            await output.send_span(span)
            await output.write(b"", 42)
        marks = output.delivered()
        await output.close(0.1)
    return await reader, marks


def _read_some_and_leave(fd: int) -> int:
    taken = len(os.read(fd, 1 << 20))
    os.close(fd)
    return taken
