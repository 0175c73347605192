"""The result streams anet writes on stdout: one pure encoder per format, no I/O.

A stream is an encoder's `header`, written once before the first record (even when no record
follows), then `encode(result)` for each final result, in the order the results become final.
The CLI does the writing; `anet.results.read` reads every format back. These layouts are a
public contract: change them only by adding a new format (or a new msgpack header version).

anet -- the original ANet stream, bit for bit. No header. Successful jobs only; a failed job
    encodes to b"". Per job, nothing but the id and stdout:

        uint32 LE id | uint32 LE len(stdout) | stdout

msgpack -- header b"ANETMP01", then per job, failures included:

        uint32 BE n | n bytes: a msgpack map

    with str keys id (int), ok (bool), exit (int|nil), signal (int|nil), host (str),
    attempts (int), duration (float seconds), stdout (bin), stderr (bin), error (str|nil).
    n <= MAX_RECORD < 0x414E4554 (b"ANET" read as a length), so a reader can accept the header
    again at any record boundary: `cat a b` of two streams is one valid stream. Readers ignore
    map keys they do not know.

jsonl -- no header; one compact JSON object per line, UTF-8 (not ASCII-escaped), same keys in
    the same order. stdout is `"stdout": "<text>"` when its bytes are valid UTF-8, else
    `"stdout_base64": "<base64>"`: the key name is the marker. Likewise stderr.

text -- no header; for humans, yet exactly parseable. Per job:

        --- job {id} on {host}: {status} in {duration:.3f}s (attempt {attempts}), {n} bytes ---
        <the n bytes of stdout>, then "\\n" if they are non-empty and do not end with one

    then, only when stderr is non-empty:

        --- job {id} stderr, {n} bytes ---
        <the n bytes of stderr>, then "\\n" likewise

    status is `ok`, `exit {code}`, `signal {n}` or `error: {message}`, line breaks in the
    message turned into spaces. The byte counts make the outputs exact whatever they contain
    (even lines that look like headers); the duration is rounded to the millisecond. The status
    keeps everything of a result where ok means exit code 0 and a failure has one cause; else
    it shows the first of error, signal, exit code. Host names never contain whitespace.

text with --tag -- for grep and humans, not for reading back: every line of output becomes

        {id} {host}\t<line>            a line of stdout
        {id} {host} stderr\t<line>     a line of stderr
        {id} {host} status\t<status>   only for a failed job, after its output

    (a last line without a line break gets one). `cut -f2-` strips the tags.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import msgpack

from anet.core.record import JobResult
from anet.errors import UsageError

MAX_RECORD: Final = 1 << 30
"""Largest record (msgpack map, JSON line, one output) a writer emits and a reader accepts."""

MSGPACK_MAGIC: Final = b"ANETMP01"
TEXT_MAGIC: Final = b"--- job "

assert int.from_bytes(MSGPACK_MAGIC[:4], "big") > MAX_RECORD, "the header must not read as a length"

_ANET_HEAD = struct.Struct("<II")
_UINT32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Encoder:
    """One output format: `header` once at the start of the stream, then `encode` per result."""

    name: str
    header: bytes
    encode: Callable[[JobResult], bytes]


def _check_size(size: int, what: str) -> None:
    """Refuse to write what no reader would accept (ValueError: the caller's mistake)."""
    if size > MAX_RECORD:
        raise ValueError(f"{what} is {size} bytes, over the {MAX_RECORD}-byte record limit")


def encode_anet(result: JobResult) -> bytes:
    """The original ANet record for a successful job; b"" for a failed one."""
    if not result.ok:
        return b""
    if not 0 <= result.id <= _UINT32_MAX:
        raise ValueError(f"job id {result.id} does not fit the anet format's uint32")
    _check_size(len(result.stdout), "stdout")
    return _ANET_HEAD.pack(result.id, len(result.stdout)) + result.stdout


def head_fields(result: JobResult) -> dict[str, object]:
    """The record's map up to its outputs, in wire order (the results folder's meta.json too)."""
    return {
        "id": result.id,
        "ok": result.ok,
        "exit": result.exit_code,
        "signal": result.signal,
        "host": result.host,
        "attempts": result.attempts,
        "duration": result.duration,
    }


def encode_msgpack(result: JobResult) -> bytes:
    """A 4-byte big-endian length, then the record as a msgpack map."""
    fields = {
        **head_fields(result),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": result.error,
    }
    body = msgpack.packb(fields, use_bin_type=True)
    _check_size(len(body), "msgpack record")
    return len(body).to_bytes(4, "big") + body


def _json_output(key: str, data: bytes) -> dict[str, str]:
    """Output as text under `key` when it is UTF-8, else as base64 under `key_base64`."""
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {key + "_base64": base64.b64encode(data).decode("ascii")}


def encode_jsonl(result: JobResult) -> bytes:
    """One compact JSON object and a newline."""
    fields = {
        **head_fields(result),
        **_json_output("stdout", result.stdout),
        **_json_output("stderr", result.stderr),
        "error": result.error,
    }
    line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = line.encode("utf-8") + b"\n"
    _check_size(len(data), "JSON line")
    return data


def _text_status(result: JobResult) -> str:
    if result.ok:
        return "ok"
    if result.error is not None:
        return "error: " + " ".join(result.error.splitlines())
    if result.signal is not None:
        return f"signal {result.signal}"
    if result.exit_code is not None:
        return f"exit {result.exit_code}"
    return "error: "


def _text_body(data: bytes) -> list[bytes]:
    """The output, and a line end when it lacks one, so the next header starts a line."""
    return [data, b"\n"] if data and not data.endswith(b"\n") else [data]


def encode_text(result: JobResult) -> bytes:
    """A header line carrying the byte count, stdout, and stderr under its own header."""
    if any(char.isspace() for char in result.host):
        raise ValueError(f"host name {result.host!r} contains whitespace")
    _check_size(len(result.stdout), "stdout")
    _check_size(len(result.stderr), "stderr")
    head = (
        f"--- job {result.id} on {result.host}: {_text_status(result)} in {result.duration:.3f}s"
        f" (attempt {result.attempts}), {len(result.stdout)} bytes ---\n"
    )
    parts = [head.encode("utf-8"), *_text_body(result.stdout)]
    if result.stderr:
        parts.append(f"--- job {result.id} stderr, {len(result.stderr)} bytes ---\n".encode())
        parts.extend(_text_body(result.stderr))
    return b"".join(parts)


def encode_text_tagged(result: JobResult) -> bytes:
    """Each output line prefixed with the job id and host (GNU parallel's --tag)."""
    if any(char.isspace() for char in result.host):
        raise ValueError(f"host name {result.host!r} contains whitespace")
    tag = f"{result.id} {result.host}".encode()
    parts = [tag + b"\t" + line for line in result.stdout.splitlines(keepends=True)]
    parts += [tag + b" stderr\t" + line for line in result.stderr.splitlines(keepends=True)]
    if not result.ok:
        parts.append(tag + b" status\t" + _text_status(result).encode("utf-8"))
    return b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts)


TAGGED_TEXT: Final = Encoder("text", b"", encode_text_tagged)
"""The text format with --tag."""

FORMATS: Final[Mapping[str, Encoder]] = MappingProxyType(
    {
        "anet": Encoder("anet", b"", encode_anet),
        "msgpack": Encoder("msgpack", MSGPACK_MAGIC, encode_msgpack),
        "jsonl": Encoder("jsonl", b"", encode_jsonl),
        "text": Encoder("text", b"", encode_text),
    }
)
"""Every output format by the name the CLI knows it by."""


def encoder_for(name: str) -> Encoder:
    """The encoder named `name`; UsageError naming the choices when there is none."""
    try:
        return FORMATS[name]
    except KeyError:
        choices = ", ".join(FORMATS)
        raise UsageError(f"unknown output format {name!r} (choose from {choices})") from None
