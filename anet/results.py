"""Read anet result streams back: the consumer library.

    import sys
    import anet.results

    for rec in anet.results.read(sys.stdin.buffer):
        print(rec.id, rec.ok, len(rec.stdout))

`read` yields one `JobResult` per record, streaming: it holds one record (and a 64 KiB buffer) at
a time, so a stream of any length iterates in constant memory, and a record is yielded as soon as
its last byte has arrived (text: once the next record starts or the stream ends, since only then
is it known whether a stderr block follows). The stream is any object with a blocking
`read(n)`; its `read1(n)` is used when it has one, so a pipe is read without waiting for a full
buffer. Short reads are fine.

The formats are specified in `anet.sinks`. With `format=None` the first bytes choose:
b"ANETMP01" is msgpack, b"--- job " is text, `{` then a quoted key and `:` is jsonl, anything
else (an empty stream too) is anet. An anet stream whose first job id happens to spell one of
those (e.g. id 1413828161 is b"ANET") is misread; pass format="anet" when that can happen.

The anet format carries only each job's id and stdout, and only successful jobs: its records
come back as JobResult(id, ok=True, exit_code=0, signal=None, host="", attempts=1,
duration=0.0, stdout=..., stderr=b"").

A clean end of stream at a record boundary ends the iteration; a truncated or corrupt stream
raises ResultFormatError with a one-line message naming the byte offset. A msgpack record over
`anet.sinks.MAX_RECORD` bytes (1 GiB), a JSON line over `MAX_BIG_RECORD` (4 GiB - 1), an anet
stdout over 4 GiB - 1 counts as corrupt (text gives sizes in decimal: no limit). Unknown
msgpack/JSON keys are ignored.

A result too big for one msgpack record or JSON line comes in parts (a head with the outputs'
sizes, then [id, stream, offset, data] parts: see anet.sinks); `read` puts them together.
A record is held whole in memory, and so is a result in parts once put together; with
`spool=True`, an output past 1 MiB of a result in parts, a msgpack record (read a value at
a time) or a text record is written into a `Spool` as it arrives, and its record is a
`SpooledResult`: memory holds one part (12 MiB at most) however big the output; a JSON line
is still read whole (up to 4 GiB).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, Final

import msgpack

from anet.core.record import JobResult, SpooledResult
from anet.core.spool import SPOOL_AT, Output, Spool
from anet.errors import ResultFormatError, UsageError
from anet.streams import sinks

CHUNK: Final = 64 * 1024
"""How much the reader asks its stream for at a time."""

_ANET_HEAD = struct.Struct("<II")
_JSON_START = re.compile(rb'\{\s*"[A-Za-z_]\w*"\s*:')
_TEXT_HEAD = re.compile(
    r"--- job (\d+) on (\S*): (.*) in (\S+)s \(attempt (\d+)\), (\d+) bytes ---\n", re.ASCII
)
_TEXT_STDERR = re.compile(r"--- job (\d+) stderr, (\d+) bytes ---\n", re.ASCII)
_TEXT_CAUSE = re.compile(r"(exit|signal) (-?\d+)", re.ASCII)
_NONE = type(None)
_FIELD_TYPES: Final[Mapping[str, frozenset[type]]] = {
    "id": frozenset({int}),
    "ok": frozenset({bool}),
    "exit": frozenset({int, _NONE}),
    "signal": frozenset({int, _NONE}),
    "host": frozenset({str}),
    "attempts": frozenset({int}),
    "duration": frozenset({float, int}),
    "error": frozenset({str, _NONE}),
}
"""Exact types (a bool is no int here), as msgpack and json decode them."""


class _Corrupt(Exception):
    """The stream is not what its format says; `_records` adds the format and the offset."""

    def __init__(self, problem: str, offset: int | None = None) -> None:
        super().__init__(problem)
        self.offset = offset  # None: where the current record starts


class _Source:
    """A blocking byte stream seen through a buffer that counts stream offsets for errors."""

    def __init__(self, stream: BinaryIO) -> None:
        self._read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
        self._buf = bytearray()
        self._pos = 0  # next unread byte in _buf
        self._base = 0  # stream offset of _buf[0]
        self.record_start = 0

    @property
    def offset(self) -> int:
        """Stream offset of the next unread byte."""
        return self._base + self._pos

    def _fill(self, want: int) -> bool:
        """Buffer at least `want` unread bytes; False if the stream ends first."""
        while (have := len(self._buf) - self._pos) < want:
            # at most 16 MiB a call: a buffered reader's read1(n) allocates n bytes first, and
            # a size read from a corrupt text header has no limit
            chunk = self._read(min(max(CHUNK, want - have), 16 << 20))
            if not chunk:
                return False
            if self._pos:
                del self._buf[: self._pos]
                self._base += self._pos
                self._pos = 0
            self._buf += chunk
        return True

    def next_record(self) -> bool:
        """Mark the start of a record; False at a clean end of the stream."""
        self.record_start = self.offset
        return self._fill(1)

    def peek(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end of the stream), left unread."""
        self._fill(size)
        return bytes(self._buf[self._pos : self._pos + size])

    def take(self, size: int, what: str) -> bytes:
        """Exactly the next `size` bytes; _Corrupt if the stream ends first."""
        if not self._fill(size):
            have = len(self._buf) - self._pos
            raise _Corrupt(f"truncated {what} ({have} of {size} bytes)", self.offset)
        if size < CHUNK:
            data = bytes(self._buf[self._pos : self._pos + size])
        else:  # one copy, not two
            with memoryview(self._buf) as view:
                data = bytes(view[self._pos : self._pos + size])
        self._pos += size
        if self._pos == len(self._buf) and self._pos > CHUNK:  # let a huge record go
            self._base, self._pos, self._buf = self._base + self._pos, 0, bytearray()
        return data

    def line(self, what: str) -> bytes:
        """The next line, b"\\n" included; _Corrupt if cut or over MAX_RECORD."""
        start, scanned = self.offset, 0
        while (end := self._buf.find(b"\n", self._pos + scanned)) < 0:
            scanned = len(self._buf) - self._pos
            if scanned >= sinks.MAX_BIG_RECORD:
                break
            if not self._fill(scanned + 1):
                raise _Corrupt(f"truncated {what} (no line end)", start)
        if end < 0 or end - self._pos >= sinks.MAX_BIG_RECORD:
            raise _Corrupt(f"{what} longer than {sinks.MAX_BIG_RECORD} bytes", start)
        return self.take(end + 1 - self._pos, what)

    def take_record(self, size: int, what: str, limit: int | None = None) -> bytes:
        """take() for a size read from the stream: over `limit` (MAX_BIG_RECORD) is corrupt."""
        limit = sinks.MAX_BIG_RECORD if limit is None else limit
        if size > limit:
            raise _Corrupt(f"record of {size} bytes, over the {limit}-byte limit")
        return self.take(size, what)


