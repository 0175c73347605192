"""Exactly once across a stop, as a property: for any interleaving of results arriving, journal
commits, writes to stdout, the reader taking bytes, and the master stopping, what reached the
reader plus what `--resume --only-new` then writes holds every id once (a stop the master
handles), or at least once with repeats only of what was taken since the last commit (kill -9).

The real Journal (SQLite in a temporary folder), the real Delivery and encoder and the real
ledger of ResultOutput; only the pipe is a model: a transport buffer, and a reader that takes
bytes from it when the test says so.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anet import results
from anet.core.record import JobResult
from anet.errors import ResultFormatError
from anet.streams.delivery import Delivery
from anet.streams.journal import Journal, unlock_journal
from anet.streams.output import ResultOutput
from anet.streams.sinks import encoder_for

FP = "p" * 64
ENCODER = encoder_for("msgpack")


class ModelPipe(ResultOutput):
    """A pipe whose reader the test drives: written bytes wait in a transport buffer until
    `take` moves them to the reader (the kernel taking them is the reader having them)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self.taken = bytearray()

    async def write(self, data: bytes, job_id: int | None = None) -> None:
        self._enqueue(data, job_id)
        self._flush_pending()  # no event loop here: push at once

    def _push(self, data: bytes) -> None:
        self.buffer += data

    def _unsent(self) -> int:
        return len(self.buffer)

    def take(self, size: int) -> None:
        self.taken += self.buffer[:size]
        del self.buffer[:size]


def now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (the model pipe never makes anyone wait)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine waited")


def result(job_id: int) -> JobResult:
    return JobResult(job_id, True, 0, None, "h", 1, 0.1, b"out %d\n" % job_id * 7, b"")


def decode(data: bytes) -> list[int]:
    """Ids in a stream that may end in a torn record (a write cut by kill -9)."""
    ids: list[int] = []
    try:
        ids.extend(r.id for r in results.read(io.BytesIO(data), "msgpack"))
    except ResultFormatError as exc:
        assert "truncated" in str(exc)
    return ids


MEMORY_FS = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
"""Where each example's journal lives: in memory, where SQLite's fsyncs (creating the schema,
each commit) return at once. On disk they were most of the test's 10 s, waiting, not computing;
what the property checks (which commits happened before the stop) does not depend on them."""

ACTIONS = st.sampled_from(["arrive", "commit", "yield", "take", "take_all"])


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    n_jobs=st.integers(1, 12),
    actions=st.lists(st.tuples(ACTIONS, st.integers(1, 400)), max_size=60),
    graceful=st.booleans(),
    reader_keeps_up=st.booleans(),
)
def test_stdout_plus_resumed_stdout_is_every_id_once(n_jobs, actions, graceful, reader_keeps_up):
    with tempfile.TemporaryDirectory(dir=MEMORY_FS) as tmp:
        path = Path(tmp, "j.sqlite")
        journal = Journal.open(path, FP, "b.txt", resume=False, batch_size=4)
        pipe = ModelPipe()
        out = Delivery(pipe, ENCODER, journal)
        now(pipe.write(ENCODER.header))  # what entering the Delivery writes
        pipe.take(len(pipe.buffer))
        arrived: list[JobResult] = []  # queued in the cluster, not yet yielded
        waiting = list(range(n_jobs))
        taken_since_commit: set[int] = set()  # ids the reader has, their marks not committed

        def commit() -> None:
            journal.flush()
            taken_since_commit.clear()

        def take(size: int) -> None:
            before = set(decode(bytes(pipe.taken)))
            pipe.take(size)
            out._mark()  # what Delivery does after each write and at close
            taken_since_commit.update(set(decode(bytes(pipe.taken))) - before)

        for action, size in actions:
            if action == "arrive" and waiting:
                arrived.append(result(waiting.pop(0)))
                journal.record(arrived[-1])  # Cluster._deliver
            elif action == "commit":
                commit()  # the flusher's timer, or a full buffer
            elif action == "yield" and arrived:
                if journal.unflushed:  # Cluster._commit_before_yield
                    commit()
                now(out.emit(arrived.pop(0)))
            elif action in ("take", "take_all"):
                take(size if action == "take" else len(pipe.buffer))

        if graceful:  # Ctrl-C, TERM, HUP: close the output (the reader may take the rest)
            if reader_keeps_up:
                pipe.take(len(pipe.buffer))
            pipe._flush_pending()
            out._mark()
            journal.close()
            repeatable: set[int] = set()
        else:  # kill -9: buffers in the master are gone, the committed journal stays
            repeatable = set(taken_since_commit)
            journal._db.close()
            unlock_journal(journal._lock)
        first = decode(bytes(pipe.taken))

        with Journal.open(path, FP, "b.txt", resume=True) as resumed:
            done = resumed.succeeded_ids()
            owed = [r.id for r in resumed.succeeded_results(undelivered=True) if r.id in done]
            rerun = [i for i in range(n_jobs) if i not in done]
        counts = Counter(first + owed + rerun)
        assert set(counts) == set(range(n_jobs)), "a result was lost"
        repeated = {i for i, n in counts.items() if n > 1}
        assert all(n <= 2 for n in counts.values())
        assert repeated <= repeatable, f"repeated {repeated}, not only {repeatable}"
