"""dispatcher.connection, sans I/O: two ends of a session fed into each other, no sockets.

A master's and a dispatcher's Connection talk through byte strings, whole and one byte at a
time; every message class of the registry is tried from the wrong end, and every state is
tried with what may not come in it.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from wire_messages import every_message

from dispatcher import record
from dispatcher.connection import (
    MAX_LINE,
    MAX_NOISE,
    NEED_DATA,
    PAUSED,
    BootFailed,
    Connection,
    ConnectionClosed,
    PayloadWanted,
    State,
)
from dispatcher.protocol import (
    _CLASSES,
    BOOT_ERROR,
    BOOT_FRAMES,
    BOOT_MARK,
    BOOT_NEED_PAYLOAD,
    DISPATCHER,
    EITHER,
    MASTER,
    MAX_FRAME,
    PROTOCOL_VERSION,
    STDOUT,
    Bye,
    Exit,
    Heartbeat,
    Hello,
    Kill,
    LocalProtocolError,
    Message,
    Output,
    RemoteProtocolError,
    Role,
    Run,
    Setup,
    Shutdown,
    Started,
    StartupError,
    decode_body,
    encode,
    message,
)

MESSAGES = every_message()

HELLO = Hello(PROTOCOL_VERSION, "node1", 4, "3.11.7", 0.5, 4242, "/w")
SETUP = Setup(4, "node1", "", 3.0, 15.0)


_PLAIN: dict[str, Any] = {
    "int": 1,
    "float": 0.5,
    "str": "x",
    "bytes": b"x",
    "bool": True,
    "list": [],
    "Optional[int]": None,
    "Dict[str, str]": {},
}
"""A field's value by its annotation, as the protocol module checks it."""


def sample(cls: type) -> Message:
    """A valid message of `cls`, whatever its fields: ones, halves, one-letter strings, and
    one optional int set (an exit's code, not its signal)."""
    if cls is Hello:
        return HELLO
    values = [_PLAIN[str(f.type)] for f in record.fields(cls)]
    optional = [i for i, f in enumerate(record.fields(cls)) if str(f.type) == "Optional[int]"]
    if optional:
        values[optional[0]] = 0
    msg = cls(*values)
    assert decode_body(encode(msg)[4:]) == msg  # a valid frame: refused only for who sent it
    return msg


def other(role: Role) -> Role:
    return DISPATCHER if role is MASTER else MASTER


def events(conn: Connection, data: bytes, one_byte: bool = False) -> list[Any]:
    """Feed `data` (whole, or one byte at a time) and take every event it completes."""
    out: list[Any] = []
    for piece in [data[i : i + 1] for i in range(len(data))] if one_byte else [data]:
        conn.receive_data(piece)
        while (event := conn.next_event()) not in (NEED_DATA, PAUSED):
            out.append(event)
            if isinstance(event, ConnectionClosed):
                return out
    return out


def running() -> tuple[Connection, Connection]:
    """A master's and a dispatcher's end, past the greeting: both RUNNING."""
    master, disp = Connection(MASTER), Connection(DISPATCHER)
    assert events(master, disp.start() + disp.send(HELLO)) == [HELLO]
    assert events(disp, master.send(SETUP)) == [SETUP]
    assert master.our_state is master.their_state is State.RUNNING
    assert disp.our_state is disp.their_state is State.RUNNING
    return master, disp


def ends(conn: Connection) -> dict[Role, State]:
    return {conn.role: conn.our_state, conn.peer: conn.their_state}


# -- a whole session ----------------------------------------------------------------------------


