"""The master <-> dispatcher wire protocol, sans I/O: bytes in, typed messages out, and back.

Both sides import this one module, so they cannot disagree on the format. It does no I/O and
knows nothing of asyncio: the master pumps it from asyncssh streams, the dispatcher from a
`selectors` loop, and the tests feed it one byte at a time.

A session on the wire (docs/protocol.md has the full specification):

    noise from the login shell ...      (ignored: banners, MOTD, `echo` in .bashrc)
    BOOT_MARK + b"N\\n"                  stub: "send me the payload" (only on a cache miss)
    BOOT_MARK + b"F"                     dispatcher: frames follow, starting with Hello
    frame frame frame ...               each: 4-byte big-endian length + msgpack array

`BOOT_MARK + b"E"` + one line instead of `F` reports a fatal start-up error (python too old,
payload corrupted). A frame's body is `[type_code, field, field, ...]` in the field order of its
message class below. This file must stay Python 3.8 compatible and import only the stdlib and
msgpack: it runs on the end machines.

Each message class says who sends it (`SENDER`: MASTER, DISPATCHER or EITHER). What may come
when (the boot, Hello and Setup first, nothing after Bye) is the session's: both ends speak
through a `Connection` (dispatcher/connection.py), which also refuses a message from the wrong
end.

Decoding checks every field's type, and the fields of what a dispatcher sends are bounded as
well (`bounded(...)` below: an exit status within 0-255, a finite duration >= 0, a hostname of
at most 255 characters, ...): the master trusts no end machine (invariant 8), so a value out of
its bounds is a RemoteProtocolError before anything believes it. What only the master knows
(the slots it gave a host, the attempts it sent there) it checks itself, in anet/engine.py.
"""

from __future__ import annotations

import enum
import math
import operator
import struct
import sys

import msgpack

from .record import Field, field, fields, frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import (
        Any,
        Callable,
        ClassVar,
        Dict,
        List,
        Optional,
        Sequence,
        Set,
        Tuple,
        Type,
        Union,
    )

PROTOCOL_VERSION = 5
BOOT_MARK = b"\x00\x1bANET\x1b"
BOOT_NEED_PAYLOAD = b"N"
BOOT_FRAMES = b"F"
BOOT_ERROR = b"E"
STUB_MARK = "import zlib;exec(zlib.decompress(bytes.fromhex("
"""How every dispatcher's command line starts after `python3 -S -c`: anet/remote/bootstrap.py's
stub, hex of zlib of its code (hex: no shell quotes or escapes it, and decoding it imports
nothing; base64 imported `re`, a fifth of a boot)."""

MAX_FRAME = 1 << 20
"""Largest frame body either side accepts; a bigger length prefix means a corrupt stream."""

OUTPUT_CHUNK = 256 * 1024
"""Job output travels in chunks of at most this size, so one frame never holds a whole output."""

FOLD_OUTPUT = 64 * 1024
"""Output bytes a dispatcher holds back for a job whose Started it holds (Setup.fold): past
them it sends what it held and streams the rest, so a fold never holds much memory."""
MAX_FOLD = 1.0
"""Longest Setup.fold a dispatcher accepts: holding a Started longer would blur what the
master knows of a job's start (timeouts, speculation) for nothing more in return."""

INPUT_CHUNK = 256 * 1024
"""A job's stdin travels in Input frames of at most this many bytes."""
INPUT_WINDOW = 2 << 20
"""Bytes of one attempt's stdin the master sends ahead of the dispatcher's InputAcks: what a
dispatcher holds for a job that does not read its stdin yet, and no more."""

STDOUT = 1
STDERR = 2

MAX_CORES = 1 << 16
"""More CPUs than any machine has: a Hello claiming more is a lie, not a big machine."""
MAX_PID = (1 << 31) - 1
"""pid_t is a 32-bit signed int everywhere anet runs."""
MAX_NAME = 255
"""Characters of a name a host reports: its hostname, a user, a python version."""
MAX_PATH = 4096
"""Characters (or bytes) of a path a host reports, as Linux's PATH_MAX."""
MAX_TEXT = 4096
"""Characters of an error line a host reports."""

