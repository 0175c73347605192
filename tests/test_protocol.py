"""dispatcher.protocol, sans I/O: every message survives the wire, however the bytes are cut."""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from wire_messages import every_message

from dispatcher import record
from dispatcher.procs import (
    ALIVE,
    DENIED,
    GONE,
    PROTECTED,
    SIGNALLED,
    HostProbe,
    ProcsFound,
    Signalled,
)
from dispatcher.protocol import (
    BOOT_ERROR,
    BOOT_FRAMES,
    BOOT_MARK,
    BOOT_NEED_PAYLOAD,
    MAX_CORES,
    MAX_FRAME,
    MAX_NAME,
    MAX_PATH,
    MAX_PID,
    OUTPUT_CHUNK,
    PROTOCOL_VERSION,
    STDERR,
    STDOUT,
    Bye,
    Done,
    Dones,
    Exit,
    FrameDecoder,
    Heartbeat,
    Hello,
    Kill,
    LocalProtocolError,
    Output,
    RemoteProtocolError,
    Run,
    Runs,
    Setup,
    Shutdown,
    Started,
    batched,
    decode_body,
    encode,
    find_boot_mark,
)
from dispatcher.syncproto import SyncDone, SyncWant

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = every_message()
"""Every message class, the same list whichever test module was collected first."""

# -- strategies ------------------------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # all msgpack carries
counts = st.integers(min_value=0, max_value=2**32)
floats = st.floats(allow_nan=False)  # NaN != NaN would defeat the equality check, not the wire
texts = st.text()  # hypothesis leaves out lone surrogates, which UTF-8 cannot carry
blobs = st.one_of(
    st.binary(),
    st.just(b""),
    st.just(b"\xff\xfe\x80 not utf-8 \xc3"),
    st.binary(min_size=1).map(lambda b: b"\xff" + b),  # never valid UTF-8
)
envs = st.dictionaries(texts, texts, max_size=8)

# What a dispatcher sends is bounded (see the end of this file): within the bounds, anything.
names = st.text(max_size=MAX_NAME)
paths = st.text(max_size=MAX_PATH)
pids = st.integers(1, MAX_PID)
slots = st.integers(1, MAX_CORES)
seconds = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)

hellos = st.builds(Hello, st.integers(0, 65535), names, slots, names, seconds, pids, paths)
setups = st.builds(Setup, counts, texts, texts, floats, floats, fold=floats)
runs = st.builds(Run, ints, ints, blobs, envs)
starteds = st.builds(Started, ints, pids, slots)
outputs = st.builds(Output, ints, st.sampled_from([STDOUT, STDERR]), blobs)
exits = st.builds(
    lambda aid, status, duration, cpu, rss: Exit(aid, *status, duration, cpu, rss),
    ints,
    st.one_of(st.tuples(st.integers(0, 255), st.none()), st.tuples(st.none(), st.integers(1, 127))),
    seconds,
    seconds,
    counts,
)
dones = st.builds(
    lambda aid, pid, slot, status, duration, cpu, rss, out, err: Done(
        aid, pid, slot, *status, duration, cpu, rss, out, err
    ),
    ints, pids, slots,
    st.one_of(st.tuples(st.integers(0, 255), st.none()), st.tuples(st.none(), st.integers(1, 127))),
    seconds, seconds, counts, blobs, blobs,
)  # fmt: skip
doneses = st.lists(dones, max_size=5).map(
    lambda ds: Dones([[getattr(d, f.name) for f in record.fields(d)] for d in ds])
)
runses = st.lists(st.builds(Run, ints, ints, blobs, envs, st.booleans()), max_size=5).map(
    lambda rs: Runs([[r.aid, r.job, r.command, r.env, r.stdin] for r in rs])
)
kills = st.builds(Kill, ints, floats)
heartbeats = st.builds(Heartbeat, seconds)
messages = st.one_of(
    hellos,
    setups,
    runs,
    starteds,
    outputs,
    exits,
    kills,
    heartbeats,
    st.just(Shutdown()),
    st.just(Bye()),
)