def _result(fields: Any, stdout: Output, stderr: Output) -> JobResult:
    """A JobResult from a decoded msgpack/JSON map, its fields type-checked; a SpooledResult
    when an output came into a spool."""
    _check_fields(fields, _FIELD_TYPES)
    spooled = isinstance(stdout, Spool) or isinstance(stderr, Spool)
    return (SpooledResult if spooled else JobResult)(
        id=fields["id"],
        ok=fields["ok"],
        exit_code=fields["exit"],
        signal=fields["signal"],
        host=fields["host"],
        attempts=fields["attempts"],
        duration=float(fields["duration"]),
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        error=fields["error"],
    )


def _check_fields(fields: Any, types: Mapping[str, frozenset[type]]) -> None:
    if not isinstance(fields, dict):
        raise _Corrupt(f"record is a {type(fields).__name__}, not a map")
    for key, allowed in types.items():
        if key not in fields:
            raise _Corrupt(f"record has no {key!r}")
        if type(fields[key]) not in allowed:
            raise _Corrupt(f"record {key!r} is a {type(fields[key]).__name__}")


_SIZES: Final = {"stdout_bytes": frozenset({int}), "stderr_bytes": frozenset({int})}


def _is_chunked_head(fields: Any) -> bool:
    """A chunked result's head: sizes in place of the outputs (sinks.chunked_head)."""
    return isinstance(fields, dict) and "stdout_bytes" in fields and "stdout" not in fields


Part = tuple[int, str, int, bytes]
"""One part of a chunked result: job id, "stdout" or "stderr", offset, the bytes."""


def _chunked(fields: dict[str, Any], parts: Callable[[], Part], spool: bool) -> JobResult:
    """A chunked result from its head and its parts (`parts()` gives the next one): each
    output whole in memory, or with `spool`, one past SPOOL_AT written into a Spool as its
    parts come, so no more than a part is held."""
    _check_fields(fields, _SIZES)
    outputs: list[Output] = []
    for key in ("stdout", "stderr"):
        size = fields[key + "_bytes"]
        if size < 0:
            raise _Corrupt(f"record {key}_bytes is negative")
        sink: Spool | list[bytes] = Spool() if spool and size > SPOOL_AT else []
        got = 0
        while got < size:
            job_id, part_key, offset, data = parts()
            if (
                (job_id, part_key, offset) != (fields["id"], key, got)
                or not data
                or (got + len(data) > size)
            ):
                raise _Corrupt(
                    f"part ({job_id}, {part_key!r}, {offset}, {len(data)} bytes) is not the"
                    f" next of job {fields['id']}'s {key} ({got} of {size} bytes)"
                )
            if isinstance(sink, Spool):
                sink.write(data)
            else:
                sink.append(data)
            got += len(data)
        outputs.append(sink if isinstance(sink, Spool) else b"".join(sink))
    return _result(fields, outputs[0], outputs[1])


