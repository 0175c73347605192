"""Output formats: what anet.streams.sinks writes and anet.results reads, whatever the bytes."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import tracemalloc
from collections.abc import Iterable, Iterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anet import results
from anet.core.record import JobResult
from anet.errors import ResultFormatError, UsageError
from anet.streams import sinks
from anet.streams.sinks import FORMATS, MSGPACK_MAGIC, encoder_for


class ChunkStream:
    """A stream over chunks made only as they are read; read() never returns more than one."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = (chunk for chunk in chunks if chunk)
        self._rest = b""

    def read(self, size: int = -1) -> bytes:
        self._rest = self._rest or next(self._chunks, b"")
        size = len(self._rest) if size < 0 else size
        data, self._rest = self._rest[:size], self._rest[size:]
        return data


def one_byte_at_a_time(data: bytes) -> ChunkStream:
    """The shortest reads a pipe can give."""
    return ChunkStream(data[i : i + 1] for i in range(len(data)))


def stream_of(name: str, records: Iterable[JobResult]) -> bytes:
    encoder = encoder_for(name)
    return encoder.header + b"".join(encoder.encode(r) for r in records)


def read_all(data: bytes, name: str | None = None) -> list[JobResult]:
    return list(results.read(io.BytesIO(data), name))


def as_read_back(name: str, records: Iterable[JobResult]) -> list[JobResult]:
    """What a reader of format `name` gives back for `records`."""
    if name == "anet":
        return [JobResult(r.id, True, 0, None, "", 1, 0.0, r.stdout, b"") for r in records if r.ok]
    if name == "text":  # durations in ms, error messages on one line
        return [
            dataclasses.replace(
                r,
                duration=float(f"{r.duration:.3f}"),
                error=None if r.error is None else " ".join(r.error.splitlines()),
            )
            for r in records
        ]
    return list(records)


FAKE_LINES = [
    b"--- job 1 on h: ok in 0.000s (attempt 1), 3 bytes ---\n",
    b"--- job 7 stderr, 2 bytes ---\n",
    b"ANETMP01",
    b'{"id":1}\n',
    b"\n",
    b"text",
    "\u00e9t\u00e9\n".encode(),
    b"\xff\xfe\x00",
]
outputs = st.one_of(
    st.binary(max_size=100), st.lists(st.sampled_from(FAKE_LINES), max_size=6).map(b"".join)
)
hosts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=12
)
one_line = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")))
small_ints = st.integers(-(2**31), 2**31 - 1)
common = {
    "id": st.integers(0, 2**32 - 1),
    "host": hosts,
    "attempts": st.integers(0, 1000),
    "duration": st.floats(0, 1e7, allow_nan=False),
    "stdout": outputs,
    "stderr": outputs,
}


@st.composite
def tidy_results(draw: st.DrawFn) -> JobResult:
    """Results as anet makes them: ok means exit 0, a failure has exactly one cause."""
    cause = draw(st.sampled_from(["ok", "exit", "signal", "error"]))
    exit_code = 0 if cause == "ok" else draw(small_ints) if cause == "exit" else None
    signal = draw(st.integers(1, 64)) if cause == "signal" else None
    error = draw(one_line) if cause == "error" else None
    fields = {k: draw(v) for k, v in common.items()}
    return JobResult(ok=cause == "ok", exit_code=exit_code, signal=signal, error=error, **fields)


any_results = st.builds(
    JobResult,
    ok=st.booleans(),
    exit_code=st.none() | small_ints,
    signal=st.none() | small_ints,
    error=st.none() | st.text(st.characters(codec="utf-8")),
    **common,
)


@pytest.mark.parametrize("name", list(FORMATS))
@settings(max_examples=60, deadline=None)
@given(records=st.lists(tidy_results(), max_size=6))
def test_every_format_reads_back_what_it_wrote(name: str, records: list[JobResult]) -> None:
    data = stream_of(name, records)
    expected = as_read_back(name, records)
    assert list(results.read(one_byte_at_a_time(data), name)) == expected
    assert list(results.read(one_byte_at_a_time(data))) == expected  # auto-detected