_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """Root of protocol errors."""


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol does not allow: a bug on this side."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid frame or message, or a message it may not
    send, or not now: the peer is broken or hostile."""


class StartupError(RemoteProtocolError):
    """The peer's start-up went wrong before any frame of it was believed: too much login
    noise, an unknown boot reply, a first frame that is not the greeting, another protocol
    version. Its text is the whole reason; the master retries these, unlike the others."""


class Role(enum.Enum):
    """Which end a Connection is, and who sends a message (its class's `SENDER`)."""

    MASTER = "master"
    DISPATCHER = "dispatcher"
    EITHER = "either"
    """As a message's SENDER only: both ends send it (Heartbeat)."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python, per frame


MASTER = Role.MASTER
DISPATCHER = Role.DISPATCHER
EITHER = Role.EITHER


def _is_int(value: Any) -> bool:
    # `type() is`, not isinstance: msgpack yields exact ints, and this refuses bool (an int
    # subclass) in one step; every field of every frame is checked, so the step counts
    return type(value) is int


def _is_env(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


_CHECKS: Dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": lambda v: type(v) is float or type(v) is int,
    "str": lambda v: type(v) is str,
    "bytes": lambda v: type(v) is bytes,
    "Optional[int]": lambda v: v is None or type(v) is int,
    "Dict[str, str]": _is_env,
    "bool": lambda v: v is True or v is False,
    "list": lambda v: type(v) is list,
}
"""Field checks by annotation text, so the message classes above stay the only definition."""


def bounded(
    low: float = -math.inf,
    high: float = math.inf,
    length: Optional[int] = None,
    check: Optional[Callable[[Any], bool]] = None,
) -> Any:
    """A message field the receiver checks beyond its type: a number within [`low`, `high`]
    (a float also finite), a str, bytes or list of at most `length` items, or any `check`.
    None (of an Optional field) passes; the type check already allowed it or not."""
    return field(metadata={"bound": (low, high, length, check)})


def number(value: Any, low: float, high: float = math.inf) -> bool:
    """`value` is an int or a finite float within [low, high] (for checks of list items)."""
    if isinstance(value, float):
        return math.isfinite(value) and low <= value <= high
    return integer(value, low, high)


def integer(value: Any, low: float, high: float = math.inf) -> bool:
    """`value` is an int (not a bool) within [low, high] (for checks of list items)."""
    return _is_int(value) and low <= value <= high


def _field_check(f: Field) -> Callable[[Any], bool]:
    """The field's type check and bounds as one function: it runs for every field of every
    frame, so each case is its own small lambda."""
    typed = _CHECKS[str(f.type)]
    if "bound" not in f.metadata:
        return typed
    low, high, length, check = f.metadata["bound"]
    if length is not None:
        return lambda v: typed(v) and len(v) <= length
    if check is not None:
        return lambda v: typed(v) and check(v)
    top = min(high, sys.float_info.max)  # comparisons refuse NaN; this refuses infinity
    if typed is _is_int:  # the commonest bounded field (ids, codes, slots): no inner call
        return lambda v: type(v) is int and low <= v <= top
    if str(f.type).startswith("Optional"):
        return lambda v: v is None or (typed(v) and low <= v <= top)
    return lambda v: typed(v) and low <= v <= top


def _columns_pass(code: int, items: List[Any]) -> Optional[List[Tuple[Any, ...]]]:
    """The columns of a Several frame's items (one tuple a field) when every item is a
    well-formed `code` message's fields, checked a field at a time over all the items (a set
    of types, a min and a max: loops in C) rather than a Python call per field per item. Not
    None only when each item would pass `checked`'s field checks; on None (or any surprise)
    the caller checks item by item, which says exactly what is wrong."""
    if set(map(type, items)) != {list} or set(map(len, items)) != {_ARITY[code]}:
        return None
    columns = list(zip(*items))
    try:
        passed = all(map(_column_ok, _COLUMN_CHECKS[code], columns))
    except (TypeError, ValueError, OverflowError):  # e.g. an int too big for a float sum
        return None
    return columns if passed else None


COLUMNS_FROM = 6
"""Items from which a Several frame is checked a column at a time: the column checks cost a
fixed few calls per field, so fewer items are cheaper checked one by one (Python 3.11,
instructions per Done decoded, measured with callgrind: 1 item 53k one by one against 103k by
columns, 4: 41k against 45k, 8: 39k against 35k, 32: 38k against 28k)."""


def _made_at_once(cls: Type[Any], items: List[Any]) -> Optional[List[Any]]:
    """The messages of a Several frame's items when there are many and every one is well
    formed (fields checked a column at a time, then each whole); None when there are few, or
    one is not well formed (or might not be): then they are checked one by one."""
    if len(items) < COLUMNS_FROM:
        return None
    columns = _columns_pass(cls.CODE, items)
    if columns is None:
        return None
    made = [cls(*item) for item in items]
    whole = cls.CODE not in _WHOLE_CHECKED or cls.columns_well(columns)
    if not whole and any(msg.problem() is not None for msg in made):
        return None
    return made


def _column_ok(spec: "_ColumnSpec", column: Sequence[Any]) -> bool:
    """One field's values across the items pass its check (see `_column_spec`)."""
    types, optional, low, top, length, one = spec
    if one is not None:  # a field with no column form: its own check, value by value
        return all(map(one, column))
    if optional:
        column = [value for value in column if value is not None]
        if not column:
            return True
    if not set(map(type, column)) <= types:
        return False
    if length is not None:
        return max(map(len, column)) <= length
    if float in types and not math.isfinite(sum(column)):  # a NaN or an infinity among them
        return False
    return low is None or (low <= min(column) and max(column) <= top)


