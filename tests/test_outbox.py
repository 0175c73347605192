"""The dispatcher's pipes: its queue of frames for the master (every byte once, in order,
however the kernel splits the writes) and its reads into one reused buffer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random

import pytest

from dispatcher.outbox import WRITEV_PARTS, Outbox
from dispatcher.reading import ReadBuffer

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def drain(fd: int) -> bytes:
    out = bytearray()
    while True:
        try:
            piece = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(out)
        out += piece


@pytest.fixture
def pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)  # the smallest pipe: every frame below is split
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    os.close(r)
    os.close(w)


def test_frames_arrive_whole_and_in_order_across_partial_writes(pipe: tuple[int, int]) -> None:
    r, w = pipe
    rng = random.Random(7)
    frames = [rng.randbytes(rng.randint(1, 9000)) for _ in range(300)]
    box = Outbox()
    for frame in frames:
        box.add(frame)
    expected = b"".join(frames)
    assert len(box) == len(expected)
    got = bytearray()
    while box:
        with contextlib.suppress(BlockingIOError):
            box.write_to(w)
        got += drain(r)
        assert len(box) == len(expected) - len(got)
    assert bytes(got) == expected


def test_one_write_takes_many_frames(pipe: tuple[int, int]) -> None:
    """Small frames go many to a syscall (the point of writev), never more than WRITEV_PARTS."""
    r, w = pipe
    box = Outbox()
    for i in range(WRITEV_PARTS + 10):
        box.add(b"%d;" % i)
    first = box.write_to(w)
    assert first == sum(len(b"%d;" % i) for i in range(WRITEV_PARTS))
    box.write_to(w)
    assert not box
    assert drain(r) == b"".join(b"%d;" % i for i in range(WRITEV_PARTS + 10))


def test_clear_and_empty_frames() -> None:
    box = Outbox()
    box.add(b"")
    assert not box
    box.add(b"abc")
    box.clear()
    assert len(box) == 0


def test_reads_into_one_buffer_give_bytes_of_their_own() -> None:
    """The buffer is reused: what one read returned must not change with the next."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    reads = ReadBuffer(1 << 16)
    os.write(w, b"first")
    first = reads.read(r)
    os.write(w, b"SECOND!")
    second = reads.read(r)
    assert (first, second) == (b"first", b"SECOND!")
    with pytest.raises(BlockingIOError):
        reads.read(r)
    os.close(w)
    assert reads.read(r) == b""  # EOF, as os.read says it
    os.close(r)
