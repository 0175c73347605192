"""A request's work in a forked child, under a deadline, so that it can never stall the loop.

The dispatcher's one loop also runs the jobs: any request handled inline stops them from
being served while it works. Most requests are quick, but matching a regular expression is
not bounded: `(a+)+$` against a line of 50 `a`s and a space backtracks about 2^50 times, and
Python's `re` can be neither interrupted nor given a timeout (it holds the GIL, so a thread
would stall the loop too). Checking patterns for nested repeats would be incomplete
(`(a|aa)+$`, `(.*a){25}` and others backtrack as badly). So such work runs in a child:

- the child computes the reply and writes it as one frame into a pipe, which the loop reads
  like any job pipe; the loop never waits for it;
- a deadline per request: past it the child gets SIGKILL and the master an error reply (`fail`);
- `Cancel(rid)` from the master (it gave up, or its caller did) kills the child, no reply;
- RLIMIT_CPU in the child: even if the dispatcher itself is killed, the child stops by itself;
- a dispatcher that exits kills its children first (`stop_all`).

The child closes every inherited descriptor but its pipe (the protocol's, the jobs'), so a
child that outlives the dispatcher cannot hold the SSH channel open either.

Python 3.8+, stdlib + msgpack only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import time

from .protocol import MASTER, MAX_FRAME, FrameDecoder, Message, ProtocolError, encode, message
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Dict, Set

TIMED_OUT = "timed out"
"""What `fail` is given when the deadline passed; other reasons say what went wrong."""


@message
@frozen
class Cancel(Message):
    """Master -> dispatcher: the master gave up on request `rid`; stop its work, reply nothing."""

    CODE = 18
    SENDER = MASTER
    rid: int


class Child:
    """One request's child: its pid, the read end of its pipe, its deadline, its reply so far."""

    __slots__ = ("data", "deadline", "fail", "fd", "pid", "rid")

    def __init__(
        self, rid: int, pid: int, fd: int, deadline: float, fail: Callable[[str], Message]
    ) -> None:
        self.rid = rid
        self.pid = pid
        self.fd = fd
        self.deadline = deadline
        self.fail = fail
        self.data = bytearray()


class Forks:
    """The running children of one dispatcher, by request id; the loop calls the hooks."""

    def __init__(self, sel: selectors.BaseSelector, send: Callable[[Message], None]) -> None:
        self.sel = sel
        self.send = send
        self.children: Dict[int, Child] = {}
        self.unreaped: Set[int] = set()

    def register(self, handlers: Dict[type, Callable[[Any], None]]) -> None:
        """Add the Cancel handler to a Dispatcher's `handlers`."""
        handlers[Cancel] = lambda msg: self.cancel(msg.rid)

    def start(
        self,
        rid: int,
        work: Callable[[], Message],
        fail: Callable[[str], Message],
        bound: float,
    ) -> None:
        """Run `work` in a child; its reply is sent when it comes, `fail(why)` if none does
        within `bound` seconds."""
        self.cancel(rid)  # a reused id: the master no longer waits for the old one
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(r)
            os.close(w)
            self.send(fail("cannot fork: %s" % exc))
            return
        if pid == 0:
            _run_child(w, work, fail, bound)  # never returns
        os.close(w)
        os.set_blocking(r, False)
        child = Child(rid, pid, r, time.monotonic() + bound, fail)
        self.children[rid] = child
        self.sel.register(r, selectors.EVENT_READ, self._reader(child))

    def cancel(self, rid: int) -> None:
        child = self.children.get(rid)
        if child is not None:
            self._stop(child)

    def next_deadline(self) -> float:
        return min((c.deadline for c in self.children.values()), default=float("inf"))

    def expire(self, now: float) -> None:
        """Stop the children past their deadline and send their requests' error replies."""
        for child in list(self.children.values()):
            if now >= child.deadline:
                self._stop(child)
                self.send(child.fail(TIMED_OUT))

    def reap(self) -> None:
        """Collect the children that have exited (called on SIGCHLD)."""
        for pid in list(self.unreaped):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.unreaped.discard(pid)

    def stop_all(self) -> None:
        """Kill every child and wait for them: the dispatcher is about to exit."""
        for child in list(self.children.values()):
            self._stop(child)
        for pid in list(self.unreaped):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # SIGKILLed: at most a moment
        self.unreaped.clear()

    def _reader(self, child: Child) -> Callable[[int], None]:
        def on_readable(fd: int) -> None:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                self._finish(child)
            elif len(child.data) + len(data) > MAX_FRAME + 4:
                self._stop(child)
                self.send(child.fail("its answer is larger than a frame"))
            else:
                child.data += data

        return on_readable

    def _finish(self, child: Child) -> None:
        """EOF: the child wrote its one frame (or died); send the reply, or say why not."""
        self._close(child)
        self.unreaped.add(child.pid)
        self.reap()
        try:
            replies = FrameDecoder().feed(bytes(child.data))
        except ProtocolError:
            replies = []
        if len(replies) == 1 and getattr(replies[0], "rid", None) == child.rid:
            self.send(replies[0])
        else:
            self.send(child.fail("its worker died without an answer"))

    def _stop(self, child: Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        self._close(child)
        self.unreaped.add(child.pid)
        self.reap()

    def _close(self, child: Child) -> None:
        del self.children[child.rid]
        self.sel.unregister(child.fd)
        os.close(child.fd)


def _run_child(
    w: int, work: Callable[[], Message], fail: Callable[[str], Message], bound: float
) -> None:
    """In the child: compute the reply, write it as one frame, exit; never return."""
    try:
        signal.set_wakeup_fd(-1)  # the dispatcher's SIGCHLD pipe is not ours to write to
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _close_inherited(keep=w)
        cpu = int(bound) + 2  # past the deadline: a child outliving its dispatcher stops here
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump a core
        try:
            frame = encode(work())
        except Exception as exc:  # any failure is the request's error reply, not a traceback
            frame = encode(fail("%s: %s" % (type(exc).__name__, exc)))
        os.set_blocking(w, True)
        view = memoryview(frame)
        while view:
            view = view[os.write(w, view) :]
    finally:
        os._exit(0)


def _close_inherited(keep: int) -> None:
    """Close every descriptor above stderr but `keep`: the protocol's, the jobs' pipes."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)