if TYPE_CHECKING:
    _ColumnSpec = Tuple[
        Set[type], bool, Optional[float], float, Optional[int], Optional[Callable[[Any], bool]]
    ]

_COLUMN_TYPES: Dict[str, Set[type]] = {
    "int": {int},
    "Optional[int]": {int},
    "float": {float, int},
    "str": {str},
    "bytes": {bytes},
    "bool": {bool},
}
"""Field types whose check is "one of these exact types" (bool is no int here: `type()`)."""


def _column_spec(f: Field) -> _ColumnSpec:
    """How `_column_ok` checks the field: its exact types, bounds and length as `_field_check`
    has them, or (`one`) the field's own per-value check for the rest (dicts, custom checks)."""
    text = str(f.type)
    low, high, length, check = f.metadata.get("bound", (None, math.inf, None, None))
    if check is not None or text not in _COLUMN_TYPES:
        return set(), False, None, math.inf, None, _field_check(f)
    if length is not None:
        low = None
    top = min(high, sys.float_info.max)  # as `_field_check`: a bound never lets infinity in
    return _COLUMN_TYPES[text], text.startswith("Optional"), low, top, length, None


_BY_CODE: Dict[int, Type[Any]] = {}
_FIELDS: Dict[int, Tuple[str, ...]] = {}
_ARITY: Dict[int, int] = {}
_FIELD_CHECKS: Dict[int, Tuple[Tuple[str, Callable[[Any], bool]], ...]] = {}
_COLUMN_CHECKS: Dict[int, Tuple[_ColumnSpec, ...]] = {}
_WHOLE_CHECKED: Set[int] = set()
"""Codes of the messages with a `problem()` of their own (the others need no call)."""