def frame(body: bytes) -> bytes:
    """A frame with a correct length prefix around any body, valid or not."""
    return struct.pack(">I", len(body)) + body


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """Split `data` at the given offsets (any order, duplicates allowed: empty chunks)."""
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [hellos, setups, runs, runses, starteds, outputs, exits, dones, doneses, kills, heartbeats],
    ids=[
        "Hello",
        "Setup",
        "Run",
        "Runs",
        "Started",
        "Output",
        "Exit",
        "Done",
        "Dones",
        "Kill",
        "Heartbeat",
    ],
)
@given(data=st.data())
def test_every_message_type_round_trips(strategy: st.SearchStrategy[Any], data: st.DataObject):
    msg = data.draw(strategy)
    decoder = FrameDecoder()
    (back,) = decoder.feed(encode(msg))
    assert back == msg
    assert type(back) is type(msg)
    assert decoder.pending == 0


@pytest.mark.parametrize("msg", [Shutdown(), Bye()])
def test_field_less_messages_round_trip(msg: Any):
    assert FrameDecoder().feed(encode(msg)) == [msg]


@given(command=blobs, data=blobs, env=envs)
@example(command=b"", data=b"", env={})
@example(command=b"\xff\xfe", data=b"\x80\x00\xc3", env={"K": "", "": "v", "Ü": "\x00"})
def test_bytes_fields_stay_bytes_and_env_stays_a_dict(command: bytes, data: bytes, env: dict):
    """Binary fields must come back as `bytes` (not str, not bytes decoded with errors)."""
    run, out = FrameDecoder().feed(encode(Run(7, 3, command, env)) + encode(Output(7, 1, data)))
    assert type(run.command) is bytes
    assert run.command == command
    assert run.env == env
    assert type(out.data) is bytes
    assert out.data == data


@given(st.lists(st.one_of(runs, kills), max_size=30))
def test_batched_folds_each_stretch_of_runs_into_one_frame_and_keeps_the_order(msgs: list[Any]):
    frames = batched(msgs)
    back = [r for m in frames for r in (m.runs() if isinstance(m, Runs) else [m])]
    assert back == msgs
    for before, after in itertools.pairwise(frames):  # no two Run-carrying frames in a row
        assert not (isinstance(before, (Run, Runs)) and isinstance(after, (Run, Runs)))
    assert all(len(m.items) > 1 for m in frames if isinstance(m, Runs))