def _part(value: Any) -> Part:
    """A decoded part record: [id, "stdout"|"stderr", offset, data]."""
    if (
        not isinstance(value, list)
        or len(value) != 4
        or type(value[0]) is not int
        or value[1] not in ("stdout", "stderr")
        or type(value[2]) is not int
        or not isinstance(value[3], bytes)
    ):
        raise _Corrupt("not a part of a chunked result")
    return value[0], value[1], value[2], value[3]


def _read_anet(src: _Source, spool: bool) -> Iterator[JobResult]:
    while src.next_record():
        job_id, size = _ANET_HEAD.unpack(src.take(_ANET_HEAD.size, "record header"))
        stdout = src.take_record(size, "stdout")
        yield JobResult(job_id, True, 0, None, "", 1, 0.0, stdout, b"")


_MSGPACK_VERSIONS: Final = (sinks.MSGPACK_MAGIC[4:], sinks.MSGPACK_CHUNKED[4:])


def _read_msgpack(src: _Source, spool: bool) -> Iterator[JobResult]:
    if src.next_record() and src.peek(4) != sinks.MSGPACK_MAGIC[:4]:
        raise _Corrupt(f"no {sinks.MSGPACK_MAGIC!r} header")
    while src.next_record():
        value = _msgpack_value(src, spool)
        if value is None:  # a header
            continue
        if _is_chunked_head(value):
            yield _chunked(value, lambda: _part(_msgpack_part(src)), spool)
        else:
            yield _msgpack_record(value)


def _msgpack_value(src: _Source, spool: bool = False) -> Any:
    """The next record, decoded; None for a stream header (version 1 or 2). With `spool`, a
    map past SPOOL_AT is read a value at a time, its big outputs into spools."""
    prefix = src.take(4, "record length")
    if prefix == sinks.MSGPACK_MAGIC[:4]:
        if (version := src.take(4, "stream header")) not in _MSGPACK_VERSIONS:
            raise _Corrupt(f"unknown stream header {prefix + version!r}")
        return None
    size = int.from_bytes(prefix, "big")
    if spool and SPOOL_AT < size <= sinks.MAX_RECORD and src.peek(1)[:1] in _MAP_TAGS:
        return _streamed_map(src, src.offset + size)
    return _unpack(src.take_record(size, "record", sinks.MAX_RECORD))


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _Corrupt(f"corrupt msgpack record ({exc})") from None


_MAP_TAGS: Final = {bytes([tag]) for tag in (*range(0x80, 0x90), 0xDE, 0xDF)}
_BIN_WIDTHS: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_FIXED: Final = {
    0xC0: 0,
    0xC2: 0,
    0xC3: 0,
    0xCA: 4,
    0xCB: 8,
    0xCC: 1,
    0xCD: 2,
    0xCE: 4,
    0xCF: 8,
    0xD0: 1,
    0xD1: 2,
    0xD2: 4,
    0xD3: 8,
    0xD4: 2,
    0xD5: 3,
    0xD6: 5,
    0xD7: 9,
    0xD8: 17,
}
"""msgpack tags followed by a fixed number of bytes."""
_SIZED: Final = {
    0xC4: (1, 0),
    0xC5: (2, 0),
    0xC6: (4, 0),
    0xD9: (1, 0),
    0xDA: (2, 0),
    0xDB: (4, 0),
    0xC7: (1, 1),
    0xC8: (2, 1),
    0xC9: (4, 1),
}
"""Tags followed by a length of (width) bytes, then (extra) bytes and that many: bin, str, ext."""
_CONTAINERS: Final = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
"""Tags followed by a count of (width) bytes, then (per) values per count: array, map."""


