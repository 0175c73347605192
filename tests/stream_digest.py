"""A consumer for tests of big outputs: reads a result stream a piece at a time and keeps, per
job, the sizes and sha256 of its stdout and stderr, never a whole output (anet.results.read holds
one record whole: a 1 GB output would put 1 GB in the test itself).

Only what anet writes is understood: the anet format, msgpack records of the map anet packs,
and JSON lines whose outputs are base64 (a spooled output) or short text; and a result too big
for one record, in parts (its Digest has fields["chunked"]). Written from docs/formats.md, not
from anet.results: a second reader of the layouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

PIECE = 1 << 20


@dataclass
class Digest:
    """One record: its fields but the outputs, and each output's size and sha256 (hex)."""

    fields: dict[str, object] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    hashes: dict[str, Any] = field(
        default_factory=lambda: {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
    )

    def add(self, key: str, data: bytes) -> None:
        self.sizes[key] += len(data)
        self.hashes[key].update(data)

    def sha(self, key: str) -> str:
        return self.hashes[key].hexdigest()


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buf = b""

    def take(self, size: int) -> bytes:
        while len(self._buf) < size:
            more = self._stream.read(max(PIECE, size - len(self._buf)))
            if not more:
                raise EOFError(f"stream ends {size - len(self._buf)} bytes short")
            self._buf += more
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def pieces(self, size: int) -> Iterator[bytes]:
        """`size` bytes in pieces of at most PIECE (a generator)."""
        while size:
            piece = self.take(min(size, PIECE))
            size -= len(piece)
            yield piece

    def base64_string(self) -> Iterator[bytes]:
        """Decoded pieces of a base64 string, up to its closing quote (taken)."""
        pending = b""
        while True:
            if not self._buf:
                self._buf = self._stream.read(PIECE)
                if not self._buf:
                    raise EOFError("base64 string cut")
            end = self._buf.find(b'"')
            text = self._buf if end < 0 else self._buf[:end]
            self._buf = b"" if end < 0 else self._buf[end + 1 :]
            pending += text
            usable = len(pending) // 4 * 4
            if usable:
                yield base64.b64decode(pending[:usable], validate=True)
                pending = pending[usable:]
            if end >= 0:
                assert not pending, "base64 of a length not a multiple of 4"
                return

    def peek(self, size: int) -> bytes:
        while len(self._buf) < size and (more := self._stream.read(PIECE)):
            self._buf += more
        return self._buf[:size]

    def at_end(self) -> bool:
        if self._buf:
            return False
        self._buf = self._stream.read(PIECE)
        return not self._buf

    def until(self, marker: bytes, limit: int = PIECE) -> bytes:
        """The bytes up to `marker` (taken with it), which must come within `limit` bytes."""
        while (at := self._buf.find(marker)) < 0:
            if len(self._buf) > limit:
                raise ValueError(f"no {marker!r} within {limit} bytes")
            more = self._stream.read(PIECE)
            if not more:
                raise EOFError(f"no {marker!r} before the end")
            self._buf += more
        data, self._buf = self._buf[:at], self._buf[at + len(marker) :]
        return data


def digest_anet(stream: BinaryIO) -> dict[int, Digest]:
    src, found = _Reader(stream), {}
    while not src.at_end():
        job_id, size = struct.unpack("<II", src.take(8))
        record = found[job_id] = Digest({"id": job_id})
        for piece in src.pieces(size):
            record.add("stdout", piece)
    return found


def _small(src: _Reader) -> object:
    """One msgpack value of the kinds anet packs besides its outputs."""
    tag = src.take(1)[0]
    if tag <= 0x7F:
        return tag
    if 0xA0 <= tag <= 0xBF:
        return src.take(tag & 0x1F).decode()
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if tag in simple:
        return simple[tag]
    ints = {0xCC: "B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: "b", 0xD1: ">h", 0xD2: ">i"}
    if tag in ints:
        fmt = ints[tag]
        return struct.unpack(fmt, src.take(struct.calcsize(fmt)))[0]
    if tag == 0xCB:
        return struct.unpack(">d", src.take(8))[0]
    if tag in (0xD9, 0xDA):
        size = int.from_bytes(src.take(1 if tag == 0xD9 else 2), "big")
        return src.take(size).decode()
    raise ValueError(f"unexpected msgpack tag {tag:#x}")


def _bin_size(src: _Reader) -> int:
    tag = src.take(1)[0]
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}[tag]
    return int.from_bytes(src.take(width), "big")


def digest_msgpack(stream: BinaryIO) -> dict[int, Digest]:
    src, found = _Reader(stream), {}
    assert src.take(8) == b"ANETMP01"
    while not src.at_end():
        if src.take(4) == b"ANET":  # a header again: ANETMP02 before a chunked result
            assert src.take(4) in (b"MP01", b"MP02")
            continue
        tag = src.take(1)[0]
        if tag == 0x94:  # [id, stream, offset, bin]: a part of a chunked result
            record = found[_small(src)]
            key, offset = _small(src), _small(src)
            assert offset == record.sizes[key], f"part at {offset}, not {record.sizes[key]}"
            for piece in src.pieces(_bin_size(src)):
                record.add(key, piece)
            continue
        assert tag & 0xF0 == 0x80, f"not a fixmap: {tag:#x}"
        record = Digest()
        for _ in range(tag & 0x0F):
            key = _small(src)
            if key in ("stdout", "stderr"):
                for piece in src.pieces(_bin_size(src)):
                    record.add(key, piece)
            else:
                record.fields[key] = _small(src)
        record.fields["chunked"] = "stdout_bytes" in record.fields
        found[record.fields["id"]] = record
    return found


def digest_jsonl(stream: BinaryIO) -> dict[int, Digest]:
    src, found = _Reader(stream), {}
    while not src.at_end():
        if src.peek(1) == b"[":  # [id,"stdout",offset,"<base64>"]: a part
            record = found[int(src.until(b',"')[1:])]
            key, offset = src.until(b'",').decode(), int(src.until(b',"'))
            assert offset == record.sizes[key], f"part at {offset}, not {record.sizes[key]}"
            for piece in src.base64_string():
                record.add(key, piece)
            assert src.take(2) == b"]\n"
            continue
        head = src.until(b',"stdout')
        if src.peek(7) == b'_bytes"':  # the head of a chunked result
            record = Digest(json.loads(head + b',"stdout' + src.until(b"}\n") + b"}"))
            record.fields["chunked"] = True
            found[record.fields["id"]] = record
            continue
        record = Digest(json.loads(head + b"}"))
        for key in ("stdout", "stderr"):
            name = src.until(b'":"')
            if name.endswith(b"_base64"):
                for piece in src.base64_string():
                    record.add(key, piece)
            else:
                record.add(key, json.loads(b'"' + _json_string(src) + b'"').encode())
            if key == "stdout":
                src.until(b',"stderr')
        record.fields["error"] = json.loads(src.until(b"}\n").split(b":", 1)[1])
        record.fields["chunked"] = False
        found[record.fields["id"]] = record
    return found


def _json_string(src: _Reader) -> bytes:
    """A short JSON string's body, up to its closing quote (taken)."""
    body = b""
    while True:
        part = src.until(b'"')
        body += part
        if (len(part) - len(part.rstrip(b"\\"))) % 2 == 0:
            return body
        body += b'"'


DIGESTERS = {"anet": digest_anet, "msgpack": digest_msgpack, "jsonl": digest_jsonl}


def zeros_sha(size: int) -> str:
    """sha256 of `size` zero bytes, computed a piece at a time."""
    sha, block = hashlib.sha256(), bytes(PIECE)
    for _ in range(size // PIECE):
        sha.update(block)
    sha.update(bytes(size % PIECE))
    return sha.hexdigest()