@pytest.mark.parametrize("name", ["msgpack", "jsonl"])
@settings(max_examples=60, deadline=None)
@given(records=st.lists(any_results, max_size=6))
def test_structured_formats_keep_any_result(name: str, records: list[JobResult]) -> None:
    assert list(results.read(one_byte_at_a_time(stream_of(name, records)))) == records


SAMPLE = [
    JobResult(7, True, 0, None, "alpha", 1, 0.25, b"abc", b""),
    JobResult(8, False, 2, None, "beta:22", 3, 1.5, b"partial\n", b"boom\n"),
    JobResult(0xFFFFFFFF, True, 0, None, "alpha", 1, 0.0, b"", b"warn"),
    JobResult(1, True, 0, None, "gamma", 2, 12.3456, b"\x00\n", b""),
    JobResult(9, False, None, 9, "gamma", 1, 3.0, b"", b""),
    JobResult(10, False, None, None, "", 4, 0.0, b"", b"", error="no host left\nat all"),
]


def test_anet_is_bit_exact_and_drops_failures() -> None:
    expected = (
        b"\x07\x00\x00\x00\x03\x00\x00\x00abc"
        b"\xff\xff\xff\xff\x00\x00\x00\x00"
        b"\x01\x00\x00\x00\x02\x00\x00\x00\x00\n"
    )
    assert stream_of("anet", SAMPLE) == expected
    assert encoder_for("anet").header == b""
    assert [r.id for r in read_all(expected)] == [7, 0xFFFFFFFF, 1]
    assert read_all(expected)[0] == JobResult(7, True, 0, None, "", 1, 0.0, b"abc", b"", None)


def test_text_layout() -> None:
    assert stream_of("text", SAMPLE).decode() == (
        "--- job 7 on alpha: ok in 0.250s (attempt 1), 3 bytes ---\nabc\n"
        "--- job 8 on beta:22: exit 2 in 1.500s (attempt 3), 8 bytes ---\npartial\n"
        "--- job 8 stderr, 5 bytes ---\nboom\n"
        "--- job 4294967295 on alpha: ok in 0.000s (attempt 1), 0 bytes ---\n"
        "--- job 4294967295 stderr, 4 bytes ---\nwarn\n"
        "--- job 1 on gamma: ok in 12.346s (attempt 2), 2 bytes ---\n\x00\n"
        "--- job 9 on gamma: signal 9 in 3.000s (attempt 1), 0 bytes ---\n"
        "--- job 10 on : error: no host left at all in 0.000s (attempt 4), 0 bytes ---\n"
    )
    assert read_all(stream_of("text", SAMPLE))[-1].error == "no host left at all"


def test_jsonl_layout() -> None:
    record = JobResult(3, False, 1, None, "h", 2, 0.5, "\u00e9\n".encode(), b"\xff")
    line = (
        '{"id":3,"ok":false,"exit":1,"signal":null,"host":"h","attempts":2,"duration":0.5,'
        '"stdout":"\u00e9\\n","stderr_base64":"/w==","error":null}\n'
    )
    assert stream_of("jsonl", [record]) == line.encode()


def test_msgpack_layout() -> None:
    data = stream_of("msgpack", SAMPLE[:1])
    assert data[:8] == MSGPACK_MAGIC
    assert int.from_bytes(data[8:12], "big") == len(data) - 12
    fields = msgpack.unpackb(data[12:], raw=False)
    keys = ["id", "ok", "exit", "signal", "host", "attempts", "duration", "stdout", "stderr"]
    assert list(fields) == [*keys, "error"]
    assert fields["stdout"] == b"abc"  # bin: raw=False would have made a msgpack str a str


