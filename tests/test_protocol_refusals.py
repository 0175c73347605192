"""What the decoder says when it refuses a frame, word for word.

A refused frame ends the session with this text as its one line on stderr (the dispatcher's,
or the master's "protocol error" of that host), so the text is part of the behaviour: it must
name the message, the field and the value (cut to a readable length), and never be blank.
"""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import protocol
from dispatcher.protocol import (
    BOOT_MARK,
    COLUMNS_FROM,
    FOLD_OUTPUT,
    MASTER,
    MAX_CORES,
    MAX_PID,
    Done,
    Dones,
    Exit,
    Kill,
    RemoteProtocolError,
    Run,
    Runs,
    Started,
    decode_body,
    encode,
    find_boot_mark,
    frame_end,
    integer,
    number,
)


def refusal(body: bytes, sender=None) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_body(body, sender)
    return str(caught.value)


def pack(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (msgpack.packb({"a": 1}), "frame body is not [code, ...]"),
        (pack(), "frame body is not [code, ...]"),
        (pack("7", 1, 2.0), "frame body is not [code, ...]"),
        (pack(99), "unknown message code 99"),
        (pack(Kill.CODE, 1), "Kill takes 3 fields, got 1"),
        (pack(Kill.CODE, "x", 1.0, False), "Kill.aid has a bad value: 'x'"),
        (pack(Kill.CODE, True, 1.0, False), "Kill.aid has a bad value: True"),
        (pack(Exit.CODE, 1, 0, 9, 0.1, 0.0, 0), "Exit needs exactly one of code and signal"),
        (pack(Run.CODE, 1, 2, b"true", {1: "x"}, False), "Run.env has a bad value: {1: 'x'}"),
        (
            pack(Done.CODE, 1, 2, 1, None, None, 0.1, 0.0, 0, b"", b""),
            "Done needs exactly one of code and signal",
        ),
        (
            pack(Done.CODE, 1, 2, 1, 0, None, 0.1, 0.0, 0, bytes(FOLD_OUTPUT), b"e"),
            f"Done holds over {FOLD_OUTPUT} bytes of output",
        ),
        (
            pack(Dones.CODE, [[1, 2, 1, 0, None, 0.1, 0.0, 0, b"", b""], [1, 0, 1, 0, None, 0.1]]),
            "Dones item 1: Done takes 10 fields, got 6",
        ),
        (pack(Dones.CODE, [7]), "Dones item 0 is not a Done's fields"),
        (
            pack(Runs.CODE, [[1, 2, b"true", {}, False], [1, 2, "true", {}, False]]),
            "Runs item 1: Run.command has a bad value: 'true'",
        ),
    ],
    ids=[
        "a map",
        "empty",
        "a str code",
        "unknown",
        "arity",
        "a str",
        "a bool",
        "both",
        "env",
        "done neither",
        "done too big",
        "dones bad item",
        "dones not a list",
        "runs bad item",
    ],
)
def test_each_refusal_names_what_is_wrong(body: bytes, said: str):
    assert refusal(body) == said


def test_an_undecodable_body_says_what_msgpack_said():
    body = b"\xc1"  # a byte msgpack never uses
    with pytest.raises(Exception) as raw:
        msgpack.unpackb(body, raw=False)
    assert refusal(body) == f"undecodable frame body ({raw.value})"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("y" * 58, repr("y" * 58)),  # a repr of 60 characters is shown whole
        ("y" * 59, repr("y" * 59)[:50] + "... (61 characters)"),
        ("y" * 1000, repr("y" * 1000)[:50] + "... (1002 characters)"),
    ],
    ids=["60", "61", "1002"],
)
def test_a_long_bad_value_is_cut_to_a_readable_line(value: str, shown: str):
    assert refusal(pack(Kill.CODE, value, 1.0, False)) == f"Kill.aid has a bad value: {shown}"


def test_a_message_of_the_other_end_is_refused_by_name():
    said = refusal(encode(Started(1, 100, 1))[4:], MASTER)
    assert said == "the master sent Started, which only the dispatcher sends"


def test_a_frame_longer_than_the_maximum_is_a_corrupt_stream():
    buf = bytearray(b"\x00\x00\x01\x01" + b"x" * 257)
    assert frame_end(buf, 0, 257) == 4 + 257
    with pytest.raises(RemoteProtocolError) as caught:
        frame_end(buf, 0, 256)
    assert str(caught.value) == "frame length 257 exceeds the maximum 256: corrupt stream"


def test_number_and_integer_bounds_are_inclusive_and_refuse_what_is_not_a_number():
    assert number(5.0, 0, 5) and number(5, 0, 5) and number(0, 0)
    assert not number(6, 0, 5) and not number(5.5, 0, 5) and not number(-1, 0)
    assert not number(math.nan, 0) and not number(math.inf, 0)
    assert integer(5, 0, 5) and integer(0, 0)
    assert not integer(6, 0, 5) and not integer(True, 0, 5) and not integer(5.0, 0, 5)


def test_the_first_boot_mark_counts_not_a_later_one():
    data = b"motd\n" + BOOT_MARK + b"F" + b"more" + BOOT_MARK + b"E"
    first = len(b"motd\n" + BOOT_MARK)
    assert find_boot_mark(data) == (b"F", first + 1)
    assert find_boot_mark(b"motd\n" + BOOT_MARK) is None  # its kind byte has not come yet