@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "one byte at a time"])
def test_a_whole_session_between_two_connections(one_byte: bool):
    master, disp = Connection(MASTER), Connection(DISPATCHER)
    noise = b"Welcome\r\n\x1b[1mLast login\x1b[0m\n" + BOOT_MARK[:4] + b"\n"
    stub = noise + BOOT_MARK + BOOT_NEED_PAYLOAD + b"\n"  # the stub's words, cache missed
    assert events(master, stub, one_byte) == [PayloadWanted()]
    assert master.their_state is State.PAYLOAD
    assert master.send_payload(b"ZIP") == b"3\nZIP"
    assert master.their_state is State.BOOTING
    assert events(master, b"more noise\n" + disp.start(), one_byte) == []
    assert master.their_state is State.HELLO
    assert events(master, disp.send(HELLO), one_byte) == [HELLO]
    assert ends(master) == {MASTER: State.SETUP, DISPATCHER: State.RUNNING}

    to_disp = [SETUP, Run(0, 0, b"echo hi"), Heartbeat(0.0), Kill(0, 2.0)]
    assert events(disp, b"".join(map(master.send, to_disp)), one_byte) == to_disp
    to_master = [
        Started(0, 77, 1),
        Output(0, STDOUT, b"hi\n"),
        Heartbeat(0.25),
        Exit(0, None, 15, 0.5, 0.1, 2048),
    ]
    assert events(master, b"".join(map(disp.send, to_master)), one_byte) == to_master

    assert events(disp, master.send(Shutdown()), one_byte) == [Shutdown()]
    assert master.our_state is disp.their_state is State.CLOSED
    assert events(disp, b"") == [ConnectionClosed(State.CLOSED)]
    assert events(master, disp.send(Bye()), one_byte) == [Bye()]
    (closed,) = events(master, b"")
    assert closed == ConnectionClosed(State.CLOSED) and closed.clean
    assert (
        ends(master)
        == ends(disp)
        == {
            MASTER: State.CLOSED,
            DISPATCHER: State.CLOSED,
        }
    )


noise = st.binary(max_size=300).filter(lambda b: BOOT_MARK not in b) | st.sampled_from(
    [b"", BOOT_MARK[:-1], BOOT_MARK[:3] + b"\n" + BOOT_MARK[:6], b"\x00" * 20]
)


@given(noise, noise, st.lists(st.integers(min_value=0), max_size=10))
def test_any_login_noise_before_the_boot_marks_cut_anywhere(
    before: bytes, again: bytes, points: list[int]
):
    # noise may end in part of a mark, but not make the real mark start earlier than it does
    assume((before + BOOT_MARK).find(BOOT_MARK) == len(before))
    assume((b"\n" + again + BOOT_MARK).find(BOOT_MARK) == len(again) + 1)
    disp = Connection(DISPATCHER)
    after = again + disp.start() + disp.send(HELLO) + disp.send(Started(1, 2, 1))
    master = Connection(MASTER)
    stub = before + BOOT_MARK + BOOT_NEED_PAYLOAD + b"\n"
    edges = sorted({0, len(stub), *(p % (len(stub) + 1) for p in points)})
    got = []
    for a, b in itertools.pairwise(edges):
        got += events(master, stub[a:b])
    assert got == [PayloadWanted()]
    master.send_payload(b"")
    assert events(master, after, one_byte=True) == [HELLO, Started(1, 2, 1)]


def test_login_noise_up_to_max_noise_is_skipped_and_a_byte_more_refused():
    master = Connection(MASTER)
    for _ in range(MAX_NOISE // 65536):
        assert events(master, b"x" * 65536) == []
    assert events(master, BOOT_MARK + BOOT_FRAMES + encode(HELLO)) == [HELLO]
    master = Connection(MASTER)
    assert events(master, b"\n" * MAX_NOISE) == []
    with pytest.raises(StartupError, match="the login shell printed over 1 MiB before anet"):
        events(master, b"\n")


def test_the_noise_cap_counts_afresh_after_the_payload():
    master = Connection(MASTER)
    assert events(master, b"n" * (MAX_NOISE - 100) + BOOT_MARK + BOOT_NEED_PAYLOAD) == [
        PayloadWanted()
    ]
    master.send_payload(b"ZIP")
    assert events(master, b"n" * MAX_NOISE) == []
    with pytest.raises(StartupError):
        events(master, b"n")


# -- the stub's start-up failures ---------------------------------------------------------------


@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "one byte at a time"])
def test_a_boot_error_is_its_one_line(one_byte: bool):
    master = Connection(MASTER)
    data = b"motd\n" + BOOT_MARK + BOOT_ERROR + b"python 3.7 is too old\nTraceback...\n"
    assert events(master, data, one_byte) == [BootFailed("python 3.7 is too old")]
    assert master.their_state is State.FAILED
    assert events(master, b"anything after it is not read\x00\x00\x00\x01") == []
    assert events(master, b"") == [ConnectionClosed(State.FAILED)]