def test_batched_keeps_each_runs_frame_well_under_max_frame():
    big = [Run(i, i, b"x" * (MAX_FRAME // 5)) for i in range(6)]
    frames = batched(big)
    assert [len(m.items) if isinstance(m, Runs) else 1 for m in frames] == [2, 2, 2]
    assert all(len(encode(m)) < MAX_FRAME for m in frames)


def test_run_env_defaults_to_empty_dict():
    (back,) = FrameDecoder().feed(encode(Run(1, 2, b"true")))
    assert back.env == {}


def test_hello_carries_the_protocol_version():
    hello = Hello(PROTOCOL_VERSION, "h", 4, "3.11.2", 0.5, 123, "/tmp/w")
    (back,) = FrameDecoder().feed(encode(hello))
    assert back.version == PROTOCOL_VERSION


# -- streams cut anywhere ----------------------------------------------------------------------


@given(st.lists(messages, max_size=12))
def test_stream_fed_one_byte_at_a_time_yields_every_message_in_order(msgs: list[Any]):
    stream = b"".join(encode(m) for m in msgs)
    decoder = FrameDecoder()
    got = feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    assert got == msgs
    assert decoder.pending == 0


@given(st.lists(messages, max_size=12), st.lists(st.integers(min_value=0), max_size=30))
def test_stream_split_at_random_points_yields_every_message_in_order(
    msgs: list[Any], points: list[int]
):
    stream = b"".join(encode(m) for m in msgs)
    decoder = FrameDecoder()
    assert feed_all(decoder, cut(stream, points)) == msgs
    assert decoder.pending == 0


@given(messages, st.data())
def test_pending_counts_the_bytes_of_a_cut_frame(msg: Any, data: st.DataObject):
    wire = encode(msg)
    k = data.draw(st.integers(min_value=1, max_value=len(wire) - 1), label="cut at")
    decoder = FrameDecoder()
    assert decoder.feed(wire[:k]) == []
    assert decoder.pending == k  # non-zero at EOF: the peer cut a frame
    assert decoder.feed(wire[k:]) == [msg]
    assert decoder.pending == 0


def test_pending_is_zero_after_whole_frames_and_keeps_a_following_partial():
    first, second = encode(Heartbeat(0.25)), encode(Kill(5, 1.5))
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:3]) == [Heartbeat(0.25)]
    assert decoder.pending == 3


# -- corrupt input from the peer -----------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 2**32 - 1])
def test_oversized_length_prefix_raises_without_waiting_for_the_body(length: int):
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        FrameDecoder().feed(struct.pack(">I", length))


def test_oversized_length_prefix_after_a_good_frame_raises():
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(encode(Bye()) + struct.pack(">I", MAX_FRAME + 1))


def test_length_prefix_of_exactly_max_frame_is_accepted_and_waits():
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", MAX_FRAME)) == []
    assert decoder.pending == 4


def test_custom_max_frame_is_enforced():
    decoder = FrameDecoder(max_frame=8)
    body = msgpack.packb([Heartbeat.CODE, 0.5])
    assert len(body) > 8
    with pytest.raises(RemoteProtocolError):
        decoder.feed(frame(body))


_GARBAGE = {
    "empty body": b"",
    "reserved msgpack byte": b"\xc1",
    "truncated array": b"\x92\x08",
    "trailing bytes": msgpack.packb([Heartbeat.CODE, 0.5]) + b"\x00",
    "a map": msgpack.packb({"code": 8}),
    "an int": msgpack.packb(8),
    "a string": msgpack.packb("hello"),
    "bytes": msgpack.packb(b"\x08"),
    "empty list": msgpack.packb([]),
    "code is a str": msgpack.packb(["8", 0.5]),
    "code is a float": msgpack.packb([8.0, 0.5]),
    "code is None": msgpack.packb([None]),
    "unknown code 0": msgpack.packb([0]),
    "unknown code 11": msgpack.packb([11]),
    "unknown code -1": msgpack.packb([-1, 1]),
    "unknown huge code": msgpack.packb([2**64 - 1]),
}


@pytest.mark.parametrize("body", list(_GARBAGE.values()), ids=list(_GARBAGE))
def test_garbage_body_raises_remote_protocol_error(body: bytes):
    with pytest.raises(RemoteProtocolError):
        decode_body(body)
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(frame(body))


def _arity(cls: type) -> int:
    return len(record.fields(cls))


@pytest.mark.parametrize(
    ("cls", "n"),
    [
        (cls, _arity(cls) + delta)
        for cls in MESSAGES
        for delta in (-1, +1, +5)
        if _arity(cls) + delta >= 0
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else f"{v} fields",
)
def test_wrong_arity_raises_remote_protocol_error(cls: type, n: int):
    with pytest.raises(RemoteProtocolError, match=cls.__name__):
        decode_body(msgpack.packb([cls.CODE, *[0] * n]))  # type: ignore[attr-defined]


def test_the_arity_cases_are_the_same_when_this_file_is_collected_alone():
    """Collected alone, with no conftest importing the dispatcher first, this file must still
    try every message class (it used to collect 70 of the 79 cases then)."""
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--noconftest"]
    argv += ["-p", "no:cacheprovider", "-k", "wrong_arity", __file__]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    collected = [line for line in done.stdout.splitlines() if "::test_wrong_arity" in line]
    expected = sum(_arity(cls) + delta >= 0 for cls in MESSAGES for delta in (-1, +1, +5))
    assert len(collected) == expected, done.stdout + done.stderr


@given(st.binary(max_size=64))
def test_random_bytes_as_body_never_raise_anything_but_remote_protocol_error(body: bytes):
    with contextlib.suppress(RemoteProtocolError):
        decode_body(body)


msgpack_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


@given(msgpack_values)
def test_random_msgpack_values_never_raise_anything_but_remote_protocol_error(value: Any):
    with contextlib.suppress(RemoteProtocolError):
        decode_body(msgpack.packb(value, use_bin_type=True))


# -- misuse by this side -----------------------------------------------------------------------


class _NotAMessage:
    pass


def _stable_id(thing: Any) -> str:
    """repr, but not one with a memory address (every pytest-xdist worker must collect the
    same test ids, or the run stops before it starts) nor a backslash: pytest escapes one again
    each time a process collects the module anew, so the id differs from the second collection
    on, and mutmut, which collects, then runs tests by id in the same process, finds none."""
    if type(thing).__repr__ is object.__repr__ and not isinstance(thing, type):
        return f"a {type(thing).__name__}"
    if isinstance(thing, bytes):
        return f"bytes {thing.hex()}"
    return repr(thing)


@pytest.mark.parametrize(
    "thing",
    [None, 8, "Heartbeat", b"\x08", [8, 0.5], {"CODE": 8}, _NotAMessage(), Heartbeat, object()],
    ids=_stable_id,
)
def test_encoding_a_non_message_raises_local_protocol_error(thing: Any):
    with pytest.raises(LocalProtocolError, match=r"^not a protocol message: "):
        encode(thing)


def test_encoding_a_frame_over_max_frame_raises_local_protocol_error():
    with pytest.raises(LocalProtocolError, match=r"^frame of \d+ bytes exceeds MAX_FRAME$"):
        encode(Output(1, STDOUT, b"x" * MAX_FRAME))


@pytest.mark.parametrize("stream", [STDOUT, STDERR])
def test_output_of_a_full_chunk_fits_in_one_frame(stream: int):
    msg = Output(2**64 - 1, stream, b"\xff" * OUTPUT_CHUNK)  # widest aid: worst case overhead
    wire = encode(msg)
    assert len(wire) - 4 <= MAX_FRAME
    assert FrameDecoder().feed(wire) == [msg]


@pytest.mark.parametrize(
    "msg",
    [
        # a str with a lone surrogate, e.g. a non-UTF-8 $HOME as os.environ decodes it
        Hello(PROTOCOL_VERSION, "h", 1, "3.8.0", 0.0, 1, "/home/\udcff/work"),
        Run(1, 2, b"true", {"LANG": "\udcff"}),
        Started(2**64, 1, 0),  # wider than msgpack's integers
        Output(1, STDOUT, object()),  # type: ignore[arg-type]
    ],
    ids=["surrogate str", "surrogate env", "int overflow", "unpackable field"],
)
def test_encoding_an_unencodable_field_raises_local_protocol_error(msg: Any):
    with pytest.raises(LocalProtocolError, match=f"^cannot encode {type(msg).__name__}: "):
        encode(msg)


# -- the boot mark -----------------------------------------------------------------------------

noise = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"Welcome to Ubuntu 22.04 LTS\r\n\r\nLast login: Mon from 10.0.0.1\r\n",
            b"\x1b[1;32mhello from .bashrc\x1b[0m\n",
            BOOT_MARK[:-1],  # an almost-mark in the noise must not be taken for the mark
            BOOT_MARK[:3] + b"\n" + BOOT_MARK[:5],
            b"\x00" * 10,
        ]
    ),
)
kinds = st.one_of(
    st.sampled_from([BOOT_NEED_PAYLOAD, BOOT_FRAMES, BOOT_ERROR]), st.binary(min_size=1, max_size=1)
)


