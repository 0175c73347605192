"""`anet --onall`: run one command once on a machine, as a request beside the jobs.

It runs like a job (its own process group, killed with the dispatcher) but takes no job slot,
and its frames carry the request's `rid`, not an attempt id: the master routes them to the
waiting request as it routes every reply, with no second routing for onall.

Python 3.8+, stdlib + msgpack only.
"""

from __future__ import annotations

from .protocol import (
    DISPATCHER,
    MASTER,
    OUTPUT_CHUNK,
    STDERR,
    STDOUT,
    Message,
    bounded,
    message,
)
from .record import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Optional


@message
@frozen
class RunOnce(Message):
    """Master -> dispatcher: run `command` with `sh -c` now, once, whatever the free slots."""

    CODE = 26
    SENDER = MASTER
    rid: int
    command: bytes


@message
@frozen
class OnceOutput(Message):
    """Dispatcher -> master: a chunk of the command's stdout or stderr."""

    CODE = 27
    SENDER = DISPATCHER
    rid: int
    stream: int = bounded(STDOUT, STDERR)
    data: bytes = bounded(length=OUTPUT_CHUNK)


@message
@frozen
class OnceExit(Message):
    """Dispatcher -> master: the command ended (exactly one of `code` and `signal`); the last
    frame of the request."""

    CODE = 28
    SENDER = DISPATCHER
    rid: int
    code: Optional[int] = bounded(0, 255)
    signal: Optional[int] = bounded(1, 127)

    def problem(self) -> Optional[str]:
        if (self.code is None) == (self.signal is None):
            return "needs exactly one of code and signal"
        return None