def _streamed_map(src: _Source, end: int) -> dict[Any, Any]:
    """A record's map read a value at a time up to `end`: stdout and stderr past SPOOL_AT
    go into spools a part at a time, every other value is decoded as msgpack would."""
    tag = src.take(1, "record")[0]
    width = 0 if tag < 0x90 else 2 if tag == 0xDE else 4
    count = tag & 0x0F if tag < 0x90 else int.from_bytes(src.take(width, "record"), "big")
    fields: dict[Any, Any] = {}
    for _ in range(count):
        key = _unpack(_value_bytes(src, end))
        if key in ("stdout", "stderr") and (width := _BIN_WIDTHS.get(src.peek(1)[0])):
            src.take(1, "record")
            fields[key] = _bin_value(src, int.from_bytes(src.take(width, "record"), "big"), end)
        else:
            fields[key] = _unpack(_value_bytes(src, end))
    if src.offset != end:
        raise _Corrupt(f"record map ends {end - src.offset} bytes before its length says")
    return fields


def _bin_value(src: _Source, size: int, end: int) -> Output:
    """A bin value's `size` bytes: in a spool, a part at a time, when past SPOOL_AT."""
    if src.offset + size > end:
        raise _Corrupt("record value runs past its length")
    if size <= SPOOL_AT:
        return src.take(size, "record")
    spool = Spool()
    while spool.size < size:
        spool.write(src.take(min(sinks.PART, size - spool.size), "record"))
    return spool


def _value_bytes(src: _Source, end: int) -> bytes:
    """The bytes of the next msgpack value, nested ones included (counted, not recursed)."""
    pieces, pending = [], 1
    while pending:
        pending -= 1
        tag = src.take(1, "record")[0]
        pieces.append(bytes([tag]))
        if tag <= 0x7F or tag >= 0xE0:  # fixints
            continue
        if tag <= 0x9F:  # fixmap, fixarray
            pending += (tag & 0x0F) * (2 if tag < 0x90 else 1)
        elif tag <= 0xBF:  # fixstr
            pieces.append(src.take(tag & 0x1F, "record"))
        elif tag in _FIXED:
            pieces.append(src.take(_FIXED[tag], "record"))
        elif tag in _SIZED:
            width, extra = _SIZED[tag]
            head = src.take(width, "record")
            size = int.from_bytes(head, "big") + extra
            if src.offset + size > end:
                raise _Corrupt("record value runs past its length")
            pieces += [head, src.take(size, "record")]
        elif tag in _CONTAINERS:
            width, per = _CONTAINERS[tag]
            head = src.take(width, "record")
            pieces.append(head)
            pending += per * int.from_bytes(head, "big")
        else:
            raise _Corrupt(f"corrupt msgpack record (tag {tag:#x})")
        if src.offset > end:
            raise _Corrupt("record value runs past its length")
    return b"".join(pieces)


def _msgpack_part(src: _Source) -> Any:
    """The next part of a chunked result, decoded."""
    src.record_start = src.offset
    value = _msgpack_value(src)
    if value is None:
        raise _Corrupt("stream header inside a chunked result")
    return value


def _msgpack_record(fields: Any) -> JobResult:
    stdout = fields.get("stdout") if isinstance(fields, dict) else b""
    stderr = fields.get("stderr") if isinstance(fields, dict) else b""
    if not isinstance(stdout, bytes | Spool) or not isinstance(stderr, bytes | Spool):
        raise _Corrupt("record stdout/stderr missing or not bin")
    return _result(fields, stdout, stderr)


def _read_jsonl(src: _Source, spool: bool) -> Iterator[JobResult]:
    while src.next_record():
        fields = _json_line(src)
        if _is_chunked_head(fields):
            yield _chunked(fields, lambda: _json_part(src), spool)
        else:
            yield _json_record(fields)


def _json_line(src: _Source) -> Any:
    line = src.line("JSON line")
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _Corrupt(f"corrupt JSON line ({exc})") from None


def _json_part(src: _Source) -> Part:
    """The next part line of a chunked result: [id, key, offset, "<base64>"]."""
    src.record_start = src.offset
    value = _json_line(src)
    if isinstance(value, list) and len(value) == 4 and isinstance(value[3], str):
        try:
            value[3] = base64.b64decode(value[3], validate=True)
        except binascii.Error:
            raise _Corrupt("bad base64 in a part") from None
    return _part(value)


def _json_record(fields: Any) -> JobResult:
    if not isinstance(fields, dict):
        raise _Corrupt("JSON line is not an object")
    return _result(fields, _json_output(fields, "stdout"), _json_output(fields, "stderr"))


def _json_output(fields: dict[str, Any], key: str) -> bytes:
    """Output stored as `key` (UTF-8 text) or `key_base64`: exactly one of them."""
    text, encoded = fields.get(key), fields.get(key + "_base64")
    if isinstance(text, str) and encoded is None:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Corrupt(f"{key} is not valid Unicode") from None
    if isinstance(encoded, str) and text is None:
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise _Corrupt(f"bad base64 in {key}_base64") from None
    raise _Corrupt(f"record needs exactly one of {key!r}, {key + '_base64'!r} as a string")


