"""anet's stderr: written by a helper thread behind a bounded buffer, so it never blocks the work.

Invariant 9: nothing written to stderr or a terminal can block delivery. A stderr pipe that its
reader never drains (Java's `Runtime.exec`), a pager stopped with Ctrl-Z, a terminal frozen with
Ctrl-S: a plain `write` would then wait, inside the event loop, and no result would go out.

Why a thread, and not the fd in O_NONBLOCK: O_NONBLOCK belongs to the *open file description*,
which fd 2 shares with the shell that started anet and with everything else on the same terminal
or pipe (`anet ... 2>&1 | tee`, a consumer writing to the same tty). Switching it on would make
their writes fail with EAGAIN while anet runs, or after a crash that skipped the restore; a
`dup` shares the description, and reopening `/proc/self/fd/2` works for pipes and terminals but
not sockets, and only on Linux. A thread writes to fd 2 exactly as before, blocking when it must;
only the thread waits. The callers append to a queue that holds at most `capacity` bytes: what
does not fit is dropped whole (a log line, a status line, a frame of the live view, never half of
one), and a line saying how many were dropped takes their place as soon as there is room again.
"""

from __future__ import annotations

import atexit
import io
import os
import sys
import threading
import time
from collections import deque

from .. import logs

CAPACITY = 256 << 10
"""Bytes of diagnostics waiting for stderr, at most: minutes of log lines, a few seconds of
live-view frames. Bounded memory whatever happens to the reader (invariant 4)."""
EXIT_GRACE = 0.5
"""Seconds anet waits at exit for stderr to take what is queued, counted from the last byte it
took: a slow reader gets the end summary, a reader that never reads costs half a second."""


class UnblockedStderr(io.TextIOBase):
    """A text stream on `fd` whose `write` never waits: it queues, a daemon thread writes."""

    def __init__(
        self, fd: int = 2, *, capacity: int = CAPACITY, encoding: str = "utf-8",
        errors: str = "backslashreplace",
    ) -> None:  # fmt: skip
        super().__init__()
        self._fd = fd
        self._capacity = capacity
        self._encoding, self._errors = encoding, errors
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue
        self._dropped = [0, 0]  # writes and bytes dropped since the last notice
        self._busy = False  # the thread holds bytes it has not finished writing
        self._broken = False  # fd 2 is gone (EPIPE, EBADF): discard everything
        self._progress = time.monotonic()  # when the thread last finished a write
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, name="anet-stderr", daemon=True)
        self._thread.start()

    # -- what callers see ------------------------------------------------------------------

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    @property
    def errors(self) -> str:  # type: ignore[override]
        return self._errors

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def write(self, text: str) -> int:
        """Queue `text` whole, or drop it whole if the queue is full; never waits."""
        data = text.encode(self._encoding, self._errors)
        with self._cond:
            if self._broken:
                return len(text)
            if self._queued + len(data) > self._capacity:
                self._dropped[0] += 1
                self._dropped[1] += len(data)
                return len(text)
            self._note_dropped()
            self._queue.append(data)
            self._queued += len(data)
            self._cond.notify_all()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as stderr takes it (waiting is `drain`)."""

    def drain(self, grace: float = EXIT_GRACE) -> bool:
        """Wait until everything queued is written, or stderr took nothing for `grace` seconds;
        True when it all went out (False also when stderr is gone)."""
        with self._cond:
            self._note_dropped()
            self._cond.notify_all()
            start = time.monotonic()
            while (self._queue or self._busy) and not self._broken:
                deadline = max(start, self._progress) + grace
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._queue and not self._broken

    def close(self) -> None:
        """Drain (bounded), then let the thread end; a thread stuck writing stays, a daemon."""
        self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        super().close()

    # -- the thread ------------------------------------------------------------------------

    def _note_dropped(self) -> None:
        """Say how much was dropped, where it was dropped (the caller holds the lock)."""
        writes, size = self._dropped
        if not writes:
            return
        self._dropped = [0, 0]
        said = f"{writes} diagnostic message(s), {size} bytes, dropped here"
        notice = logs.line(
            f"{said}: stderr was not being read", "warning", dropped=writes, dropped_bytes=size
        ).encode()
        self._queue.append(notice)  # over capacity by one line: bounded all the same
        self._queued += len(notice)

    def _pump(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._stopping:
                        return
                    self._cond.wait()
                chunks = list(self._queue)
                self._queue.clear()
                self._busy = True
            data = b"".join(chunks)
            try:
                self._write_all(data)
            except OSError:  # stderr closed or gone: nothing can be shown any more
                with self._cond:
                    self._broken = True
            with self._cond:
                self._queued -= len(data)
                self._busy = False
                self._progress = time.monotonic()
                self._cond.notify_all()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


def install() -> UnblockedStderr | None:
    """Make `sys.stderr` an `UnblockedStderr` on fd 2 for the rest of the process (the `anet`
    command does this first); at exit, what is queued gets `EXIT_GRACE` to go out. None when
    there is no stderr to write to (`2>&-`)."""
    original = sys.stderr
    try:
        original.flush()
        fd = original.fileno()
    except (AttributeError, OSError, ValueError):  # None, closed, or not a file
        return None
    stream = UnblockedStderr(
        fd,
        encoding=getattr(original, "encoding", None) or "utf-8",
        errors=getattr(original, "errors", None) or "backslashreplace",
    )
    sys.stderr = stream
    atexit.register(stream.drain)  # not close: Python still flushes sys.stderr after atexit
    return stream
