"""A hostile host for tests: a fake dispatcher, reached through a real sshd, that forges, lies and
misbehaves exactly as the test asks.

Use it through the ``make_hostile`` fixture (tests/conftest.py)::

    own, bad = make_hostile(2)          # host1 honest, host2 hostile (honest until told)
    bad.behave(forge=True)              # read afresh by every dispatcher host2 starts
    ... run anet against own.names ...
    assert any(e.startswith("forged") for e in bad.events())

How it is wired. The hostile host is an ``SshdCluster`` host made with ``shims``: its sessions
find ``host.shims`` first on their PATH, and :class:`Hostile` puts a ``python3`` there. When
anet starts its dispatcher (``python3 -S -c STUB``, see anet/remote/bootstrap.py) the shim runs the
*test's* interpreter with the same argv (so the process still looks like a dispatcher to
``anet find``) and a ``sitecustomize`` that, before the stub runs, turns the process into
:class:`HostileDispatcher`. Any other ``python3`` on that host (a job's) is the host's own.

:class:`HostileDispatcher` is the real dispatcher (dispatcher/__main__.py) with hooks, so
whatever the test does not ask for stays exactly the real, honest behaviour: jobs really run,
``find``/``killall``/``onall``/``hosts check`` get real answers. Frames are packed here, not
with ``protocol.encode``, so a field can hold anything msgpack can carry.

The knobs (:class:`Behaviour`; every default is honest):

- ``hello``: Hello fields to replace: ``{"cores": 10**7}``, ``{"hostname": "\\x1b]0;x\\x07"}``,
  ``{"pid": -1, "python": "9" * 10**5}``.
- ``boot_stderr``: write these bytes on stderr and exit 1 before the boot mark, as a python3
  that dies at start does.
- ``boot_error``: answer the stub with ``BOOT_MARK + b"E" + boot_error + b"\\n"`` and exit,
  as a stub on a broken host does (escape codes welcome).
- ``after_hello``: raw frame bodies (``[code, *fields]``) sent right after Hello.
- ``forge``: after each Run it gets, forge ``Output(forge_output)`` + ``Exit(code 0)`` for
  every attempt id up to ``forge_window`` below it that it was not given: the sequential ids
  the other hosts got. Its own jobs still run honestly.
- ``started`` / ``output`` / ``exit``: fields to replace in every Started / Output / Exit
  frame about its own jobs (and onall's OnceOutput / OnceExit): ``{"slot": 99}``,
  ``{"stream": 7}``, ``{"code": 2**40}``, ``{"duration": float("nan")}``.
- ``started_twice``, ``exit_twice``, ``output_after_exit``: repeat the Started; repeat the
  Exit; send one more Output after the Exit.
- ``replies``: request class name (``"FindProcs"``, ``"SignalProcs"``, ``"ProbeHost"``,
  ``"SyncOffer"``, ...) -> what to answer instead of the real reply: a list ``[code, *fields]``
  sent as the frame ``[code, rid, *fields]``, or ``bytes`` written raw onto the stream.

What it did is in :meth:`Hostile.events` ("hello {...}", "forged 17", "lied Exit {...}",
"replied FindProcs"), so a test can check that the misbehaviour really happened and cannot pass
vacuously.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from dispatcher import record
from dispatcher.__main__ import Dispatcher, _take_protocol_fds
from dispatcher.once import OnceExit, OnceOutput
from dispatcher.protocol import (
    BOOT_ERROR,
    BOOT_MARK,
    STDOUT,
    STUB_MARK,
    Exit,
    Hello,
    Message,
    Output,
    Run,
    Setup,
    Started,
)

if TYPE_CHECKING:
    from sshd_hosts import SshdHost

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BEHAVIOUR_ENV = "ANET_HOSTILE"
"""Names the behaviour file in the fake dispatcher's environment (the shim sets it)."""