def _read_text(src: _Source, spool: bool) -> Iterator[JobResult]:
    while src.next_record():
        head = _TEXT_HEAD.fullmatch(_text_line(src, "job header"))
        if head is None:
            raise _Corrupt("not a job header line")
        stdout = _text_body(src, int(head[6]), spool)
        stderr: Output = b""
        marker = f"--- job {head[1]} stderr, ".encode()
        if src.peek(len(marker)) == marker:
            stderr_start = src.offset
            match = _TEXT_STDERR.fullmatch(_text_line(src, "stderr header"))
            if match is None or match[1] != head[1]:
                raise _Corrupt("bad stderr header line", stderr_start)
            stderr = _text_body(src, int(match[2]), spool)
        yield _text_result(head, stdout, stderr)


def _text_line(src: _Source, what: str) -> str:
    start = src.offset
    try:
        return src.line(what).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"{what} is not UTF-8", start) from None


def _text_body(src: _Source, size: int, spool: bool) -> Output:
    """The output whose size a header gave, then the line end added when it lacks one; with
    `spool`, one past SPOOL_AT goes into a Spool a piece at a time."""
    if spool and size > SPOOL_AT:
        data: Output = Spool()
        last = b""
        while len(data) < size:
            last = src.take(min(sinks.PART, size - len(data)), "output")
            data.write(last)
    else:
        data = last = src.take(size, "output")
    if last and not last.endswith(b"\n"):
        end = src.offset
        if src.take(1, "line end after output") != b"\n":
            raise _Corrupt("no line end after output", end)
    return data


def _text_cause(status: str) -> tuple[int | None, int | None, str | None]:
    """exit code, signal and error message from a text header's status."""
    if status == "ok":
        return 0, None, None
    if status.startswith("error: "):
        return None, None, status.removeprefix("error: ")
    if cause := _TEXT_CAUSE.fullmatch(status):
        number = int(cause[2])
        return (number, None, None) if cause[1] == "exit" else (None, number, None)
    raise _Corrupt(f"unknown status {status!r}")


def _text_result(head: re.Match[str], stdout: Output, stderr: Output) -> JobResult:
    exit_code, signal, error = _text_cause(head[3])
    try:
        duration = float(head[4])
    except ValueError:
        raise _Corrupt(f"bad duration {head[4]!r}") from None
    spooled = isinstance(stdout, Spool) or isinstance(stderr, Spool)
    return (SpooledResult if spooled else JobResult)(
        id=int(head[1]),
        ok=head[3] == "ok",
        exit_code=exit_code,
        signal=signal,
        host=head[2],
        attempts=int(head[5]),
        duration=duration,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        error=error,
    )


_READERS: Final[Mapping[str, Callable[[_Source, bool], Iterator[JobResult]]]] = {
    "anet": _read_anet,
    "msgpack": _read_msgpack,
    "jsonl": _read_jsonl,
    "text": _read_text,
}
assert _READERS.keys() == sinks.FORMATS.keys()


def _detect(src: _Source) -> str:
    """The format a stream's first bytes announce; see the module docstring."""
    head = src.peek(len(sinks.MSGPACK_MAGIC))
    if head == sinks.MSGPACK_MAGIC:
        return "msgpack"
    if head == sinks.TEXT_MAGIC:
        return "text"
    maybe_json = head[:1] == b"{" and (head[1:2] == b'"' or head[1:2].isspace())
    return "jsonl" if maybe_json and _JSON_START.match(src.peek(64)) else "anet"


def read(
    stream: BinaryIO, format: str | None = None, *, spool: bool = False
) -> Iterator[JobResult]:
    """Iterate over the results in `stream`, in `format` or the one its first bytes announce.

    With `spool`, an output past 1 MiB (but in an ordinary JSON line) is written into a `Spool`
    as it arrives, and its result is a `SpooledResult`: `rec.out.chunks()` streams it, memory
    holds one piece (see the module doc).
    """
    if format is not None and format not in _READERS:
        choices = ", ".join(_READERS)
        raise UsageError(f"unknown result format {format!r} (choose from {choices})")
    return _records(_Source(stream), format, spool)


def _records(src: _Source, format: str | None, spool: bool) -> Iterator[JobResult]:
    format = format or _detect(src)
    try:
        yield from _READERS[format](src, spool)
    except _Corrupt as exc:
        offset = src.record_start if exc.offset is None else exc.offset
        problem = " ".join(str(exc).splitlines())
        raise ResultFormatError(f"{format} result stream: {problem} at byte {offset}") from None
