"""Results past a format's one-record limit: msgpack and jsonl carry them in parts (a head
record, then parts of at most sinks.PART bytes), `anet.results.read` puts them together, whole
or into a spool; every other result is written as before, byte for byte. The limits are lowered
here (but in one test of the real 1 GiB msgpack limit); test_bigout.py has the end-to-end runs."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import tracemalloc
from pathlib import Path

import msgpack
import pytest

from anet import results
from anet.core.record import JobResult, SpooledResult
from anet.core.spool import Spool
from anet.errors import ResultFormatError
from anet.streams import sinks
from anet.streams.sinks import FORMATS, MSGPACK_CHUNKED, MSGPACK_MAGIC

REAL_LIMITS = {name: getattr(sinks, name) for name in ("MAX_RECORD", "MAX_BIG_RECORD", "PART")}
"""The limits as anet has them, before small_limits lowers them for each test."""
LIMIT = 4000
PART = 999  # a multiple of 3, as sinks.PART


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sinks, "MAX_RECORD", LIMIT)
    monkeypatch.setattr(sinks, "MAX_BIG_RECORD", LIMIT)
    monkeypatch.setattr(sinks, "PART", PART)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the reader's spools


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that are not all alike, so a part out of place shows."""
    return bytes((i * 7 + seed + i // 251) % 256 for i in range(size))


def result(stdout: bytes, stderr: bytes = b"", **fields: object) -> JobResult:
    base = dict(id=3, ok=True, exit_code=0, signal=None, host="h1", attempts=1, duration=0.5)
    return JobResult(**{**base, **fields}, stdout=stdout, stderr=stderr)  # type: ignore[arg-type]


def spooled(res: JobResult, tmp_path: Path) -> SpooledResult:
    """The same result with its outputs in spools, as the engine hands big ones over."""
    held = []
    for data in (res.stdout, res.stderr):
        spool = Spool(tmp_path)
        spool.write(data)
        held.append(spool)
    fields = {f.name: getattr(res, f.name) for f in dataclasses.fields(res)}
    return SpooledResult(**{**fields, "stdout": held[0], "stderr": held[1]})


def written(name: str, *records: JobResult) -> bytes:
    encoder = FORMATS[name]
    return encoder.header + b"".join(encoder.encode(r) for r in records)


SMALL = result(b"small\n", b"")
CASES = [
    result(pattern(10_000)),
    result("é and ü\n".encode() * 900, pattern(4000, 5), ok=False, exit_code=2, error="x"),
    result(b"", pattern(3001)),
    result(pattern(PART * 5), b"warning\n", id=2**40),
]


@pytest.mark.parametrize("name", ["msgpack", "jsonl"])
@pytest.mark.parametrize("case", CASES, ids=["stdout", "both", "stderr-only", "exact-parts"])
def test_a_result_past_the_limit_comes_back_whole_between_small_ones(name, case, tmp_path):
    data = written(name, SMALL, case, SMALL)
    assert data.startswith(written(name, SMALL))  # the small one as ever
    assert list(results.read(io.BytesIO(data), name)) == [SMALL, case, SMALL]
    assert b"".join(FORMATS[name].parts(spooled(case, tmp_path))) == FORMATS[name].encode(case)
    back = list(results.read(io.BytesIO(data), name, spool=True))
    assert back == [SMALL, case, SMALL]
    assert isinstance(back[1].out, Spool) == (len(case.stdout) > 1 << 20)  # not at these sizes


@pytest.mark.parametrize("name", ["msgpack", "jsonl"])
def test_every_record_of_a_chunked_result_is_within_the_limit(name):
    big = CASES[1]
    data = FORMATS[name].encode(big)
    if name == "jsonl":
        lines = data.splitlines(keepends=True)
        assert all(len(line) <= LIMIT for line in lines)
        head, *parts = (json.loads(line) for line in lines)
        assert head == {
            "id": 3, "ok": False, "exit": 2, "signal": None, "host": "h1", "attempts": 1,
            "duration": 0.5, "stdout_bytes": len(big.stdout), "stderr_bytes": 4000, "error": "x",
        }  # fmt: skip
        parts_of = [-(-len(output) // PART) for output in (big.stdout, big.stderr)]
        assert [part[:2] for part in parts] == [[3, "stdout"]] * parts_of[0] + [
            [3, "stderr"]
        ] * parts_of[1]
        return
    assert data.startswith(MSGPACK_CHUNKED)
    view, records = data[8:], []
    while view:
        size = int.from_bytes(view[:4], "big")
        assert size <= LIMIT
        records.append(msgpack.unpackb(view[4 : 4 + size]))
        view = view[4 + size :]
    assert records[0]["stdout_bytes"] == len(big.stdout) and "stdout" not in records[0]
    assert b"".join(r[3] for r in records[1:] if r[1] == "stdout") == big.stdout
    assert [r[2] for r in records[1:] if r[1] == "stderr"] == [0, 999, 1998, 2997, 3996]
    assert all(len(r[3]) <= PART for r in records[1:])


@pytest.mark.parametrize("name", ["msgpack", "jsonl", "text"])
def test_a_result_at_the_limit_is_written_as_before(name, monkeypatch):
    plain = FORMATS[name].encode(SMALL)
    monkeypatch.setattr(sinks, "MAX_RECORD", len(plain) - 4)  # msgpack: the map, not the length
    monkeypatch.setattr(sinks, "MAX_BIG_RECORD", len(plain))
    assert FORMATS[name].encode(SMALL) == plain
    monkeypatch.setattr(sinks, "MAX_RECORD", len(plain) - 5)
    monkeypatch.setattr(sinks, "MAX_BIG_RECORD", len(plain) - 1)
    assert (FORMATS[name].encode(SMALL) == plain) == (name == "text")  # text has no limit


def test_a_reader_of_version_1_stops_at_a_chunked_msgpack_result(monkeypatch):
    data = written("msgpack", SMALL, CASES[0])
    monkeypatch.setattr(results, "_MSGPACK_VERSIONS", (MSGPACK_MAGIC[4:],))  # as before
    reader = results.read(io.BytesIO(data), "msgpack")
    assert next(reader) == SMALL
    with pytest.raises(ResultFormatError, match="unknown stream header b'ANETMP02' at byte"):
        next(reader)


def test_an_older_jsonl_reader_fails_on_the_head_and_jq_on_the_parts():
    head, part = FORMATS["jsonl"].encode(CASES[0]).splitlines()[:2]
    with pytest.raises(results._Corrupt, match="exactly one of 'stdout', 'stdout_base64'"):
        results._json_record(json.loads(head))  # what an older anet reader does with a line
    jq = subprocess.run(["jq", ".id"], input=part, capture_output=True, check=False)
    assert jq.returncode != 0 and b"Cannot index array" in jq.stderr


BAD = [
    (lambda lines: lines[:-1], "truncated JSON line (no line end) at byte"),
    (lambda lines: [*lines[:2], lines[2][:-1]], "truncated JSON line (no line end) at byte 1"),
    (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "(3, 'stdout', 999, 999 bytes)"),
    (lambda lines: [lines[0], lines[1].replace(b"[3,", b"[4,"), *lines[2:]], "part (4,"),
    (lambda lines: [lines[0], lines[1][:-4] + b'!"]\n', *lines[2:]], "bad base64 in a part"),
    (lambda lines: [lines[0], b'["x"]\n', *lines[2:]], "not a part of a chunked result"),
    (lambda lines: [lines[0], *lines[11:]], "is not the next of job 3's stdout (0 of 9000"),
    (lambda lines: [*lines[:-1], lines[1]], "is not the next of job 3's stderr (3996 of 4000"),
]


@pytest.mark.parametrize(("cut", "message"), BAD)
def test_a_broken_chunked_jsonl_result_is_refused(cut, message):
    lines = FORMATS["jsonl"].encode(CASES[1]).splitlines(keepends=True)
    with pytest.raises(ResultFormatError, match=re.escape(message)):
        list(results.read(io.BytesIO(b"".join(cut(lines))), "jsonl"))


def test_a_broken_chunked_msgpack_result_is_refused():
    data = written("msgpack", CASES[0])
    for cut in (len(data) - 1, len(data) - PART):
        with pytest.raises(ResultFormatError, match="truncated"):
            list(results.read(io.BytesIO(data[:cut]), "msgpack"))
    head = 2 * len(MSGPACK_MAGIC) + 4 + int.from_bytes(data[16:20], "big")
    inside = data[:head] + MSGPACK_MAGIC + data[head:]
    with pytest.raises(ResultFormatError, match="stream header inside a chunked result"):
        list(results.read(io.BytesIO(inside), "msgpack"))


def test_spooled_reading_holds_a_part_not_the_output(monkeypatch, tmp_path):
    monkeypatch.setattr(sinks, "MAX_RECORD", 1 << 20)
    monkeypatch.setattr(sinks, "PART", 3 << 16)
    big = result(pattern(5 << 20))
    for name in ("msgpack", "jsonl"):
        stream = written(name, big)
        (back,) = results.read(io.BytesIO(stream), name, spool=True)
        assert isinstance(back, SpooledResult) and isinstance(back.out, Spool)
        assert back.out.size == 5 << 20 and b"".join(back.out.chunks()) == big.stdout
    text = FORMATS["text"].encode(big)
    (back,) = results.read(io.BytesIO(text), "text", spool=True)
    assert isinstance(back.out, Spool) and back == big


def sparse_spool(size: int, tmp_path: Path) -> Spool:
    """A spool of `size` bytes that takes no disk: a hole, then one byte."""
    spool = Spool(tmp_path)
    spool.write(b"")
    os.pwrite(spool._fd, b"!", size - 1)
    spool.size = size
    return spool


def test_past_the_real_1_gib_limit_a_msgpack_record_is_carried_in_parts(tmp_path, monkeypatch):
    """formats.md's limit, 1 GiB a msgpack record, with anet's own constants (test_bigout.py
    runs the parts end to end with the limit lowered): an output just past it starts a head
    record, one just under it is one ordinary record."""
    for name, value in REAL_LIMITS.items():
        monkeypatch.setattr(sinks, name, value)
    for size, chunked in (((1 << 30) + (1 << 20), True), ((1 << 30) - (1 << 20), False)):
        held = SpooledResult(3, True, 0, None, "h1", 1, 0.5, sparse_spool(size, tmp_path), b"")  # type: ignore[arg-type]
        first = next(FORMATS["msgpack"].parts(held))
        assert first.startswith(MSGPACK_CHUNKED) is chunked, size
        if not chunked:
            assert size < int.from_bytes(first[:4], "big") <= 1 << 30


@pytest.mark.parametrize("name", ["msgpack", "jsonl", "text"])
def test_an_output_past_4_gib_starts_a_record_it_can_finish(name, tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "MAX_RECORD", 1 << 30)  # the real limits
    monkeypatch.setattr(sinks, "MAX_BIG_RECORD", 0xFFFFFFFF)
    size = 5 << 30
    held = SpooledResult(3, True, 0, None, "h1", 1, 0.5, sparse_spool(size, tmp_path), b"")  # type: ignore[arg-type]
    first = next(FORMATS[name].parts(held))
    expected = {
        "msgpack": MSGPACK_CHUNKED,
        "jsonl": b'{"id":3,"ok":true,"exit":0,"signal":null,"host":"h1","attempts":1,"duration"'
        b':0.5,"stdout_bytes":5368709120,"stderr_bytes":0,"error":null}\n',
        "text": b"--- job 3 on h1: ok in 0.500s (attempt 1), 5368709120 bytes ---\n",
    }[name]
    assert first.startswith(expected)


def test_spooled_reading_streams_an_ordinary_msgpack_record_too(monkeypatch):
    monkeypatch.setattr(sinks, "MAX_RECORD", 1 << 30)  # the real limit: one record
    big = result(pattern(3 << 20), pattern(1_200_000, 9), ok=False, exit_code=1, error="e")
    data = written("msgpack", SMALL, big)
    assert MSGPACK_CHUNKED not in data
    back = list(results.read(io.BytesIO(data), "msgpack", spool=True))
    assert back == [SMALL, big]
    assert isinstance(back[1].out, Spool) and isinstance(back[1].err, Spool)
    # another writer's record: keys in any order, values of every kind, the outputs among them
    fields = {"x": [1, {"y": -3}, 2.5, None, b"\x00" * 70000, "é" * 40000], "id": 3, "ok": False,
              "exit": 1, "stdout": big.stdout, "signal": None, "host": "h1", "attempts": 1,
              "z": msgpack.ExtType(5, b"e" * 300), "duration": 0.5, "stderr": b"", "error": "e",
              "w": {str(i): i * 1_000_000 for i in range(20)}}  # fmt: skip
    body = msgpack.packb(fields, use_bin_type=True)
    stream = MSGPACK_MAGIC + len(body).to_bytes(4, "big") + body
    (other,) = results.read(io.BytesIO(stream), "msgpack", spool=True)
    assert other == dataclasses.replace(big, stderr=b"") and isinstance(other.out, Spool)
    for cut, message in ((len(stream) - 1, "truncated record"), (12 + 2_000_000, "truncated")):
        with pytest.raises(ResultFormatError, match=message):
            list(results.read(io.BytesIO(stream[:cut]), "msgpack", spool=True))
    longer = MSGPACK_MAGIC + (len(body) + 1).to_bytes(4, "big") + body + b"\xc0"
    with pytest.raises(ResultFormatError, match="record map ends 1 bytes before its length says"):
        list(results.read(io.BytesIO(longer), "msgpack", spool=True))


def test_spooled_reading_of_a_64_mib_record_holds_far_less(monkeypatch):
    monkeypatch.setattr(sinks, "MAX_RECORD", 1 << 30)
    monkeypatch.setattr(sinks, "PART", 3 << 20)
    data = written("msgpack", result(bytes(64 << 20)))
    tracemalloc.start()
    try:
        (back,) = results.read(io.BytesIO(data), "msgpack", spool=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert back.out.size == 64 << 20 and peak < 16 << 20, peak


def test_a_huge_text_size_from_a_pipe_is_a_truncated_stream_not_a_memory_error():
    """text has no limit, so a corrupt size is believed until the stream ends; a buffered
    pipe's read1(n) allocates n bytes first: the reader asks for 16 MiB at most."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"--- job 1 on h: ok in 1.000s (attempt 1), 99999999999999 bytes ---\nab")
    os.close(write_fd)
    with open(read_fd, "rb") as pipe, pytest.raises(ResultFormatError, match="2 of 99999999999999"):
        list(results.read(pipe, "text"))
