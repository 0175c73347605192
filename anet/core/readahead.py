"""Jobs read from a stream by a thread of their own, so a producer that pauses never stalls
the master.

`./make_jobs | anet -H hosts.txt -` reads the batch as it comes. Read on the event loop, a
producer silent for longer than the keepalive froze the master: no heartbeat went out, every
dispatcher gave its master up and killed its jobs, and they ran again. Here a daemon thread
reads ahead, within bounds (jobs and bytes), and the scheduler takes what has arrived: when
nothing has, it gets `NOT_YET` instead of waiting, and looks again a moment later
(scheduler.SOURCE_POLL).

The thread is a daemon: a blocking read of a pipe cannot be cancelled, and it holds nothing
but the stream; it ends at the stream's end, or with the process.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from .batch import Job

NOT_YET = Job(-1, b"")
"""What a source gives when no job has arrived yet but more may come (never run: the backlog
and every wrapper of a source pass it on as it is)."""


class ReadAhead(Iterator[Job]):
    """`jobs`, pulled by a thread, at most `max_jobs` and `max_bytes` of commands ahead."""

    def __init__(
        self, jobs: Iterator[Job], max_jobs: int = 1024, max_bytes: int = 16 << 20
    ) -> None:
        self._jobs = jobs
        self._max_jobs, self._max_bytes = max_jobs, max_bytes
        self._ready: deque[Job] = deque()
        self._bytes = 0
        self._done = self._closed = False
        self._error: BaseException | None = None
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None

    def __next__(self) -> Job:
        if self._thread is None:  # started by the first pull: a run that needs no job reads none
            self._thread = threading.Thread(target=self._read, name="anet-batch", daemon=True)
            self._thread.start()
        with self._room:
            if self._ready:
                job = self._ready.popleft()
                self._bytes -= len(job.command)
                self._room.notify()
                return job
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._done:
                raise StopIteration
            return NOT_YET

    def close(self) -> None:
        """No more is wanted: the thread stops at its next job (or at once, if it waits for
        room); one blocked reading the stream ends with the stream or the process."""
        with self._room:
            self._closed = True
            self._ready.clear()
            self._room.notify_all()

    def _read(self) -> None:
        try:
            for job in self._jobs:
                with self._room:
                    while not self._closed and (
                        len(self._ready) >= self._max_jobs or self._bytes >= self._max_bytes
                    ):
                        self._room.wait()
                    if self._closed:
                        return
                    self._ready.append(job)
                    self._bytes += len(job.command)
        except BaseException as exc:  # the batch's own error (e.g. unreadable): the run's
            with self._room:
                self._error = exc
        finally:
            with self._room:
                self._done = True
