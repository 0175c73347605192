"""The result streams anet writes on stdout: one encoder per format.

A stream is an encoder's `header`, written once before the first record (even when no record
follows), then `encode(result)` for each final result, in the order the results become final;
or `parts(result)`, the same bytes in pieces, for a result whose output was spooled (the only
I/O here: reading its spool a chunk at a time, lengths first). The anet format's limit is
checked before the first piece, so a record is never begun that cannot be finished; msgpack
and jsonl write a result past their one-record limit in parts instead (below).
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

    A result whose record would pass MAX_RECORD is chunked: the header b"ANETMP02" (version 2:
    a reader of version 1 stops there with "unknown stream header", never misreads), then a
    head record, the map above with `stdout_bytes` and `stderr_bytes` (int) in place of stdout
    and stderr, then parts: records holding an array [id, "stdout" | "stderr", offset, bin],
    stdout's parts first, in order, at most PART bytes each, until the sizes are reached.
    Only those results: any other record is the same bytes as in version 1.

jsonl -- no header; one compact JSON object per line, UTF-8 (not ASCII-escaped), same keys in
    the same order. stdout is `"stdout": "<text>"` when its bytes are valid UTF-8, else
    `"stdout_base64": "<base64>"`: the key name is the marker. Likewise stderr. An output that
    was spooled (past spool.SPOOL_AT) is always base64: encoded a piece at a time, its length
    known in advance.

    A result whose line would pass MAX_BIG_RECORD is chunked: a head line, the object above
    with `stdout_bytes` and `stderr_bytes` (int) in place of the outputs, then part lines, each
    a JSON array [id, "stdout" | "stderr", offset, "<base64>"] of at most PART bytes,
    stdout's first, in order, until the sizes are reached. An older reader fails on the head
    (it has neither stdout nor stdout_base64), jq on the parts (an array has no keys).

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
    The counts are decimal: an output of any size fits, and no text record is ever refused.

text with --tag -- for grep and humans, not for reading back: every line of output becomes

        {id} {host}\t<line>            a line of stdout
        {id} {host} stderr\t<line>     a line of stderr
        {id} {host} status\t<status>   only for a failed job, after its output

    (a last line without a line break gets one). `cut -f2-` strips the tags.

plain -- GNU parallel's default output, for piping into other tools, not for reading back: each
    job's stdout, whole and as it is, one job after another as they finish (in job order with
    -k), failed jobs' too. Nothing else: no id, no stderr, no status. With --tag, as GNU
    parallel's: every line of stdout after the job's arguments (space-separated, as given)
    and a tab; in batch mode, after the job's command (a last line gets a line break).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import msgpack

from anet.core.record import JobResult
from anet.core.spool import CHUNK, Output, OutputCap, Span, Spool, chunks, spans
from anet.errors import UsageError
from dispatcher.protocol import bin_header

MAX_RECORD: Final = 1 << 30
"""Largest msgpack record a writer emits and a reader accepts (the header rule below)."""
MAX_BIG_RECORD: Final = 0xFFFFFFFF
"""Largest JSON line a writer emits and a reader accepts (and the anet format's uint32)."""
PART: Final = 3 << 22
"""Output bytes per part of a chunked result (12 MiB: a multiple of 3, so base64 pieces
join up): what a streaming reader holds at a time."""

MSGPACK_MAGIC: Final = b"ANETMP01"
MSGPACK_CHUNKED: Final = b"ANETMP02"
"""The header written before each chunked result: an older reader stops there, clearly."""
TEXT_MAGIC: Final = b"--- job "

assert int.from_bytes(MSGPACK_MAGIC[:4], "big") > MAX_RECORD, "the header must not read as a length"

_ANET_HEAD = struct.Struct("<II")
_UINT32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Encoder:
    """One output format: `header` once at the start of the stream, then `encode` per result
    (bytes), or `parts` (the same bytes in pieces: for a result with a spooled output), or
    `spans`, where the format copies a spool's bytes as they are: the same pieces, with each
    spool as a `Span` for a sink to have the kernel copy (sendfile)."""

    name: str
    header: bytes
    encode: Callable[[JobResult], bytes]
    parts: Callable[[JobResult], Iterator[bytes]]
    spans: Callable[[JobResult], Iterator[bytes | Span]] | None = None


Copy = Callable[[Output, int, int | None], Iterator[bytes | Span]]
"""How a format's pieces carry an output (from `start` up to `stop`): read in chunks, or
spans of its spool."""


def _read(output: Output, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    return chunks(output, CHUNK, start, stop)


def _check_size(size: int, what: str, limit: int) -> None:
    """Refuse to write what no reader would accept (ValueError: the caller's mistake)."""
    if size > limit:
        raise ValueError(f"{what} is {size} bytes, over the {limit}-byte record limit")


def output_cap(encoder: Encoder) -> OutputCap | None:
    """The most output a job may print for its record to fit `encoder`'s format: past it the
    job is killed and failed (engine.OutputCap), never written as a corrupt or cut record.
    Only the anet format has one: msgpack and jsonl carry a result too big for one record in
    parts, text gives each output's size in decimal."""
    if encoder.name != "anet":
        return None
    return OutputCap(
        ANET_MAX_STDOUT,
        f"{_size(ANET_MAX_STDOUT)} on stdout, the most the anet format carries",
        stdout_only=True,
    )


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1 << 20 else f"{size / (1 << 20):.0f} MiB ({size} bytes)"


ANET_MAX_STDOUT = _UINT32_MAX
"""The most stdout an anet record carries (its uint32 length); a module constant for tests."""


def encode_anet(result: JobResult) -> bytes:
    """The original ANet record for a successful job; b"" for a failed one."""
    if not result.ok:
        return b""
    if result.spooled:
        return b"".join(anet_parts(result))
    out = result.stdout
    if not 0 <= result.id <= _UINT32_MAX:
        raise ValueError(f"job id {result.id} does not fit the anet format's uint32")
    _check_size(len(out), "stdout", ANET_MAX_STDOUT)
    return _ANET_HEAD.pack(result.id, len(out)) + out


def anet_parts(result: JobResult) -> Iterator[bytes]:
    """The anet record in pieces: the head (its length first), then stdout as held."""
    return _anet_parts(result, _read)  # type: ignore[arg-type]  (_read yields bytes only)


def _anet_parts(result: JobResult, copy: Copy) -> Iterator[bytes | Span]:
    if not result.ok:
        return
    if not 0 <= result.id <= _UINT32_MAX:
        raise ValueError(f"job id {result.id} does not fit the anet format's uint32")
    out = result.out
    _check_size(len(out), "stdout", ANET_MAX_STDOUT)
    yield _ANET_HEAD.pack(result.id, len(out))
    yield from copy(out, 0, None)


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
    """A 4-byte big-endian length, then the record as a msgpack map (chunked when over
    MAX_RECORD)."""
    fields = {
        **head_fields(result),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": result.error,
    }
    body = msgpack.packb(fields, use_bin_type=True)
    if len(body) > MAX_RECORD:
        return b"".join(_msgpack_chunked(result))
    return len(body).to_bytes(4, "big") + body


def msgpack_parts(result: JobResult) -> Iterator[bytes]:
    """The same bytes as `encode_msgpack`, the outputs copied in chunks: the map is packed
    field by field, each output as a bin header then its bytes, so the length comes first."""
    return _msgpack_parts(result, _read)  # type: ignore[arg-type]  (_read yields bytes only)


def _msgpack_parts(result: JobResult, copy: Copy) -> Iterator[bytes | Span]:
    if not result.spooled:
        yield encode_msgpack(result)
        return
    if result.output_size > MAX_RECORD:  # (and a bin header cannot say 4 GiB or more)
        yield from _msgpack_chunked(result, copy)
        return
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_map_header(10) + b"".join(
        packer.pack(key) + packer.pack(value) for key, value in head_fields(result).items()
    )
    out, err = result.out, result.err
    out_head = packer.pack("stdout") + bin_header(len(out))
    err_head = packer.pack("stderr") + bin_header(len(err))
    tail = packer.pack("error") + packer.pack(result.error)
    size = len(head) + len(out_head) + len(out) + len(err_head) + len(err) + len(tail)
    if size > MAX_RECORD:
        yield from _msgpack_chunked(result, copy)
        return
    yield size.to_bytes(4, "big") + head + out_head
    yield from copy(out, 0, None)
    yield err_head
    yield from copy(err, 0, None)
    yield tail


def chunked_head(result: JobResult) -> dict[str, object]:
    """The head record of a chunked result: the fields, and each output's size in its place."""
    return {
        **head_fields(result),
        "stdout_bytes": len(result.out),
        "stderr_bytes": len(result.err),
        "error": result.error,
    }


def _part_spans(output: Output, part: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each part of `output`, `part` bytes at most each; none when empty."""
    for start in range(0, len(output), part):
        yield start, min(start + part, len(output))


def _msgpack_chunked(result: JobResult, copy: Copy = _read) -> Iterator[bytes | Span]:
    """A result too big for one record: the version-2 header, a head record, then parts
    `[id, "stdout"|"stderr", offset, bin]`, each a record within MAX_RECORD (module doc)."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack(chunked_head(result))
    yield MSGPACK_CHUNKED + len(head).to_bytes(4, "big") + head
    part = min(PART, MAX_RECORD - 40)  # room for the array, id, key, offset, bin header
    for key, output in (("stdout", result.out), ("stderr", result.err)):
        for start, stop in _part_spans(output, part):
            lead = packer.pack_array_header(4) + packer.pack(result.id) + packer.pack(key)
            lead += packer.pack(start) + bin_header(stop - start)
            yield (len(lead) + stop - start).to_bytes(4, "big") + lead
            yield from copy(output, start, stop)


def _json_output(key: str, data: bytes) -> dict[str, str]:
    """Output as text under `key` when it is UTF-8, else as base64 under `key_base64`."""
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {key + "_base64": base64.b64encode(data).decode("ascii")}


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_jsonl(result: JobResult) -> bytes:
    """One compact JSON object and a newline (chunked when over MAX_BIG_RECORD)."""
    fields = {
        **head_fields(result),
        **_json_output("stdout", result.stdout),
        **_json_output("stderr", result.stderr),
        "error": result.error,
    }
    data = _dumps(fields).encode("utf-8") + b"\n"
    if len(data) > MAX_BIG_RECORD:
        return b"".join(_jsonl_chunked(result))
    return data


_B64_CHUNK = 3 << 18
"""Spool bytes per base64 piece: a multiple of 3, so the pieces' base64 join up exactly."""


def _b64_size(size: int) -> int:
    return 4 * -(-size // 3)


def jsonl_parts(result: JobResult) -> Iterator[bytes]:
    """The JSON line in pieces; a spooled output goes as `..._base64` (valid UTF-8 or not:
    readers accept either key for any bytes), encoded a chunk at a time."""
    if not result.spooled:
        yield encode_jsonl(result)
        return
    lead = _dumps(head_fields(result)).encode("utf-8")[:-1]
    pieces: list[bytes | Spool] = []
    for key, output in (("stdout", result.out), ("stderr", result.err)):
        if isinstance(output, Spool):
            pieces += [f',"{key}_base64":"'.encode(), output, b'"']
        else:
            pieces.append(b"," + _dumps(_json_output(key, output)).encode("utf-8")[1:-1])
    pieces.append(b',"error":' + _dumps(result.error).encode("utf-8") + b"}\n")
    size = len(lead) + sum(_b64_size(len(p)) if isinstance(p, Spool) else len(p) for p in pieces)
    if size > MAX_BIG_RECORD:
        yield from _jsonl_chunked(result)
        return
    yield lead
    for piece in pieces:
        if isinstance(piece, Spool):
            yield from _base64_pieces(piece)
        else:
            yield piece


def _base64_pieces(output: Output, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """base64 of `output[start:stop]` a chunk at a time (`start` a multiple of 3)."""
    for piece in chunks(output, _B64_CHUNK, start, stop):
        yield base64.b64encode(piece)


def _jsonl_chunked(result: JobResult) -> Iterator[bytes]:
    """A result too big for one line: a head line with the outputs' sizes, then part lines
    `[id,"stdout"|"stderr",offset,"<base64>"]`, each within MAX_BIG_RECORD (module doc)."""
    yield _dumps(chunked_head(result)).encode("utf-8") + b"\n"
    # room for the brackets, the id, the key, the offset and the quotes; a multiple of 3
    part = min(PART, (MAX_BIG_RECORD - 72) // 4 * 3)
    for key, output in (("stdout", result.out), ("stderr", result.err)):
        for start, stop in _part_spans(output, part):
            yield f'[{result.id},"{key}",{start},"'.encode()
            yield from _base64_pieces(output, start, stop)
            yield b'"]\n'


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
    if result.spooled:
        return b"".join(text_parts(result))
    if any(char.isspace() for char in result.host):
        raise ValueError(f"host name {result.host!r} contains whitespace")
    out, err = result.stdout, result.stderr
    head = (
        f"--- job {result.id} on {result.host}: {_text_status(result)} in {result.duration:.3f}s"
        f" (attempt {result.attempts}), {len(out)} bytes ---\n"
    )
    parts = [head.encode(), *_text_body(out)]
    if err:
        parts.append(f"--- job {result.id} stderr, {len(err)} bytes ---\n".encode())
        parts.extend(_text_body(err))
    return b"".join(parts)


def text_parts(result: JobResult) -> Iterator[bytes]:
    """The text record in pieces, outputs as held (in chunks when spooled)."""
    if any(char.isspace() for char in result.host):
        raise ValueError(f"host name {result.host!r} contains whitespace")
    out, err = result.out, result.err
    yield (
        f"--- job {result.id} on {result.host}: {_text_status(result)} in {result.duration:.3f}s"
        f" (attempt {result.attempts}), {len(out)} bytes ---\n"
    ).encode()
    yield from _text_output(out)
    if len(err):
        yield f"--- job {result.id} stderr, {len(err)} bytes ---\n".encode()
        yield from _text_output(err)


def _text_output(output: Output) -> Iterator[bytes]:
    """The output, and a line end when it lacks one, so the next header starts a line."""
    if isinstance(output, bytes):
        yield from _text_body(output)
        return
    last = b""
    for last in chunks(output):
        yield last
    if last and not last.endswith(b"\n"):
        yield b"\n"


def encode_text_tagged(result: JobResult) -> bytes:
    """Each output line prefixed with the job id and host (GNU parallel's --tag)."""
    return b"".join(tagged_parts(result))


def tagged_parts(result: JobResult) -> Iterator[bytes]:
    """The tagged lines, a chunk of output at a time (a line cut by a chunk's end is held
    until its end arrives, up to a chunk: a longer line is cut into tagged lines)."""
    if any(char.isspace() for char in result.host):
        raise ValueError(f"host name {result.host!r} contains whitespace")
    tag = f"{result.id} {result.host}".encode()
    for prefix, output in ((tag + b"\t", result.out), (tag + b" stderr\t", result.err)):
        yield from _prefixed(prefix, output)
    if not result.ok:
        yield tag + b" status\t" + _text_status(result).encode("utf-8") + b"\n"


def _prefixed(prefix: bytes, output: Output) -> Iterator[bytes]:
    """Every line of `output` after `prefix`, a chunk at a time (a line cut by a chunk's end is
    held until its end arrives, up to a chunk: a longer line is cut into prefixed lines); a
    last line without a line break gets one."""
    rest = b""
    for piece in chunks(output):
        lines = (rest + piece).splitlines(keepends=True)
        rest = lines.pop() if not lines[-1].endswith(b"\n") else b""
        if len(rest) > CHUNK:  # a line that long goes out as lines of a chunk each
            lines.append(rest + b"\n")
            rest = b""
        yield b"".join(prefix + line for line in lines)
    if rest:
        yield prefix + rest + b"\n"


def plain_tagged(tag_of: Callable[[int], bytes]) -> Encoder:
    """plain with GNU parallel's --tag: each line of stdout after the job's tag (its arguments,
    from `tag_of(id)`, called once per result) and a tab."""

    def parts(result: JobResult) -> Iterator[bytes]:
        return _prefixed(tag_of(result.id) + b"\t", result.out)

    return Encoder("plain", b"", lambda result: b"".join(parts(result)), parts)


TAGGED_TEXT: Final = Encoder("text", b"", encode_text_tagged, tagged_parts)
"""The text format with --tag."""


def plain_parts(result: JobResult) -> Iterator[bytes]:
    """The job's stdout as it is, a chunk at a time."""
    return chunks(result.out)


def _plain_spans(result: JobResult) -> Iterator[bytes | Span]:
    return spans(result.out)


PLAIN: Final = Encoder(
    "plain", b"", lambda result: b"".join(plain_parts(result)), plain_parts, _plain_spans
)
"""Only the jobs' own stdout, grouped per job; no reader reads it back, so not in FORMATS."""

FORMATS: Final[Mapping[str, Encoder]] = MappingProxyType(
    {
        "anet": Encoder(
            "anet", b"", encode_anet, anet_parts, lambda result: _anet_parts(result, spans)
        ),
        "msgpack": Encoder(
            "msgpack",
            MSGPACK_MAGIC,
            encode_msgpack,
            msgpack_parts,
            lambda result: _msgpack_parts(result, spans),
        ),
        "jsonl": Encoder("jsonl", b"", encode_jsonl, jsonl_parts),
        "text": Encoder("text", b"", encode_text, text_parts),
    }
)
"""Every output format by the name the CLI knows it by."""


WRITTEN: Final[Mapping[str, Encoder]] = MappingProxyType({**FORMATS, "plain": PLAIN})
"""Every format `anet run --format` writes: those `anet.results` reads back, and plain."""


def encoder_for(name: str) -> Encoder:
    """The encoder named `name`; UsageError naming the choices when there is none."""
    try:
        return WRITTEN[name]
    except KeyError:
        choices = ", ".join(WRITTEN)
        raise UsageError(f"unknown output format {name!r} (choose from {choices})") from None