_GOOD_DONE = [1, 2, 1, 0, None, 0.1, 0.0, 0, b"", b""]
_DONE_FIELDS = ["aid", "pid", "slot", "code", "signal", "duration", "cpu", "maxrss_kb"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aid", True),  # a bool is no int
        ("aid", 1.0),
        ("pid", 0),
        ("pid", 2**63),
        ("slot", None),
        ("code", 256),
        ("code", -1),
        ("signal", 0),
        ("signal", "9"),
        ("duration", math.nan),
        ("duration", math.inf),
        ("duration", -0.5),
        ("cpu", "0.1"),
        ("maxrss_kb", -1),
        ("stdout", "text"),
        pytest.param("stdout", bytes(FOLD_OUTPUT + 1), id="stdout-past FOLD_OUTPUT"),
        ("stderr", None),
    ],
)
def test_a_bad_field_in_any_item_of_a_dones_is_refused_as_that_item(field: str, value):
    """A Dones frame's items are checked a field at a time over all of them (the common case
    costs no call per field); a bad value in any item, of any kind, still refuses the frame,
    with the words a Done frame of that item would get."""
    bad = list(_GOOD_DONE)
    bad[[*_DONE_FIELDS, "stdout", "stderr"].index(field)] = value
    said = refusal(pack(Dones.CODE, [*[_GOOD_DONE] * COLUMNS_FROM, bad]))
    assert said == f"Dones item {COLUMNS_FROM}: " + refusal(pack(Done.CODE, *bad))


def test_a_dones_item_wrong_only_as_a_whole_is_refused_as_that_item():
    bad = [1, 2, 1, 0, 9, 0.1, 0.0, 0, b"", b""]  # a code and a signal
    said = refusal(pack(Dones.CODE, [*[_GOOD_DONE] * COLUMNS_FROM, bad]))
    assert said == f"Dones item {COLUMNS_FROM}: Done needs exactly one of code and signal"


def test_a_dones_frame_of_good_items_gives_each_as_a_done():
    items = [[aid, 2, 1, 0, None, 0.5 * aid, 0, 7, b"out", b""] for aid in range(3)]
    items.append([3, 2, 1, None, 9, 2, 0.25, 0, b"", bytes(FOLD_OUTPUT)])  # ints as floats
    items *= 2  # enough to be checked a column at a time (COLUMNS_FROM)
    dones = decode_body(pack(Dones.CODE, items)).dones()
    assert dones == [Done(*item) for item in items]


def test_a_dones_frame_of_many_good_items_is_checked_by_columns_not_item_by_item(monkeypatch):
    """The point of the column-wise check: a frame of many well-formed items, bounds reached
    included, costs no per-item check; one of fewer than COLUMNS_FROM is checked item by item."""
    real, checked = protocol.checked, []

    def counting(code: int, args: list) -> object:
        checked.append(code)
        return real(code, args)

    monkeypatch.setattr(protocol, "checked", counting)
    edge = [0, MAX_PID, MAX_CORES, 255, None, 0.0, 0, 0, bytes(FOLD_OUTPUT), b""]
    items = [edge, [1, 1, 1, None, 127, 1, 2.5, 7, b"", b"e"], *[_GOOD_DONE] * COLUMNS_FROM]
    items = items[:COLUMNS_FROM]  # the least that is checked by columns
    assert len(decode_body(pack(Dones.CODE, items)).dones()) == len(items)
    assert checked == [Dones.CODE]
    checked.clear()
    plain = [_GOOD_DONE] * COLUMNS_FROM  # a whole column of None (signal): nothing to bound
    assert len(decode_body(pack(Dones.CODE, plain)).dones()) == COLUMNS_FROM
    runs = [[aid, aid, b"true", {"K": "v"} if aid else {}, aid % 2 == 0] for aid in range(8)]
    assert [r.env for r in decode_body(pack(Runs.CODE, runs)).runs()][:2] == [{}, {"K": "v"}]
    assert checked == [Dones.CODE, Runs.CODE]  # an env is checked by its own check, per value
    checked.clear()
    few = items[: COLUMNS_FROM - 1]
    assert len(decode_body(pack(Dones.CODE, few)).dones()) == len(few)
    assert checked == [Dones.CODE, *[Done.CODE] * len(few)]


@pytest.mark.parametrize(
    ("item", "said"),
    [([1, 0, 1, 0, None, 0.1], "Done takes 10 fields, got 6"), (7, "is not a Done's fields")],
)
def test_a_dones_item_of_the_wrong_shape_among_many_is_refused_as_that_item(item, said: str):
    """The column-wise check first makes sure every item is a list of the right length: one
    that is not, among many good ones, is worded as among few."""
    body = pack(Dones.CODE, [*[_GOOD_DONE] * COLUMNS_FROM, item])
    sep = ": " if said.startswith("Done ") else " "
    assert refusal(body) == f"Dones item {COLUMNS_FROM}{sep}{said}"


_CODE_OR_SIGNAL = st.one_of(st.none(), st.integers(1, 127))
_OUTPUT = st.sampled_from([b"", b"x", bytes(FOLD_OUTPUT // 2), bytes(FOLD_OUTPUT)])


@given(
    st.lists(st.tuples(_CODE_OR_SIGNAL, _CODE_OR_SIGNAL, _OUTPUT, _OUTPUT), min_size=1, max_size=12)
)
def test_the_column_check_of_dones_says_what_each_dones_problem_says(records):
    """Dones of many items are judged whole by columns (`Done.columns_well`), not a
    `problem()` call each: it must pass exactly the frames whose every record passes."""
    items = [[1, 2, 1, code, signal, 0.1, 0.0, 0, out, err] for code, signal, out, err in records]
    columns = list(zip(*items, strict=True))
    every_well = all(Done(*item).problem() is None for item in items)
    assert Done.columns_well(columns) == every_well