def test_a_boot_error_line_is_cut_at_max_line_and_one_without_end_ends_with_the_stream():
    long = Connection(MASTER)
    got = events(long, BOOT_MARK + BOOT_ERROR + b"e" * (MAX_LINE - 1), one_byte=False)
    assert got == []  # waits for the rest of the line
    (failed,) = events(long, b"e" * 3_000_000)
    assert failed == BootFailed("e" * MAX_LINE + "...")
    cut = Connection(MASTER)
    assert events(cut, BOOT_MARK + BOOT_ERROR + b"cannot use \xff") == []
    assert events(cut, b"") == [BootFailed("cannot use \ufffd"), ConnectionClosed(State.FAILED)]


def test_an_unknown_boot_reply_is_a_startup_error():
    with pytest.raises(StartupError, match="unexpected start-up reply b'X'"):
        events(Connection(MASTER), b"motd" + BOOT_MARK + b"X")


@pytest.mark.parametrize(
    ("said", "state"),
    [
        (b"", State.BOOTING),
        (b"noise" + BOOT_MARK[:3], State.BOOTING),
        (BOOT_MARK + BOOT_FRAMES, State.HELLO),
        (BOOT_MARK + BOOT_FRAMES + encode(HELLO), State.RUNNING),
        (BOOT_MARK + BOOT_FRAMES + encode(HELLO) + encode(Bye()), State.CLOSED),
    ],
    ids=["silent", "noise", "after F", "running", "after Bye"],
)
def test_the_end_of_the_stream_says_where_the_dispatcher_was(said: bytes, state: State):
    master = Connection(MASTER)
    if said:
        assert all(isinstance(e, Message) for e in events(master, said))
    assert events(master, b"") == [ConnectionClosed(state)]
    assert master.their_state is State.CLOSED
    assert events(master, b"", one_byte=True) == []  # nothing more to feed: no event either


def test_a_frame_cut_by_the_end_of_the_stream_is_pending():
    master, disp = running()
    wire = disp.send(Output(1, STDOUT, b"cut"))
    master.receive_data(wire[:-2])
    assert master.next_event() is NEED_DATA
    master.receive_data(b"")
    closed = master.next_event()
    assert closed == ConnectionClosed(State.RUNNING, len(wire) - 2) and not closed.clean


# -- who may send what --------------------------------------------------------------------------


def test_every_message_says_who_sends_it():
    assert {cls.SENDER for cls in MESSAGES} == {MASTER, DISPATCHER, EITHER}
    assert Heartbeat.SENDER is EITHER and Run.SENDER is MASTER and Exit.SENDER is DISPATCHER


def test_a_message_class_that_says_not_who_sends_it_is_not_registered():
    class Nameless(Message):
        CODE = 99

    before = list(_CLASSES)
    with pytest.raises(LocalProtocolError, match="Nameless says not who sends it"):
        message(record.frozen(Nameless))
    assert before == _CLASSES


_ONE_SIDED = [(cls, cls.SENDER) for cls in MESSAGES if cls.SENDER is not EITHER]


@pytest.mark.parametrize(("cls", "sender"), _ONE_SIDED, ids=lambda v: getattr(v, "__name__", ""))
def test_a_message_from_the_wrong_end_is_a_remote_protocol_error(cls: type, sender: Role):
    """`sender`'s message, received by `sender`'s own kind of end: the peer may not send it."""
    ours = running()[0 if sender is MASTER else 1]
    assert ours.role is sender
    said = f"the {other(sender).value} sent {cls.__name__}, which only the {sender.value} sends"
    with pytest.raises(RemoteProtocolError, match=said):
        events(ours, encode(sample(cls)))
    assert ours.their_state is State.BROKEN


@pytest.mark.parametrize(("cls", "sender"), _ONE_SIDED, ids=lambda v: getattr(v, "__name__", ""))
def test_sending_a_message_of_the_other_end_is_a_local_protocol_error(cls: type, sender: Role):
    wrong = running()[1 if sender is MASTER else 0]
    assert wrong.role is other(sender)
    said = f"the {other(sender).value} may not send {cls.__name__}: only the {sender.value}"
    with pytest.raises(LocalProtocolError, match=said):
        wrong.send(sample(cls))
    assert wrong.our_state is State.RUNNING  # refused: nothing changed