@dataclass
class Behaviour:
    """What the hostile host does; see the module docstring for each knob."""

    hello: dict[str, Any] = field(default_factory=dict)
    boot_stderr: bytes | None = None
    boot_error: bytes | None = None
    after_hello: list[list[Any]] = field(default_factory=list)
    forge: bool = False
    forge_output: bytes = b"FORGED\n"
    forge_window: int = 8
    started: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    exit: dict[str, Any] = field(default_factory=dict)
    started_twice: bool = False
    exit_twice: bool = False
    output_after_exit: bool = False
    replies: dict[str, list[Any] | bytes] = field(default_factory=dict)


# -- the test's side ----------------------------------------------------------------------------


class Hostile:
    """One host of an SshdCluster made with ``shims``, turned hostile (honest until told)."""

    def __init__(self, host: SshdHost) -> None:
        if not host.shims.is_dir():
            raise ValueError(f"{host.name} has no shims directory: make it with shims={{n}}")
        self.host = host
        self.behaviour_file = host.dir / "hostile.msgpack"
        self.events_file = host.dir / "hostile.events"
        site = host.shims / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import os, sys\n"
            f"if os.environ.get({BEHAVIOUR_ENV!r}):\n"
            f"    sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]\n"
            "    import hostile_dispatcher\n"
            "    hostile_dispatcher.main()\n"
        )
        from sshd_hosts import STOCK_PATH  # here: the fake dispatcher never needs it

        shim = host.shims / "python3"
        shim.write_text(
            "#!/bin/sh\n"
            "# python3 on a hostile test host (tests/hostile_dispatcher.py): anet's stub becomes\n"
            "# the fake dispatcher; any other python3 call is the host's own python3.\n"
            "# The stub comes as `python3 -S -c STUB`: -S is dropped, or no sitecustomize runs.\n"
            'case "$1 $2 $3" in\n'
            f"{shlex.quote('-S -c ' + STUB_MARK)}*)\n"
            "    shift\n"
            f"    {BEHAVIOUR_ENV}={shlex.quote(str(self.behaviour_file))}\n"
            f"    PYTHONPATH={shlex.quote(str(site))}\n"
            f"    export {BEHAVIOUR_ENV} PYTHONPATH\n"
            f'    exec {shlex.quote(sys.executable)} "$@" ;;\n'
            "esac\n"
            f'PATH={STOCK_PATH} exec python3 "$@"\n'
        )
        shim.chmod(0o755)
        self.behave()

    @property
    def name(self) -> str:
        return self.host.name

    def behave(self, behaviour: Behaviour | None = None, **knobs: Any) -> None:
        """Set what the next dispatcher started on this host does (a Behaviour, or its knobs)."""
        chosen = dataclasses.replace(behaviour or Behaviour(), **knobs)
        data = msgpack.packb(dataclasses.asdict(chosen), use_bin_type=True)
        tmp = self.behaviour_file.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.behaviour_file)

    def events(self) -> list[str]:
        """What the fake dispatchers on this host did, one line per event, oldest first."""
        try:
            return self.events_file.read_text().splitlines()
        except FileNotFoundError:
            return []


# -- the host's side: the fake dispatcher -------------------------------------------------------

_HEADER = struct.Struct(">I")