@given(noise, kinds, st.binary(max_size=50))
def test_find_boot_mark_skips_any_login_noise(before: bytes, kind: bytes, after: bytes):
    assume(BOOT_MARK not in before)
    data = before + BOOT_MARK + kind + after
    assert find_boot_mark(data) == (kind, len(before) + len(BOOT_MARK) + 1)
    assert find_boot_mark(bytearray(data)) == (kind, len(before) + len(BOOT_MARK) + 1)


@given(noise, st.integers(min_value=0, max_value=len(BOOT_MARK)))
def test_find_boot_mark_returns_none_while_mark_or_kind_is_incomplete(before: bytes, k: int):
    assume(BOOT_MARK not in before)
    assert find_boot_mark(before + BOOT_MARK[:k]) is None  # k == len: the kind byte is missing


def test_find_boot_mark_returns_none_without_a_mark():
    assert find_boot_mark(b"") is None
    assert find_boot_mark(bytearray()) is None
    assert find_boot_mark(b"Last login: yesterday\n") is None


@given(noise, kinds, st.binary(max_size=20), st.lists(st.integers(min_value=0), max_size=8))
def test_find_boot_mark_across_chunks_as_the_reader_accumulates(
    before: bytes, kind: bytes, after: bytes, points: list[int]
):
    """The session appends each read to a buffer and looks again: the mark (or its kind byte)
    split between two reads is found as soon as, and not before, its last byte arrived."""
    assume(BOOT_MARK not in before)
    data = before + BOOT_MARK + kind + after
    end = len(before) + len(BOOT_MARK) + 1
    seen = bytearray()
    for chunk in cut(data, points):
        seen += chunk
        found = find_boot_mark(seen)
        if len(seen) < end:
            assert found is None
        else:
            assert found == (kind, end)
            assert bytes(seen[found[1] :]) == data[end : len(seen)]


