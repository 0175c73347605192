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
`anet.sinks.MAX_RECORD` bytes (1 GiB), any other over `MAX_BIG_RECORD` (4 GiB - 1) counts as
corrupt. Unknown msgpack/JSON keys are ignored. A record is held whole in memory: a consumer of
outputs of gigabytes parses the stream itself or reads `--results DIR`.
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

from anet.core.record import JobResult
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
            chunk = self._read(max(CHUNK, want - have))
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


def _result(fields: Any, stdout: bytes, stderr: bytes) -> JobResult:
    """A JobResult from a decoded msgpack/JSON map, its fields type-checked."""
    if not isinstance(fields, dict):
        raise _Corrupt(f"record is a {type(fields).__name__}, not a map")
    for key, types in _FIELD_TYPES.items():
        if key not in fields:
            raise _Corrupt(f"record has no {key!r}")
        if type(fields[key]) not in types:
            raise _Corrupt(f"record {key!r} is a {type(fields[key]).__name__}")
    return JobResult(
        id=fields["id"],
        ok=fields["ok"],
        exit_code=fields["exit"],
        signal=fields["signal"],
        host=fields["host"],
        attempts=fields["attempts"],
        duration=float(fields["duration"]),
        stdout=stdout,
        stderr=stderr,
        error=fields["error"],
    )


def _read_anet(src: _Source) -> Iterator[JobResult]:
    while src.next_record():
        job_id, size = _ANET_HEAD.unpack(src.take(_ANET_HEAD.size, "record header"))
        stdout = src.take_record(size, "stdout")
        yield JobResult(job_id, True, 0, None, "", 1, 0.0, stdout, b"")


def _read_msgpack(src: _Source) -> Iterator[JobResult]:
    if src.next_record() and src.peek(len(sinks.MSGPACK_MAGIC)) != sinks.MSGPACK_MAGIC:
        raise _Corrupt(f"no {sinks.MSGPACK_MAGIC!r} header")
    while src.next_record():
        prefix = src.take(4, "record length")
        if prefix == sinks.MSGPACK_MAGIC[:4]:
            if (version := src.take(4, "stream header")) != sinks.MSGPACK_MAGIC[4:]:
                raise _Corrupt(f"unknown stream header {prefix + version!r}")
            continue
        size = int.from_bytes(prefix, "big")
        yield _msgpack_record(src.take_record(size, "record", sinks.MAX_RECORD))


def _msgpack_record(body: bytes) -> JobResult:
    try:
        fields = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _Corrupt(f"corrupt msgpack record ({exc})") from None
    stdout = fields.get("stdout") if isinstance(fields, dict) else b""
    stderr = fields.get("stderr") if isinstance(fields, dict) else b""
    if not isinstance(stdout, bytes) or not isinstance(stderr, bytes):
        raise _Corrupt("record stdout/stderr missing or not bin")
    return _result(fields, stdout, stderr)


def _read_jsonl(src: _Source) -> Iterator[JobResult]:
    while src.next_record():
        yield _json_record(src.line("JSON line"))


def _json_record(line: bytes) -> JobResult:
    try:
        fields = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _Corrupt(f"corrupt JSON line ({exc})") from None
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


def _read_text(src: _Source) -> Iterator[JobResult]:
    while src.next_record():
        head = _TEXT_HEAD.fullmatch(_text_line(src, "job header"))
        if head is None:
            raise _Corrupt("not a job header line")
        stdout = _text_body(src, int(head[6]))
        stderr = b""
        marker = f"--- job {head[1]} stderr, ".encode()
        if src.peek(len(marker)) == marker:
            stderr_start = src.offset
            match = _TEXT_STDERR.fullmatch(_text_line(src, "stderr header"))
            if match is None or match[1] != head[1]:
                raise _Corrupt("bad stderr header line", stderr_start)
            stderr = _text_body(src, int(match[2]))
        yield _text_result(head, stdout, stderr)


def _text_line(src: _Source, what: str) -> str:
    start = src.offset
    try:
        return src.line(what).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"{what} is not UTF-8", start) from None


def _text_body(src: _Source, size: int) -> bytes:
    """The output whose size a header gave, then the line end added when it lacks one."""
    data = src.take_record(size, "output")
    if data and not data.endswith(b"\n"):
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


def _text_result(head: re.Match[str], stdout: bytes, stderr: bytes) -> JobResult:
    exit_code, signal, error = _text_cause(head[3])
    try:
        duration = float(head[4])
    except ValueError:
        raise _Corrupt(f"bad duration {head[4]!r}") from None
    return JobResult(
        id=int(head[1]),
        ok=head[3] == "ok",
        exit_code=exit_code,
        signal=signal,
        host=head[2],
        attempts=int(head[5]),
        duration=duration,
        stdout=stdout,
        stderr=stderr,
        error=error,
    )


_READERS: Final[Mapping[str, Callable[[_Source], Iterator[JobResult]]]] = {
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


def read(stream: BinaryIO, format: str | None = None) -> Iterator[JobResult]:
    """Iterate over the results in `stream`, in `format` or the one its first bytes announce."""
    if format is not None and format not in _READERS:
        choices = ", ".join(_READERS)
        raise UsageError(f"unknown result format {format!r} (choose from {choices})")
    return _records(_Source(stream), format)


def _records(src: _Source, format: str | None) -> Iterator[JobResult]:
    format = format or _detect(src)
    try:
        yield from _READERS[format](src)
    except _Corrupt as exc:
        offset = src.record_start if exc.offset is None else exc.offset
        problem = " ".join(str(exc).splitlines())
        raise ResultFormatError(f"{format} result stream: {problem} at byte {offset}") from None
