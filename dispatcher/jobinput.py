"""One attempt's stdin on the dispatcher: the Input frames received, written to the job's pipe.

The master sends at most INPUT_WINDOW bytes of an attempt ahead of the InputAcks, so what is
held here per job is bounded whether or not the job reads: a job that never reads its stdin
holds a window, and every other job and the master's frames go on. The pipe is non-blocking
and written only when the selector says it has room; a job that closed its stdin (or exited)
makes the write fail with EPIPE: the rest is thrown away and the master told to stop sending.

Python 3.8+, stdlib only: it runs on the end machines.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import IO, Deque, Optional, Tuple

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
"""A job's stdin pipe holds this much (Linux's default 64 KiB costs a wake-up, a write and an
InputAck per 64 KiB; 1 MiB is /proc/sys/fs/pipe-max-size's default)."""


class JobInput:
    """Input waiting for a job's stdin pipe (`attach`ed once the job is started)."""

    def __init__(self) -> None:
        self.chunks: Deque[memoryview] = deque()
        self.eof = False
        self.broken = False
        """The job closed its stdin (or exited): input is thrown away from then on."""
        self.pipe: Optional[IO[bytes]] = None
        self.fd = -1
        self.watched = False  # the dispatcher's selector waits for room in the pipe

    def add(self, data: bytes, eof: bool) -> int:
        """Hold `data` for the pipe; returns the bytes thrown away at once (stdin closed)."""
        self.eof = self.eof or eof
        if self.broken:
            return len(data)
        if data:
            self.chunks.append(memoryview(data))
        return 0

    def attach(self, pipe: IO[bytes]) -> None:
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        with contextlib.suppress(OSError):  # Linux only; a user's pipe-max-size may refuse it
            fcntl.fcntl(self.fd, F_SETPIPE_SZ, PIPE_SIZE)
        self.pipe = pipe

    @property
    def done(self) -> bool:
        """Nothing more goes into the pipe: all of the input is in, or the job closed it."""
        return self.broken or (self.eof and not self.chunks)

    @property
    def waiting(self) -> bool:
        """Bytes wait for room in an open pipe."""
        return self.pipe is not None and bool(self.chunks) and not self.broken

    def write(self) -> Tuple[int, bool]:
        """Write what the pipe takes now: (bytes gone from the buffer, whether the job closed
        its stdin in this call). Gone includes what is thrown away then."""
        if self.pipe is None or self.broken:
            return 0, False
        gone = 0
        while self.chunks:
            head = self.chunks[0]
            try:
                written = os.write(self.fd, head)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self.broken = True
                gone += sum(len(chunk) for chunk in self.chunks)
                self.chunks.clear()
                return gone, True
            gone += written
            if written == len(head):
                self.chunks.popleft()
            else:
                self.chunks[0] = head[written:]
        return gone, False

    def close(self) -> None:
        """Close the pipe (the job sees the end of its input); the caller unregistered it."""
        self.chunks.clear()
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            with contextlib.suppress(OSError):  # a flush to a closed pipe: the job is gone
                pipe.close()