@pytest.mark.parametrize("split", range(1, len(BOOT_MARK) + 1))
def test_find_boot_mark_split_at_every_offset_of_the_mark(split: int):
    data = b"motd\n" + BOOT_MARK + BOOT_FRAMES + b"\x00\x00"
    first, second = data[: 5 + split], data[5 + split :]
    assert find_boot_mark(first) is None
    assert find_boot_mark(first + second) == (BOOT_FRAMES, 5 + len(BOOT_MARK) + 1)


@pytest.mark.parametrize(
    "items",
    [
        [5, 1, 1, "text instead of bytes"],
        [5, True, 1, b"x"],  # a bool is not an aid
        [6, 1, "0", None, 0.1, 0.0, 0],
        [3, 1, 2, b"cmd", {"K": 1}, False],
        [3, 1, 2, b"cmd", ["not", "a", "dict"], False],
        [3, 1, 2, b"cmd", {}, 1],  # a stdin flag that is not a bool
        [1, 1, "h", 2, "3.8", "load", 1, "/w"],
    ],
)
def test_fields_of_the_wrong_type_are_a_remote_protocol_error(items):
    with pytest.raises(RemoteProtocolError, match="bad value"):
        decode_body(msgpack.packb(items, use_bin_type=True))


def test_a_lookalike_class_with_a_message_code_is_not_a_message():
    class FakeOutput:
        CODE = Output.CODE

    with pytest.raises(LocalProtocolError):
        encode(FakeOutput())  # type: ignore[arg-type]


# -- a host's claims are bounded before they are believed (invariant 8) -------------------------

NAN, INF = float("nan"), float("inf")
_HELLO = [Hello.CODE, PROTOCOL_VERSION, "h1", 4, "3.11.7", 0.5, 4242, "/w"]
_EXIT = [Exit.CODE, 7, 0, None, 0.5, 0.25, 1024]


def _with(body: list[Any], at: int, value: Any) -> list[Any]:
    return [*body[:at], value, *body[at + 1 :]]