class HostileDispatcher(Dispatcher):
    """The real dispatcher, with every frame it sends and every request it gets hooked."""

    def __init__(
        self, proto_in: int, proto_out: int, home: str, b: Behaviour, events: Path
    ) -> None:
        self.b = b
        self.given: set[int] = set()
        self._events = events
        super().__init__(proto_in, proto_out, home)

    def note(self, event: str) -> None:
        with self._events.open("a") as f:
            f.write(event + "\n")

    def serve(self) -> None:
        if self.b.boot_stderr is not None:
            self.note("boot stderr")
            os.write(2, self.b.boot_stderr)
            os._exit(1)
        if self.b.boot_error is not None:
            self.note("boot error")
            self.outbox.add(BOOT_MARK + BOOT_ERROR + self.b.boot_error + b"\n")
            self.flush_blocking()
            return
        super().serve()

    # -- frames out: every frame the real dispatcher sends passes here ----------------------

    def send(self, msg: Message) -> None:
        values = {f.name: getattr(msg, f.name) for f in record.fields(msg)}
        if isinstance(msg, Hello):
            values.update(self.b.hello)
            self.note(f"hello {values!r}")
            for each in ([msg.CODE, *values.values()], *self.b.after_hello):
                self.send_raw(each)
            return
        knobs = {
            Started: self.b.started,
            Output: self.b.output,
            Exit: self.b.exit,
            OnceOutput: self.b.output,  # onall's frames are lied about as the jobs' are
            OnceExit: self.b.exit,
        }
        if lies := knobs.get(type(msg)):
            values.update(lies)
            kind = {OnceOutput: "Output", OnceExit: "Exit"}.get(type(msg), type(msg).__name__)
            self.note(f"lied {kind} {values!r}"[:200])
        body = [msg.CODE, *values.values()]
        self.send_raw(body)
        if isinstance(msg, Started) and self.b.started_twice:
            self.note(f"started twice {msg.aid}")
            self.send_raw(body)
        if isinstance(msg, Exit) and self.b.exit_twice:
            self.note(f"exit twice {msg.aid}")
            self.send_raw(body)
        if isinstance(msg, Exit) and self.b.output_after_exit:
            self.note(f"output after exit {msg.aid}")
            self.send_raw([Output.CODE, msg.aid, STDOUT, b"late\n"])

    def send_parts(self, msg: Message) -> None:
        """A job's output, which the real dispatcher frames in parts: here, one frame as any
        other, so it can be lied about."""
        self.send(msg)

    def send_raw(self, body: list[Any] | bytes) -> None:
        """One frame of `body` (or raw bytes), unchecked; back-pressure as the real send."""
        if isinstance(body, list):
            data = msgpack.packb(body, use_bin_type=True)
            body = _HEADER.pack(len(data)) + data
        self.send_frame(body)

    # -- frames in ----------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        reply = self.b.replies.get(type(msg).__name__)
        if reply is not None:
            self.note(f"replied {type(msg).__name__}")
            rid = getattr(msg, "rid", None)
            self.send_raw(reply if isinstance(reply, bytes) else [reply[0], rid, *reply[1:]])
            return
        super().handle(msg)
        if isinstance(msg, Setup):
            self.fold = 0.0  # its lies are told in Started, Output and Exit: none folded away
        if isinstance(msg, Run):
            self.given.add(msg.aid)
            if self.b.forge:
                self.forge_near(msg.aid)

    def forge_near(self, aid: int) -> None:
        """Results for the attempt ids just below `aid` that this host was not given: other
        hosts got them, as the master sends each host its Runs in the order of their ids.
        (Ids above it may be on their way here: results for them would be lies about its
        own jobs, which no master can tell from the truth.)"""
        for other in range(max(0, aid - self.b.forge_window), aid):
            if other not in self.given:
                self.note(f"forged {other}")
                self.send_raw([Output.CODE, other, STDOUT, self.b.forge_output])
                self.send_raw([Exit.CODE, other, 0, None, 0.01, 0.0, 0])


def main() -> None:
    """Run as the dispatcher of a hostile host (the shim's sitecustomize calls it); exits."""
    path = Path(os.environ.pop(BEHAVIOUR_ENV))
    os.environ.pop("PYTHONPATH", None)  # the jobs it runs get the host's own environment
    behaviour = Behaviour(**msgpack.unpackb(path.read_bytes(), raw=False))
    home = os.environ.get("ANET_HOME") or os.path.expanduser("~/.cache/anet")
    proto_in, proto_out = _take_protocol_fds()
    HostileDispatcher(proto_in, proto_out, home, behaviour, path.with_suffix(".events")).serve()
    os._exit(0)  # never back into the stub: it would start the real dispatcher