def test_concatenated_msgpack_streams_read_as_one() -> None:
    first, second = stream_of("msgpack", SAMPLE[:2]), stream_of("msgpack", SAMPLE[2:])
    empty = stream_of("msgpack", [])
    assert empty == MSGPACK_MAGIC
    assert read_all(first + empty + second + empty) == SAMPLE
    assert list(results.read(one_byte_at_a_time(empty + first + second), "msgpack")) == SAMPLE


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_is_detected(name: str) -> None:
    data = stream_of(name, SAMPLE)
    assert read_all(data) == read_all(data, name) == as_read_back(name, SAMPLE)


@pytest.mark.parametrize("job_id", [ord("{"), 0x227B, 0x207B, 0x0A7B])
def test_anet_ids_that_start_like_json_are_still_anet(job_id: int) -> None:
    record = JobResult(job_id, True, 0, None, "", 1, 0.0, b'"id": 1}' * 20, b"")
    assert read_all(stream_of("anet", [record])) == [record]


def test_jsonl_from_other_writers_is_detected() -> None:
    spaced = json.dumps({"id": 1, "ok": True, "exit": 0, "signal": None, "host": "h"})
    line = (
        spaced[:-1] + ', "attempts": 1, "duration": 2, "stdout": "x", "stderr": "", "error": null}'
    )
    sorted_keys = json.dumps(json.loads(line), sort_keys=True)
    expected = JobResult(1, True, 0, None, "h", 1, 2.0, b"x", b"")
    assert read_all(f"{line}\n{sorted_keys}\n".encode()) == [expected, expected]
    assert read_all(f"{{ {line[1:]}\n".encode()) == [expected]


def boundaries(name: str, records: list[JobResult]) -> dict[int, list[JobResult]]:
    """Cut points where a truncated stream is still valid, and what it then reads as."""
    encoder, expected = encoder_for(name), as_read_back(name, records)
    kept = [r for r in records if name != "anet" or r.ok]
    cuts, pos = {0: [], len(encoder.header): []}, len(encoder.header)
    for i, record in enumerate(kept):
        if name == "text" and record.stderr:  # the one undetectable cut: before a stderr block
            stdout_end = pos + len(encoder.encode(dataclasses.replace(record, stderr=b"")))
            cuts[stdout_end] = [*expected[:i], dataclasses.replace(expected[i], stderr=b"")]
        pos += len(encoder.encode(record))
        cuts[pos] = expected[: i + 1]
    return cuts


@pytest.mark.parametrize("name", list(FORMATS))
def test_truncation_anywhere_is_an_error_or_a_clean_prefix(name: str) -> None:
    data = stream_of(name, SAMPLE)
    valid = boundaries(name, SAMPLE)
    assert valid[len(data)] == as_read_back(name, SAMPLE)
    for cut in range(len(data)):
        if cut in valid:
            assert read_all(data[:cut], name) == valid[cut], cut
            continue
        with pytest.raises(ResultFormatError, match=r"at byte \d+$") as caught:
            read_all(data[:cut], name)
        assert "\n" not in str(caught.value)


DROP = object()
GOOD = {"id": 1, "ok": True, "exit": 0, "signal": None, "host": "h", "attempts": 1}
GOOD |= {"duration": 0.5, "stdout": b"", "stderr": b"", "error": None}


def changed(base: dict[str, object], changes: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in {**base, **changes}.items() if v is not DROP}


def mp(body: bytes | None = None, **changes: object) -> bytes:
    """One msgpack record: GOOD with `changes`, or a raw `body`."""
    body = msgpack.packb(changed(GOOD, changes)) if body is None else body
    return len(body).to_bytes(4, "big") + body


def jl(**changes: object) -> bytes:
    """One JSON line: GOOD with `changes`."""
    return json.dumps(changed({**GOOD, "stdout": "", "stderr": ""}, changes)).encode() + b"\n"


