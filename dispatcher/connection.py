"""One end's view of a master <-> dispatcher session, sans I/O: who may say what, and when.

dispatcher/protocol.py defines the bytes (boot marks, frames, messages, and who sends each);
this module the session they make, as h11 does for HTTP: a `Connection(MASTER)` on the master,
a `Connection(DISPATCHER)` in the dispatcher, each fed with what the other sent
(`receive_data(bytes)`, then `next_event()` until NEED_DATA) and turning messages into bytes
(`send(msg)`). The states of both ends are one table, `_NEXT`:

    the dispatcher's end    BOOTING --N--> PAYLOAD --(payload sent)--> BOOTING
                            BOOTING --E--> FAILED
                            BOOTING --F--> HELLO --Hello--> RUNNING --Bye--> CLOSED
    the master's end        WAITING --(the dispatcher's Hello)--> SETUP
                            SETUP --Setup--> RUNNING --Shutdown--> CLOSED

and the end of a stream closes its end from any state. A message from the wrong end (a
dispatcher sending Run), out of turn (a second Hello, a frame after Bye, anything before the
greeting), or a Hello of another PROTOCOL_VERSION is a RemoteProtocolError when the peer sends
it, a LocalProtocolError when this end tries to.

Python 3.8+, stdlib + msgpack only: the dispatcher runs it on the end machines.
"""

from __future__ import annotations

import enum

from .protocol import (
    BOOT_ERROR,
    BOOT_FRAMES,
    BOOT_MARK,
    BOOT_NEED_PAYLOAD,
    DISPATCHER,
    EITHER,
    MASTER,
    MAX_FRAME,
    PROTOCOL_VERSION,
    Bye,
    Hello,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    Role,
    Setup,
    Shutdown,
    StartupError,
    decode_body,
    encode,
    encode_parts,
    frame_end,
)
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Dict, Optional, Tuple, Union

MAX_NOISE = 1 << 20
"""Bytes a login shell may print before the boot mark; more means something is badly wrong."""
MAX_LINE = 1000
"""Bytes of one line from the host (a boot error, the stderr that explains a failure) that
anet keeps and shows: a host cannot fill the master's memory or the user's terminal with one."""


def clip_line(line: bytes) -> str:
    """A line from the host as text of at most MAX_LINE bytes' worth, marked when cut."""
    text = line[:MAX_LINE].decode("utf-8", "replace")
    return text if len(line) <= MAX_LINE else text + "..."


# -- the states, in one table ------------------------------------------------------------------


class State(enum.Enum):
    """Where one end of a session is; a Connection tracks both ends (docs/protocol.md, 1.5)."""

    BOOTING = "booting"  # the dispatcher's end: login noise, then a boot mark
    PAYLOAD = "waiting for its payload"  # the stub asked for the payload (N) and waits
    WAITING = "waiting for Hello"  # the master's end, until the dispatcher said Hello
    HELLO = "to say Hello first"  # the dispatcher's end after F: Hello is its first frame
    SETUP = "to send Setup first"  # the master's end after Hello: Setup is its first frame
    RUNNING = "running"  # frames flow
    CLOSED = "closed"  # said Bye (dispatcher) or Shutdown (master), or its stream ended
    FAILED = "failed"  # the stub reported a start-up error (E); nothing more is read
    BROKEN = "broken"  # it broke the protocol; nothing more of it is believed

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python, per frame


_PAYLOAD_SENT = "payload sent"