_ORDINARY = [cls for cls in MESSAGES if cls not in (Hello, Setup, Bye, Shutdown)]


@pytest.mark.parametrize("cls", _ORDINARY, ids=lambda cls: cls.__name__)
def test_every_other_message_flows_from_its_end_while_running(cls: type):
    master, disp = running()
    for sender, receiver in ((master, disp), (disp, master)):
        if cls.SENDER in (sender.role, EITHER):
            msg = sample(cls)
            assert events(receiver, sender.send(msg)) == [msg]
            assert receiver.their_state is sender.our_state is State.RUNNING


def test_a_wrong_direction_is_refused_at_start_up_too_before_the_order():
    master = Connection(MASTER)
    with pytest.raises(RemoteProtocolError, match="the dispatcher sent Run, which only") as err:
        events(master, BOOT_MARK + BOOT_FRAMES + encode(Run(1, 1, b"x")))
    assert type(err.value) is RemoteProtocolError  # a protocol error, not a start-up failure


# -- what may come when ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [c for c in MESSAGES if c.SENDER is not MASTER and c is not Hello])
def test_the_dispatchers_first_frame_must_be_hello(cls: type):
    with pytest.raises(StartupError, match=f"^dispatcher spoke {cls.__name__} before Hello$"):
        events(Connection(MASTER), BOOT_MARK + BOOT_FRAMES + encode(sample(cls)))


@pytest.mark.parametrize(
    "cls", [c for c in MESSAGES if c.SENDER is not DISPATCHER and c is not Setup]
)
def test_the_masters_first_frame_must_be_setup(cls: type):
    with pytest.raises(StartupError, match=f"^master spoke {cls.__name__} before Setup$"):
        events(Connection(DISPATCHER), encode(sample(cls)))


@pytest.mark.parametrize("version", [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 0])
def test_a_hello_of_another_version_is_refused(version: int):
    hello = record.replace(HELLO, version=version)
    said = f"^dispatcher speaks protocol {version}, anet {PROTOCOL_VERSION}$"
    with pytest.raises(StartupError, match=said):
        events(Connection(MASTER), BOOT_MARK + BOOT_FRAMES + encode(hello))
    disp = Connection(DISPATCHER)
    disp.start()
    with pytest.raises(LocalProtocolError, match=said[1:-1]):
        disp.send(hello)


def test_a_second_hello_or_setup_is_refused():
    master, disp = running()
    with pytest.raises(RemoteProtocolError, match="the dispatcher sent a second Hello"):
        events(master, encode(HELLO))
    with pytest.raises(RemoteProtocolError, match="the master sent a second Setup"):
        events(disp, encode(SETUP))
    master, disp = running()
    with pytest.raises(LocalProtocolError, match="cannot send Hello: the dispatcher is running"):
        disp.send(HELLO)
    with pytest.raises(LocalProtocolError, match="cannot send Setup: the master is running"):
        master.send(SETUP)


_AFTER_LAST_WORDS = [(Bye(), c) for c in MESSAGES if c.SENDER is not MASTER] + [
    (Shutdown(), c) for c in MESSAGES if c.SENDER is not DISPATCHER
]


@pytest.mark.parametrize(
    ("last", "cls"),
    _AFTER_LAST_WORDS,
    ids=[f"{type(last).__name__}-{cls.__name__}" for last, cls in _AFTER_LAST_WORDS],
)
def test_nothing_comes_after_bye_or_shutdown(last: Message, cls: type):
    master, disp = running()
    sender, receiver = (disp, master) if isinstance(last, Bye) else (master, disp)
    assert events(receiver, sender.send(last)) == [last]
    who, name, after = sender.role.value, cls.__name__, type(last).__name__
    with pytest.raises(RemoteProtocolError, match=f"^the {who} sent {name} after {after}$"):
        events(receiver, encode(sample(cls)))
    with pytest.raises(LocalProtocolError, match=f"^cannot send {name}: the {who} is closed$"):
        sender.send(sample(cls))