M, HEAD = MSGPACK_MAGIC, b"--- job 1 on h: ok in 1.000s (attempt 1), 3 bytes ---\n"
ONE = {"anet": b"\x05\x00\x00\x00\x01\x00\x00\x00x", "msgpack": M + mp(), "jsonl": jl()}
ONE["text"] = HEAD + b"abc\n"
AFTER_MP, AFTER_JL = len(ONE["msgpack"]), len(ONE["jsonl"])
CORRUPT = [
    ("anet", ONE["anet"] + b"\x01\x00\x00\x00\xff\xff\xff\xff", "(0 of 4294967295 bytes) at byte"),
    ("anet", ONE["anet"] + b"\x01\x00", "truncated record header (2 of 8 bytes) at byte 9"),
    ("anet", ONE["anet"] + b"\x01\x00\x00\x00\x05\x00\x00\x00abc", "(3 of 5 bytes) at byte 17"),
    ("msgpack", mp(), "no b'ANETMP01' header at byte 0"),
    ("msgpack", ONE["msgpack"] + b"ANETMP03", f"header b'ANETMP03' at byte {AFTER_MP}"),
    ("msgpack", ONE["msgpack"] + b"ANETMP", f"stream header (2 of 4 bytes) at byte {AFTER_MP + 4}"),
    ("msgpack", M + mp(msgpack.packb([1, 2])), "record is a list, not a map at byte 8"),
    ("msgpack", M + mp(host=DROP), "record has no 'host' at byte 8"),
    ("msgpack", M + mp(host=None), "record 'host' is a NoneType at byte 8"),
    ("msgpack", M + mp(id=True), "record 'id' is a bool at byte 8"),
    ("msgpack", M + mp(ok=1), "record 'ok' is a int at byte 8"),
    ("msgpack", M + mp(stdout="x"), "stdout/stderr missing or not bin at byte 8"),
    ("msgpack", M + mp(b"\xc1"), "corrupt msgpack record"),
    ("msgpack", M + mp(msgpack.packb(GOOD) + b"\x0a"), "received extra data.) at byte 8"),
    ("msgpack", M + b"\x40\x00\x00\x01", "1073741825 bytes, over the 1073741824-byte limit at"),
    ("jsonl", b"not json\n", "corrupt JSON line (Expecting value: line 1 column 1 (char 0)) at"),
    ("jsonl", ONE["jsonl"] + b'{"id":"\xff"}\n', "corrupt JSON line ('utf-8' codec"),
    ("jsonl", ONE["jsonl"] + b"[1]\n", f"JSON line is not an object at byte {AFTER_JL}"),
    ("jsonl", ONE["jsonl"] + jl()[:-1], f"truncated JSON line (no line end) at byte {AFTER_JL}"),
    ("jsonl", jl(ok=DROP), "record has no 'ok' at byte 0"),
    ("jsonl", jl(stdout_base64=""), "exactly one of 'stdout', 'stdout_base64' as a string at"),
    ("jsonl", jl(stderr=DROP), "exactly one of 'stderr', 'stderr_base64' as a string at"),
    ("jsonl", jl(stdout=DROP, stdout_base64="!!"), "bad base64 in stdout_base64 at byte 0"),
    ("jsonl", jl(stdout="\ud800"), "stdout is not valid Unicode at byte 0"),
    ("text", b"--- job one ---\n", "not a job header line at byte 0"),
    ("text", HEAD.replace(b"ok", b"meh") + b"abc\n", "unknown status 'meh' at byte 0"),
    ("text", HEAD + b"abcX", "no line end after output at byte 57"),
    ("text", HEAD + b"ab", "truncated output (2 of 3 bytes) at byte 54"),
    ("text", ONE["text"] + b"--- job 2 stderr, 1 bytes ---\n", "not a job header line at byte 58"),
    ("text", ONE["text"] + b"--- job 1 stderr, x bytes ---\n", "bad stderr header line at byte 58"),
    ("text", ONE["text"] + b"--- job \xff\n", "job header is not UTF-8 at byte 58"),
    ("text", HEAD.replace(b" 3 bytes", b" 4294967296 bytes"), "of 4294967296 bytes) at byte"),
]