_ROW = [10, 5, 10, 1, "me", 1.5, 0.0, 0.1, 2048, "sleep 5", ""]
_LIES = {
    "Hello: 10**7 cores": _with(_HELLO, 3, 10**7),
    "Hello: no cores": _with(_HELLO, 3, 0),
    "Hello: load NaN": _with(_HELLO, 5, NAN),
    "Hello: negative load": _with(_HELLO, 5, -1.0),
    "Hello: pid 0": _with(_HELLO, 6, 0),
    "Hello: pid 2**40": _with(_HELLO, 6, 2**40),
    "Hello: a 10,000 character hostname": _with(_HELLO, 2, "h" * 10_000),
    "Hello: a 1,000 character python": _with(_HELLO, 4, "3" * 1000),
    "Hello: a 100,000 character workdir": _with(_HELLO, 7, "/w" * 50_000),
    "Hello: negative version": _with(_HELLO, 1, -2),
    "Started: pid 0": [Started.CODE, 7, 0, 1],
    "Started: slot 0": [Started.CODE, 7, 100, 0],
    "Started: slot 2**40": [Started.CODE, 7, 100, 2**40],
    "Output: stream 0": [Output.CODE, 7, 0, b"x"],
    "Output: stream 3": [Output.CODE, 7, 3, b"x"],
    "Output: over OUTPUT_CHUNK": [Output.CODE, 7, STDOUT, b"x" * (OUTPUT_CHUNK + 1)],
    "Exit: code 2**40": _with(_EXIT, 2, 2**40),
    "Exit: code 256": _with(_EXIT, 2, 256),
    "Exit: code -1": _with(_EXIT, 2, -1),
    "Exit: signal 0": _with(_with(_EXIT, 2, None), 3, 0),
    "Exit: signal 128": _with(_with(_EXIT, 2, None), 3, 128),
    "Exit: code and signal": _with(_EXIT, 3, 9),
    "Exit: neither code nor signal": _with(_EXIT, 2, None),
    "Exit: negative duration": _with(_EXIT, 4, -1.0),
    "Exit: duration NaN": _with(_EXIT, 4, NAN),
    "Exit: duration inf": _with(_EXIT, 4, INF),
    "Exit: negative cpu": _with(_EXIT, 5, -0.5),
    "Exit: cpu NaN": _with(_EXIT, 5, NAN),
    "Exit: negative maxrss": _with(_EXIT, 6, -1),
    "Heartbeat: load NaN": [Heartbeat.CODE, NAN],
    "Heartbeat: load inf": [Heartbeat.CODE, INF],
    "Heartbeat: negative load": [Heartbeat.CODE, -1.0],
    "ProcsFound: a row is not a list": [ProcsFound.CODE, 1, ["row"], ""],
    "ProcsFound: a short row": [ProcsFound.CODE, 1, [_ROW[:-1]], ""],
    "ProcsFound: a long row": [ProcsFound.CODE, 1, [[*_ROW, "x"]], ""],
    "ProcsFound: a lifeline of 1,000 characters": [
        ProcsFound.CODE,
        1,
        [_with(_ROW, 10, "l" * 1000)],
        "",
    ],
    "ProcsFound: a str pid": [ProcsFound.CODE, 1, [_with(_ROW, 0, "10")], ""],
    "ProcsFound: pid 0": [ProcsFound.CODE, 1, [_with(_ROW, 0, 0)], ""],
    "ProcsFound: elapsed NaN": [ProcsFound.CODE, 1, [_with(_ROW, 5, NAN)], ""],
    "ProcsFound: a bytes command": [ProcsFound.CODE, 1, [_with(_ROW, 9, b"sleep")], ""],
    "ProcsFound: a 10,000 character user": [ProcsFound.CODE, 1, [_with(_ROW, 4, "u" * 10**4)], ""],
    "Signalled: an outcome is not a pair": [Signalled.CODE, 1, [[10]]],
    "Signalled: an unknown outcome": [Signalled.CODE, 1, [[10, "obliterated"]]],
    "Signalled: a str pid": [Signalled.CODE, 1, [["10", "gone"]]],
    "HostProbe: memory -2": [HostProbe.CODE, 1, -2, 0, 0.5],
    "HostProbe: load NaN": [HostProbe.CODE, 1, 0, 0, NAN],
    "SyncWant: negative reused": [SyncWant.CODE, 1, b"", -1],
    "SyncDone: a 100,000 character error": [SyncDone.CODE, 1, b"", "e" * 100_000],
}


@pytest.mark.parametrize("body", list(_LIES.values()), ids=list(_LIES))
def test_a_field_out_of_its_bounds_is_a_remote_protocol_error(body: list[Any]):
    with pytest.raises(RemoteProtocolError, match=decode_name(body)):
        decode_body(msgpack.packb(body, use_bin_type=True))


def decode_name(body: list[Any]) -> str:
    """The message class name the error must name."""
    return next(cls.__name__ for cls in MESSAGES if body[0] == cls.CODE)


_LIMITS = {
    "Hello: one core": _with(_HELLO, 3, 1),
    "Hello: 65,536 cores": _with(_HELLO, 3, 65_536),
    "Hello: an int load": _with(_HELLO, 5, 0),
    "Exit: code 255": _with(_EXIT, 2, 255),
    "Exit: signal 1": _with(_with(_EXIT, 2, None), 3, 1),
    "Exit: signal 127": _with(_with(_EXIT, 2, None), 3, 127),
    "Exit: zero duration, cpu and maxrss": [Exit.CODE, 7, 0, None, 0.0, 0.0, 0],
    "Output: a full chunk on stderr": [Output.CODE, 7, STDERR, b"x" * OUTPUT_CHUNK],
    "Started: slot 1": [Started.CODE, 7, 1, 1],
    "ProcsFound: a row": [ProcsFound.CODE, 1, [_ROW, _with(_ROW, 5, 0)], ""],
    "Signalled: each outcome": [
        Signalled.CODE,
        1,
        [[1, o] for o in (GONE, SIGNALLED, ALIVE, DENIED, PROTECTED)],
    ],
    "HostProbe: unknown memory and disk": [HostProbe.CODE, 1, -1, -1, 0.0],
}


@pytest.mark.parametrize("body", list(_LIMITS.values()), ids=list(_LIMITS))
def test_a_field_at_the_edge_of_its_bounds_is_accepted(body: list[Any]):
    msg = decode_body(msgpack.packb(body, use_bin_type=True))
    assert [msg.CODE, *record.values(msg)] == body