_NEXT: Dict[Tuple[Role, State, Any], State] = {
    # whose state  in state         on                    becomes
    (DISPATCHER, State.BOOTING, BOOT_NEED_PAYLOAD): State.PAYLOAD,
    (DISPATCHER, State.PAYLOAD, _PAYLOAD_SENT): State.BOOTING,
    (DISPATCHER, State.BOOTING, BOOT_ERROR): State.FAILED,
    (DISPATCHER, State.BOOTING, BOOT_FRAMES): State.HELLO,
    (DISPATCHER, State.HELLO, Hello): State.RUNNING,
    (MASTER, State.WAITING, Hello): State.SETUP,
    (MASTER, State.SETUP, Setup): State.RUNNING,
    (DISPATCHER, State.RUNNING, Bye): State.CLOSED,
    (MASTER, State.RUNNING, Shutdown): State.CLOSED,
}
"""Every change of state: (whose, in which state, on what) -> its new state. A message changes
its sender's state by its own row (a message with no row for its sender's state is out of
turn), and the other end's state where that has a row too (a Hello makes the master's Setup
due). In RUNNING any message without a row keeps the state; elsewhere none may come."""

_TURNS = frozenset(key[2].CODE for key in _NEXT if isinstance(key[2], type))
"""Codes of the messages that change a state: the others need no look at the table."""
_FRAMES = (State.HELLO, State.SETUP, State.RUNNING, State.CLOSED)
"""States in which what the peer sends is read as frames."""
_RUNNING = State.RUNNING
"""For the hot paths: an Enum member read through its class costs about 0.3 us on 3.11."""


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""`next_event()`'s answer when the bytes so far complete no event: receive more."""
PAUSED = _Sentinel("PAUSED")
"""`next_event()`'s answer while the stub waits for its payload: nothing comes before it."""


@frozen
class PayloadWanted:
    """The stub found no intact dispatcher in its cache: answer with `send_payload()`."""


@frozen
class BootFailed:
    """The stub could not start the dispatcher (E): `reason` is its one line, clipped."""

    reason: str


@frozen
class ConnectionClosed:
    """The peer's stream ended, `state` being where the peer was then; `pending` counts the
    bytes of a frame it cut off (login noise does not count)."""

    state: State
    pending: int = 0

    @property
    def clean(self) -> bool:
        """The peer had said its last word (Bye, or Shutdown) before its stream ended."""
        return self.state is State.CLOSED


if TYPE_CHECKING:
    Event = Union[Message, PayloadWanted, BootFailed, ConnectionClosed]
    """What `next_event()` returns, but for its NEED_DATA and PAUSED."""


def _decode(buf: bytearray, pos: int, end: int, sender: Role) -> Message:
    """The frame at `pos` (ending at `end`) decoded in place: a slice of the bytearray would
    copy its body first (a job's output chunk, 256 KiB); a view does not, and is let go at
    once, as `receive_data` resizes the buffer."""
    view = memoryview(buf)[pos + 4 : end]
    try:
        return decode_body(view, sender)
    finally:
        view.release()