# Message types. Field order is the wire order. Each class registers itself with @message, so a
# new message is one class, wherever it lives (sync and housekeeping messages have their own
# modules); both sides ship from the same payload, so PROTOCOL_VERSION only guards mixed installs.

_CLASSES: List[Type[Any]] = []


class Message:
    """Base of every wire message: `CODE` is its type code, `SENDER` the end that sends it
    (MASTER, DISPATCHER or EITHER; the other end refuses it), its record fields
    (dispatcher/record.py) the body."""

    CODE = 0
    SENDER: ClassVar[Role]

    def problem(self) -> Optional[str]:
        """What makes the message invalid as a whole, though each field is (None: nothing)."""
        return None

    @staticmethod
    def columns_well(columns: List[Tuple[Any, ...]]) -> bool:
        """True when no message of these columns (each field's values, of well-formed
        fields) has a `problem()`, found without a call per message; False when one may
        have: then each is asked."""
        return False


def message(cls: Type[Any]) -> Type[Any]:
    """Register a frozen record as a wire message under its unique `CODE`."""
    if any(other.CODE == cls.CODE for other in _CLASSES):
        raise LocalProtocolError("message code %d used twice" % cls.CODE)
    if not isinstance(getattr(cls, "SENDER", None), Role):
        raise LocalProtocolError(
            "message %s says not who sends it: SENDER = MASTER, DISPATCHER or EITHER" % cls.__name__
        )
    _CLASSES.append(cls)
    names = tuple(f.name for f in fields(cls))
    _BY_CODE[cls.CODE] = cls
    _FIELDS[cls.CODE] = names
    _ARITY[cls.CODE] = len(names)
    _FIELD_CHECKS[cls.CODE] = tuple((f.name, _field_check(f)) for f in fields(cls))
    _COLUMN_CHECKS[cls.CODE] = tuple(_column_spec(f) for f in fields(cls))
    if cls.problem is not Message.problem:
        _WHOLE_CHECKED.add(cls.CODE)
    return cls


_LOADERS: List[Callable[[], None]] = []
"""Imports of message modules put off until a frame needs one (`load_on_demand`)."""


def load_on_demand(loader: Callable[[], None]) -> None:
    """Call `loader` (once) when a frame of a code no imported module registered comes.

    The dispatcher starts with the messages of a run only: its deps sync, per-job files and
    process listing modules (a third of its start-up CPU) load with the first frame of theirs."""
    _LOADERS.append(loader)


def _class_of(code: int) -> Optional[Type[Any]]:
    while code not in _BY_CODE and _LOADERS:
        _LOADERS.pop(0)()
    return _BY_CODE.get(code)


@message
@frozen
class Hello(Message):
    """Dispatcher -> master, first frame: who I am, so the master can size and label the host."""

    CODE = 1
    SENDER = DISPATCHER
    version: int = bounded(0, 65535)
    hostname: str = bounded(length=MAX_NAME)
    cores: int = bounded(1, MAX_CORES)
    python: str = bounded(length=MAX_NAME)
    load: float = bounded(0)
    pid: int = bounded(1, MAX_PID)
    workdir: str = bounded(length=MAX_PATH)


@message
@frozen
class Setup(Message):
    """Master -> dispatcher, answer to Hello: how to run this host's jobs.

    `dead_after` > 0 makes the dispatcher kill its jobs and exit when it has heard nothing from
    the master for that many seconds (a frozen master or a silent network partition).
    The fields after it are polite mode's (dispatcher/polite.py): `nice` > 0 runs the jobs at
    that niceness at least; `max_load` >= 0 starts no job while more threads of other
    processes are runnable; `memfree_kb` > 0 none while less memory is available, and with
    `memfree_kill` the youngest job is killed under half of it; `yield_idle` > 0 suspends the
    jobs while a person works at the machine, and kills those suspended over `yield_move` s.
    `fold` > 0 (protocol 4) lets the dispatcher hold a job's Started and output that long:
    a job that ends within it is reported by one Done instead of Started, Output..., Exit.
    """

    CODE = 2
    SENDER = MASTER
    slots: int
    host_label: str
    cwd: str
    heartbeat: float
    dead_after: float
    nice: int = 0
    max_load: float = -1.0
    memfree_kb: int = 0
    memfree_kill: bool = False
    yield_idle: float = 0.0
    yield_move: float = 0.0
    fold: float = 0.0


