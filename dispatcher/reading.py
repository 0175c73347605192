"""Reading a pipe into one reused buffer.

`os.read(fd, n)` allocates n bytes before it knows how many will come, then shrinks the
object: for a big n that is a fresh mapping and its page faults at every call. The dispatcher
reads with a big n (a whole frame's worth of a job's output, a megabyte of the master's frames)
but mostly gets a line: measured on Linux, a 20-byte read cost 13.6 us with n = 256 KiB and
1.5 us into a buffer kept from call to call; a full 256 KiB read costs the same either way.

Python 3.8+, stdlib only.
"""

from __future__ import annotations

import os


class ReadBuffer:
    """Reads of at most `size` bytes, each returned as its own `bytes` (the buffer is reused)."""

    __slots__ = ("_buf", "_view")

    def __init__(self, size: int) -> None:
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)

    def read(self, fd: int) -> bytes:
        """As os.read(fd, size): b"" at EOF; BlockingIOError and OSError are the caller's."""
        return self._view[: os.readv(fd, [self._buf])].tobytes()