@pytest.mark.parametrize(("name", "data", "message"), CORRUPT)
def test_corrupt_streams_are_rejected_naming_the_offset(
    name: str, data: bytes, message: str
) -> None:
    assert read_all(ONE[name], name)  # the valid prefix the cases build on
    for reader in (io.BytesIO(data), one_byte_at_a_time(data)):
        with pytest.raises(ResultFormatError) as caught:
            list(results.read(reader, name))
        text = str(caught.value)
        assert text.startswith(f"{name} result stream: ")
        assert message in text
        assert "\n" not in text


def test_writers_refuse_what_readers_would_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    big = JobResult(1, True, 0, None, "h", 1, 0.0, b"x" * 200, b"")
    with pytest.raises(ValueError, match="uint32"):
        sinks.encode_anet(dataclasses.replace(big, id=2**32))
    with pytest.raises(ValueError, match="whitespace"):
        sinks.encode_text(dataclasses.replace(big, host="a b"))
    streams = {name: stream_of(name, [big]) for name in ("msgpack", "jsonl")}
    monkeypatch.setattr(sinks, "MAX_RECORD", 100)
    monkeypatch.setattr(sinks, "MAX_BIG_RECORD", 200)  # a chunked result's head line fits
    monkeypatch.setattr(sinks, "ANET_MAX_STDOUT", 100)
    with pytest.raises(ValueError, match="record limit"):
        FORMATS["anet"].encode(big)
    for name in ("msgpack", "jsonl"):  # one record over the limit: refused; chunked: fine
        with pytest.raises(ResultFormatError, match=r"over the 100-byte limit|longer than 200 b"):
            read_all(streams[name], name)
        assert read_all(stream_of(name, [big]), name) == [big]
    assert read_all(stream_of("text", [big]), "text") == [big]  # text has no limit


def test_unknown_format_names_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="choose from anet, msgpack, jsonl, text"):
        encoder_for("xml")
    with pytest.raises(UsageError, match="unknown result format 'xml'"):
        results.read(io.BytesIO(b""), "xml")  # at the call, not at the first next()


@pytest.mark.parametrize("name", list(FORMATS))
def test_empty_stream_has_no_records(name: str) -> None:
    assert read_all(b"", name) == []
    assert read_all(encoder_for(name).header) == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["anet", "msgpack", "jsonl"])
def test_records_are_yielded_before_the_pipe_closes(name: str) -> None:
    read_fd, write_fd = os.pipe()
    try:
        with open(read_fd, "rb", closefd=False) as pipe:
            os.write(write_fd, stream_of(name, SAMPLE[:1]))
            assert next(results.read(pipe, name)).id == 7  # would block on a full-buffer read
    finally:
        os.close(read_fd)
        os.close(write_fd)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_reading_holds_one_record_at_a_time(name: str) -> None:
    count, encoder = 20_000, encoder_for(name)  # 50,000 took 15 s under load, tracing
    pool = [  # encoded before tracing starts; ids repeat, which the reader does not mind
        encoder.encode(JobResult(i, True, 0, None, "h", 1, 0.1, b"%d\n" % i, b"warn\n" * (i % 2)))
        for i in range(1000)
    ]
    chunks = itertools.chain([encoder.header], itertools.islice(itertools.cycle(pool), count))
    tracemalloc.start()
    try:
        seen = sum(1 for _ in results.read(ChunkStream(chunks)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count  # a list of them would take several MB; 13 bytes kept a record, 256 KB
    assert peak < 256 * 1024, f"{peak} bytes at peak for {count} records"