@message
@frozen
class Run(Message):
    """Master -> dispatcher: run `command` with `sh -c` once a slot is free.

    `aid` (attempt id) is unique within the master's run: every later frame about this attempt
    carries it, so output from a killed or superseded copy can be told apart and dropped.
    With `stdin`, the job's stdin is a pipe fed by the Input frames of this attempt (up to one
    with `eof`); without, it is /dev/null.
    """

    CODE = 3
    SENDER = MASTER
    aid: int
    job: int
    command: bytes
    env: Dict[str, str] = field(default_factory=dict)
    stdin: bool = False


MAX_RUNS = 4096
"""Runs in one Runs frame at most."""


class Several(Message):
    """Base of a frame of several messages of one kind (`ITEM`), its `items` each one's fields
    in wire order: decoding checks every item as a frame of that kind is checked."""

    ITEM: ClassVar[Type[Any]]
    items: List[Any]  # the subclass's record field (this base is no record)

    def problem(self) -> Optional[str]:
        made = _made_at_once(self.ITEM, self.items)  # the common case: all well formed
        if made is not None:
            object.__setattr__(self, "_made", made)
            return None
        made = []  # else item by item, to say which is wrong and how
        for index, item in enumerate(self.items):
            if type(item) is not list:
                return "item %d is not a %s's fields" % (index, self.ITEM.__name__)
            try:
                made.append(checked(self.ITEM.CODE, item))
            except RemoteProtocolError as exc:
                return "item %d: %s" % (index, exc)
        object.__setattr__(self, "_made", made)  # checked once: `each()` keeps them
        return None

    def each(self) -> List[Any]:
        """The items as messages (checked when decoded; built here when made locally)."""
        made = self.__dict__.get("_made")
        return made if made is not None else [self.ITEM(*item) for item in self.items]


@message
@frozen
class Runs(Several):
    """Master -> dispatcher: several Runs in one frame (protocol 4), each item a Run's fields
    in its wire order (all five); the dispatcher takes them in order, as that many Run frames.
    One frame and one encoding for a scheduling round's Runs to a host, not one a job."""

    CODE = 62
    SENDER = MASTER
    ITEM = Run
    items: list = bounded(length=MAX_RUNS)

    def runs(self) -> List[Run]:
        return self.each()