def test_the_master_sends_nothing_before_hello_and_setup_comes_first():
    master = Connection(MASTER)
    with pytest.raises(LocalProtocolError, match="cannot send Setup: the master is waiting"):
        master.send(SETUP)
    events(master, BOOT_MARK + BOOT_FRAMES + encode(HELLO))
    with pytest.raises(LocalProtocolError, match="cannot send Run: the master is to send Setup"):
        master.send(Run(1, 1, b"x"))
    assert master.our_state is State.SETUP
    master.send(SETUP)
    assert master.our_state is State.RUNNING


def test_the_dispatcher_says_its_boot_mark_then_hello_first():
    disp = Connection(DISPATCHER)
    with pytest.raises(LocalProtocolError, match="cannot send Hello: the dispatcher is booting"):
        disp.send(HELLO)
    assert disp.start() == BOOT_MARK + BOOT_FRAMES
    with pytest.raises(LocalProtocolError, match="only a dispatcher starts, and once"):
        disp.start()
    with pytest.raises(LocalProtocolError, match="cannot send Heartbeat: the dispatcher is to"):
        disp.send(Heartbeat(0.0))
    with pytest.raises(LocalProtocolError, match="only a dispatcher starts"):
        Connection(MASTER).start()


def test_the_payload_is_sent_when_asked_for_and_only_then():
    master = Connection(MASTER)
    with pytest.raises(LocalProtocolError, match="no payload was asked for"):
        master.send_payload(b"ZIP")
    events(master, BOOT_MARK + BOOT_NEED_PAYLOAD)
    master.receive_data(b"the stub says nothing more until it has its payload")
    assert master.next_event() is PAUSED  # reading now would wait for ever
    master.send_payload(b"ZIP")
    with pytest.raises(LocalProtocolError, match="no payload was asked for"):
        master.send_payload(b"ZIP")
    with pytest.raises(LocalProtocolError, match="no payload"):
        Connection(DISPATCHER).send_payload(b"ZIP")


def test_a_broken_connection_stays_broken():
    master, disp = running()
    with pytest.raises(RemoteProtocolError) as first:
        events(master, encode(Run(1, 1, b"x")))
    master.receive_data(disp.send(Heartbeat(0.5)))
    with pytest.raises(RemoteProtocolError) as again:
        master.next_event()
    assert again.value is first.value
    assert master.their_state is State.BROKEN


def test_misuse_of_the_connection_itself_is_a_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        Connection(EITHER)
    master = Connection(MASTER)
    master.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after the end"):
        master.receive_data(b"x")
    with pytest.raises(LocalProtocolError, match="not a protocol message"):
        running()[0].send(object())  # type: ignore[arg-type]


# -- caps -----------------------------------------------------------------------------------------


def length_prefix(n: int) -> bytes:
    return struct.pack(">I", n)


@pytest.mark.parametrize("state", ["at start-up", "running", "after Bye"])
def test_a_frame_over_max_frame_is_refused_from_its_length_prefix(state: str):
    master, disp = running() if state != "at start-up" else (Connection(MASTER), None)
    if disp is None:
        events(master, BOOT_MARK + BOOT_FRAMES)
    elif state == "after Bye":
        events(master, disp.send(Bye()))
    with pytest.raises(RemoteProtocolError, match=f"exceeds the maximum {MAX_FRAME}"):
        events(master, length_prefix(MAX_FRAME + 1))


def test_a_frame_of_max_frame_waits_for_its_body():
    master, _ = running()
    assert events(master, length_prefix(MAX_FRAME) + b"\x00" * 1000) == []
    assert master.their_state is State.RUNNING


def test_bytes_read_are_dropped_at_the_next_receive():
    """The buffer holds an incomplete frame at most, not the whole session."""
    master, disp = running()
    heartbeat = disp.send(Heartbeat(0.5))
    for _ in range(1000):
        assert events(master, heartbeat * 10 + heartbeat[:3]) == [Heartbeat(0.5)] * 10
        assert events(master, heartbeat[3:]) == [Heartbeat(0.5)]
    assert len(master._buf) <= len(heartbeat)