class Connection:
    """One end of a master <-> dispatcher session, sans I/O (as h11 is for HTTP).

    `receive_data(data)` takes what the peer sent (b"" at the end of its stream); then
    `next_event()` returns one event at a time until NEED_DATA: the peer's messages and, on the
    master's end, the stub's PayloadWanted (then PAUSED until `send_payload()`) and BootFailed;
    at the end ConnectionClosed. `send` turns a message into the bytes to write. Both ends'
    states are tracked (`our_state`, `their_state`), and a message its sender may not send, or
    not in its state, is refused: RemoteProtocolError from the peer (StartupError during its
    start-up), LocalProtocolError from this side. After a RemoteProtocolError the connection
    stays broken.

    The master's end meets the dispatcher's from its login noise on; the dispatcher's end starts
    where the stub left off (`start()` gives its boot mark) and needs the master's Setup first.
    """

    def __init__(self, role: Role) -> None:
        if role is EITHER:
            raise LocalProtocolError("a Connection is the MASTER's end or the DISPATCHER's")
        self.role = role
        self.peer = DISPATCHER if role is MASTER else MASTER
        master = State.WAITING if role is MASTER else State.SETUP
        self._states = {MASTER: master, DISPATCHER: State.BOOTING}
        self._buf = bytearray()
        self._pos = 0  # what of _buf is read; dropped at the next receive_data
        self._noise = 0  # login noise dropped so far, while the dispatcher's end boots
        self._eof = False
        self._error: Optional[RemoteProtocolError] = None

    @property
    def our_state(self) -> State:
        return self._states[self.role]

    @property
    def their_state(self) -> State:
        return self._states[self.peer]

    # -- from the peer ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes the peer sent, in order; b"" when its stream ended."""
        if self._eof:
            raise LocalProtocolError("data after the end of the peer's stream")
        if not data:
            self._eof = True
            return
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Union[Event, _Sentinel]:
        """The next event the received bytes complete, or NEED_DATA (or PAUSED)."""
        state = self._states[self.peer]
        if state is _RUNNING:  # the hot path: a job's frames, all of one kind of check
            buf, pos = self._buf, self._pos
            end = frame_end(buf, pos, MAX_FRAME)
            if end:
                self._pos = end
                try:
                    msg = _decode(buf, pos, end, self.peer)
                    if msg.CODE in _TURNS:
                        self._turn(self.peer, msg, remote=True)
                except RemoteProtocolError as exc:
                    raise self._broken(exc) from None
                return msg
        try:
            event = self._next_event(state)
        except RemoteProtocolError as exc:
            raise self._broken(exc) from None
        if event is not None:
            return event
        if not self._eof:
            return NEED_DATA
        self._states[self.peer] = State.CLOSED
        cut = len(self._buf) - self._pos if state in _FRAMES else 0
        return ConnectionClosed(state, cut)

    def _next_event(self, state: State) -> Union[Event, _Sentinel, None]:
        if state in _FRAMES:
            return self._next_message(state)
        if state is State.BOOTING:
            return self._next_boot()
        if state is State.PAYLOAD:
            return PAUSED
        if state is State.BROKEN:
            assert self._error is not None
            raise self._error
        return None  # FAILED: what follows a boot error is not read

    def _broken(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        """The peer broke the protocol: so it stays, every later call raises the same."""
        self._error = exc
        self._states[self.peer] = State.BROKEN
        return exc

    def _next_message(self, state: State) -> Optional[Message]:
        buf, pos = self._buf, self._pos
        end = frame_end(buf, pos, MAX_FRAME)
        if not end:
            return None
        self._pos = end
        msg = _decode(buf, pos, end, self.peer)
        self._turn(self.peer, msg, remote=True)
        return msg

    def _next_boot(self) -> Optional[Event]:
        """The dispatcher's end boots: skip login noise (at most MAX_NOISE) up to a boot mark."""
        buf = self._buf
        at = buf.find(BOOT_MARK, self._pos)
        kind_at = at + len(BOOT_MARK)
        if at < 0 or len(buf) <= kind_at:
            keep = at if at >= 0 else max(self._pos, len(buf) - len(BOOT_MARK) + 1)
            self._noise += keep - self._pos
            self._pos = keep  # what may still be (the start of) a mark stays
            if self._noise + len(buf) - keep > MAX_NOISE:
                raise StartupError("the login shell printed over 1 MiB before anet could start")
            return None
        kind = bytes(buf[kind_at : kind_at + 1])
        if kind == BOOT_ERROR:
            return self._boot_error(kind_at + 1)
        new = _NEXT.get((DISPATCHER, State.BOOTING, kind))
        if new is None:
            raise StartupError("unexpected start-up reply %r" % kind)
        self._pos = kind_at + 1
        self._states[DISPATCHER] = new
        if new is State.PAYLOAD:
            return PayloadWanted()
        return self._next_message(new)

    def _boot_error(self, start: int) -> Optional[BootFailed]:
        """The stub's one line of reason after E: wait for all of it, up to MAX_LINE bytes."""
        buf = self._buf
        end = buf.find(b"\n", start)
        if end < 0:
            if len(buf) - start < MAX_LINE and not self._eof:
                return None
            end = len(buf)
        self._pos = len(buf)
        self._states[DISPATCHER] = State.FAILED
        return BootFailed(clip_line(bytes(buf[start:end])))

    # -- to the peer ----------------------------------------------------------------------------

    def send(self, msg: Message) -> bytes:
        """The bytes of `msg`, if this end may send it now; else LocalProtocolError."""
        data = encode(msg)
        self._sending(msg)
        return data

    def send_parts(self, msg: Message) -> Tuple[bytes, ...]:
        """As `send`, the frame in parts (`encode_parts`: a job's output chunk not copied)."""
        parts = encode_parts(msg)
        self._sending(msg)
        return parts

    def _sending(self, msg: Message) -> None:
        """Whether this end may send `msg` now (LocalProtocolError if not), and its turn."""
        sender = type(msg).SENDER
        if sender is not self.role and sender is not EITHER:
            raise LocalProtocolError(
                "the %s may not send %s: only the %s does"
                % (self.role.value, type(msg).__name__, sender.value)
            )
        if self._states[self.role] is not _RUNNING or msg.CODE in _TURNS:
            self._turn(self.role, msg, remote=False)

    def send_payload(self, payload: bytes) -> bytes:
        """The master's answer to PayloadWanted: the length line, then the dispatcher's zip."""
        if self.role is not MASTER or self._states[DISPATCHER] is not State.PAYLOAD:
            raise LocalProtocolError("no payload was asked for")
        self._states[DISPATCHER] = _NEXT[(DISPATCHER, State.PAYLOAD, _PAYLOAD_SENT)]
        self._noise = 0  # the stub starts again: noise is counted afresh
        return b"%d\n" % len(payload) + payload

    def start(self) -> bytes:
        """The dispatcher's first bytes, its boot mark: frames follow, Hello first."""
        if self.role is not DISPATCHER or self._states[DISPATCHER] is not State.BOOTING:
            raise LocalProtocolError("only a dispatcher starts, and once")
        self._states[DISPATCHER] = _NEXT[(DISPATCHER, State.BOOTING, BOOT_FRAMES)]
        return BOOT_MARK + BOOT_FRAMES

    # -- the table ------------------------------------------------------------------------------

    def _turn(self, who: Role, msg: Message, remote: bool) -> None:
        """Move the states on `who`'s message `msg`, or refuse it as out of turn."""
        cls = type(msg)
        state = self._states[who]
        new = _NEXT.get((who, state, cls))
        if new is None:
            if remote:
                raise _out_of_turn(who, state, cls.__name__)
            raise LocalProtocolError(
                "cannot send %s: the %s is %s" % (cls.__name__, who.value, state.value)
            )
        if isinstance(msg, Hello) and msg.version != PROTOCOL_VERSION:
            text = "dispatcher speaks protocol %d, anet %d" % (msg.version, PROTOCOL_VERSION)
            raise StartupError(text) if remote else LocalProtocolError(text)
        self._states[who] = new
        other = self.peer if who is self.role else self.role
        follows = _NEXT.get((other, self._states[other], cls))
        if follows is not None:
            self._states[other] = follows


def _out_of_turn(who: Role, state: State, name: str) -> RemoteProtocolError:
    """The error for a message its sender may not send in `state`, in words that name both."""
    if state is State.HELLO:
        return StartupError("dispatcher spoke %s before Hello" % name)
    if state is State.SETUP:
        return StartupError("master spoke %s before Setup" % name)
    if state is State.RUNNING:
        return RemoteProtocolError("the %s sent a second %s" % (who.value, name))
    if state is State.CLOSED:
        last = "Bye" if who is DISPATCHER else "Shutdown"
        return RemoteProtocolError("the %s sent %s after %s" % (who.value, name, last))
    return RemoteProtocolError("the %s sent %s while %s" % (who.value, name, state.value))