def batched(messages: Sequence[Message]) -> List[Message]:
    """`messages` with each stretch of consecutive Runs folded into Runs frames (protocol 4),
    every frame well under MAX_FRAME (a Run alone stays a Run); the order is kept."""
    out: List[Message] = []
    stretch: List[List[Any]] = []
    size = 0
    for msg in messages:
        if type(msg) is Run:
            weight = len(msg.command) + 64
            if msg.env:  # most jobs have none: no generator to start then
                weight += sum(len(k) + len(v) for k, v in msg.env.items())
            if stretch and (size + weight > MAX_FRAME // 2 or len(stretch) == MAX_RUNS):
                out.append(_runs_frame(stretch))
                stretch, size = [], 0
            stretch.append([msg.aid, msg.job, msg.command, msg.env, msg.stdin])
            size += weight
            continue
        if stretch:
            out.append(_runs_frame(stretch))
            stretch, size = [], 0
        out.append(msg)
    if stretch:
        out.append(_runs_frame(stretch))
    return out


def _runs_frame(items: List[List[Any]]) -> Message:
    return Run(*items[0]) if len(items) == 1 else Runs(items)


@message
@frozen
class Started(Message):
    """Dispatcher -> master: the attempt got a slot and a process (queued runs wait for one)."""

    CODE = 4
    SENDER = DISPATCHER
    aid: int
    pid: int = bounded(1, MAX_PID)
    slot: int = bounded(1, MAX_CORES)


@message
@frozen
class Output(Message):
    """Dispatcher -> master: one chunk (<= OUTPUT_CHUNK bytes) of a job's stdout or stderr."""

    CODE = 5
    SENDER = DISPATCHER
    aid: int
    stream: int = bounded(STDOUT, STDERR)
    data: bytes = bounded(length=OUTPUT_CHUNK)


@message
@frozen
class Exit(Message):
    """Dispatcher -> master: the attempt ended; all its Output frames came before this one.

    Exactly one of `code` and `signal` is set. `duration` is wall seconds from start to exit,
    measured on the end machine; `cpu` is user + system seconds of the whole job.
    """

    CODE = 6
    SENDER = DISPATCHER
    aid: int
    code: Optional[int] = bounded(0, 255)
    signal: Optional[int] = bounded(1, 127)
    duration: float = bounded(0)
    cpu: float = bounded(0)
    maxrss_kb: int = bounded(0)

    def problem(self) -> Optional[str]:
        if (self.code is None) == (self.signal is None):
            return "needs exactly one of code and signal"
        return None


@message
@frozen
class Done(Message):
    """Dispatcher -> master: a whole short attempt in one frame, what Started, its Output
    frames and Exit would say (protocol 4; only after a Setup with `fold` > 0).

    The dispatcher sends it for an attempt that ended within `Setup.fold` seconds of its start
    with at most FOLD_OUTPUT bytes of output, of which it sent nothing: no other frame about
    the attempt comes before or after it. The fields are Started's, then Exit's, then the
    whole stdout and stderr.
    """

    CODE = 60
    SENDER = DISPATCHER
    aid: int
    pid: int = bounded(1, MAX_PID)
    slot: int = bounded(1, MAX_CORES)
    code: Optional[int] = bounded(0, 255)
    signal: Optional[int] = bounded(1, 127)
    duration: float = bounded(0)
    cpu: float = bounded(0)
    maxrss_kb: int = bounded(0)
    stdout: bytes = bounded(length=FOLD_OUTPUT)
    stderr: bytes = bounded(length=FOLD_OUTPUT)

    def problem(self) -> Optional[str]:
        if (self.code is None) == (self.signal is None):
            return "needs exactly one of code and signal"
        if len(self.stdout) + len(self.stderr) > FOLD_OUTPUT:
            return "holds over %d bytes of output" % FOLD_OUTPUT
        return None

    @staticmethod
    def columns_well(columns: List[Tuple[Any, ...]]) -> bool:
        """`problem()` of every Done at once: as many Nones among codes and signals as there
        are records, and no record whose code is its signal (both None, or one int twice),
        is exactly one None each; and no record's outputs together past FOLD_OUTPUT."""
        codes, signals, outs, errs = columns[3], columns[4], columns[8], columns[9]
        if codes.count(None) + signals.count(None) != len(codes):
            return False
        if any(map(operator.is_, codes, signals)):
            return False
        return max(map(operator.add, map(len, outs), map(len, errs))) <= FOLD_OUTPUT


MAX_DONES = 4096
"""Done records in one Dones frame at most (a frame holds at most MAX_FRAME bytes anyway)."""


@message
@frozen
class Dones(Several):
    """Dispatcher -> master: the Done records of several attempts in one frame (protocol 4),
    each item a Done's fields in its wire order: every attempt the dispatcher found folded
    and ended in one turn of its loop. Decoding checks each item as a Done frame; `dones()`
    gives them as Done messages, in order."""

    CODE = 61
    SENDER = DISPATCHER
    ITEM = Done
    items: list = bounded(length=MAX_DONES)

    def dones(self) -> List[Done]:
        return self.each()


@message
@frozen
class Kill(Message):
    """Master -> dispatcher: stop a queued or running attempt: TERM its group, KILL after grace.
    With `queued_only` (protocol 4), only if it still waits in the queue: one the dispatcher
    started runs on (the master may not have heard of its start yet: Setup.fold)."""

    CODE = 7
    SENDER = MASTER
    aid: int
    grace: float
    queued_only: bool = False


@message
@frozen
class Input(Message):
    """Master -> dispatcher: the next chunk of a Run-with-stdin's input; `eof` closes its stdin
    after `data`. The master keeps at most INPUT_WINDOW bytes of an attempt unacknowledged."""

    CODE = 50
    SENDER = MASTER
    aid: int
    data: bytes = bounded(length=INPUT_CHUNK)
    eof: bool = False


@message
@frozen
class InputAck(Message):
    """Dispatcher -> master: `size` more bytes of the attempt's input left its buffer (written
    to the job's stdin, or thrown away once the job closed it: then `closed`, and the master
    sends no more). The credit that lets the master send the next chunks."""

    CODE = 51
    SENDER = DISPATCHER
    aid: int
    size: int = bounded(0, INPUT_WINDOW)
    closed: bool = False


@message
@frozen
class Heartbeat(Message):
    """Either way, every `Setup.heartbeat` seconds: proof of life; `load` is the 1-minute load."""

    CODE = 8
    SENDER = EITHER
    load: float = bounded(0)


@message
@frozen
class Shutdown(Message):
    """Master -> dispatcher: kill every job, answer Bye, exit."""

    CODE = 9
    SENDER = MASTER


@message
@frozen
class Bye(Message):
    """Dispatcher -> master: every job group is dead; the dispatcher exits after this frame."""

    CODE = 10
    SENDER = DISPATCHER


_packer = msgpack.Packer(use_bin_type=True)


def encode(msg: Message) -> bytes:
    """One frame: length prefix + msgpack `[code, *fields]`."""
    code = getattr(type(msg), "CODE", None)
    if _BY_CODE.get(code) is not type(msg):
        raise LocalProtocolError("not a protocol message: %r" % (msg,))
    try:
        body = _packer.pack([code] + [getattr(msg, name) for name in _FIELDS[code]])
    except (TypeError, ValueError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        raise LocalProtocolError("cannot encode %s: %s" % (type(msg).__name__, exc)) from None
    if len(body) > MAX_FRAME:
        raise LocalProtocolError("frame of %d bytes exceeds MAX_FRAME" % len(body))
    return _HEADER.pack(len(body)) + body


SPLIT_AT = 1 << 14
"""Bytes of a last field from which `encode_parts` leaves it out of the frame's head."""


def encode_parts(msg: Message) -> Tuple[bytes, ...]:
    """The frame of `msg` in parts whose concatenation is `encode(msg)`, byte for byte.

    A message whose last field is bytes of SPLIT_AT or more (a job's output chunk) is
    (head, that field): the head is the length prefix, the array and every other field, and
    the bin header; the field itself is never copied. Encoding it whole would copy each
    output byte three times (into msgpack's buffer, out of it, behind the length prefix),
    as much of a dispatcher's CPU as the job's output costs it to read. Anything else is one
    part, `encode(msg)`."""
    code = getattr(type(msg), "CODE", None)
    names = _FIELDS.get(code, ()) if _BY_CODE.get(code) is type(msg) else ()
    data = getattr(msg, names[-1]) if names else None
    if type(data) is not bytes or len(data) < SPLIT_AT:
        return (encode(msg),)
    try:
        pack = _packer.pack
        head = _packer.pack_array_header(len(names) + 1) + pack(code)
        head += b"".join([pack(getattr(msg, name)) for name in names[:-1]])
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError("cannot encode %s: %s" % (type(msg).__name__, exc)) from None
    head += bin_header(len(data))
    size = len(head) + len(data)
    if size > MAX_FRAME:
        raise LocalProtocolError("frame of %d bytes exceeds MAX_FRAME" % size)
    return _HEADER.pack(size) + head, data


def bin_header(size: int) -> bytes:
    """msgpack's bin 8/16/32 header for `size` bytes, as Packer writes it before them (for
    whoever writes the bytes themselves after it: here, and the result streams' writers)."""
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def decode_body(
    body: Union[bytes, bytearray, memoryview], sender: Optional[Role] = None
) -> Message:
    """Turn one frame body into its message, or say exactly why it is not one; a message
    that `sender` (when given) may not send is refused before its fields are looked at."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RemoteProtocolError(
            "undecodable frame body (%s)" % (exc or type(exc).__name__)
        ) from None
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        raise RemoteProtocolError("frame body is not [code, ...]")
    code, args = items[0], items[1:]
    cls = _class_of(code)
    if cls is None:
        raise RemoteProtocolError("unknown message code %d" % code)
    if sender is not None and cls.SENDER is not sender and cls.SENDER is not EITHER:
        raise RemoteProtocolError(_not_theirs(sender, cls))
    return checked(code, args)


def checked(code: int, args: List[Any]) -> Message:
    """The message of a known `code` from its fields, each checked (and then the whole);
    RemoteProtocolError says which is wrong."""
    cls = _BY_CODE[code]
    if len(args) != _ARITY[code]:
        raise RemoteProtocolError(
            "%s takes %d fields, got %d" % (cls.__name__, _ARITY[code], len(args))
        )
    for (name, check), value in zip(_FIELD_CHECKS[code], args):
        if not check(value):
            raise RemoteProtocolError(
                "%s.%s has a bad value: %s" % (cls.__name__, name, _short(value))
            )
    msg = cls(*args)
    if code in _WHOLE_CHECKED:
        problem = msg.problem()
        if problem is not None:
            raise RemoteProtocolError("%s %s" % (cls.__name__, problem))
    return msg


def _not_theirs(sender: Role, cls: Type[Any]) -> str:
    return "the %s sent %s, which only the %s sends" % (
        sender.value,
        cls.__name__,
        cls.SENDER.value,
    )


def _short(value: Any) -> str:
    """A bad value for a one-line error: its repr (escapes included), cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else "%s... (%d characters)" % (text[:50], len(text))


def frame_end(buf: bytearray, pos: int, max_frame: int) -> int:
    """Where the frame at `pos` ends, once all of it is in `buf`; 0 while it is incomplete."""
    if len(buf) - pos < 4:
        return 0
    (length,) = _HEADER.unpack_from(buf, pos)
    if length > max_frame:
        raise RemoteProtocolError(
            "frame length %d exceeds the maximum %d: corrupt stream" % (length, max_frame)
        )
    end = pos + 4 + length
    return end if end <= len(buf) else 0


class FrameDecoder:
    """Accumulates bytes and yields complete messages; a partial frame waits for more bytes.

    Frames only, from whoever: the ends of a session use a `Connection`, which also knows who
    may say what, and when."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> List[Message]:
        """Add received bytes; return every message they complete, in order."""
        buf = self._buf
        buf += data
        out: List[Message] = []
        pos = 0
        while True:
            end = frame_end(buf, pos, self._max_frame)
            if not end:
                break
            out.append(decode_body(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back; non-zero at EOF means a frame was cut."""
        return len(self._buf)


def find_boot_mark(data: Union[bytes, bytearray]) -> Optional[Tuple[bytes, int]]:
    """Locate the boot mark in start-up output: (kind byte, offset after it), or None yet."""
    at = data.find(BOOT_MARK)
    if at < 0 or len(data) < at + len(BOOT_MARK) + 1:
        return None
    kind_at = at + len(BOOT_MARK)
    return bytes(data[kind_at : kind_at + 1]), kind_at + 1
