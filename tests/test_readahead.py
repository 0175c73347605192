"""A batch read from a stream (`./make_jobs | anet -`) by a thread of its own: a producer that
pauses never stalls the master (anet/core/readahead.py, the backlog's NOT_YET)."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from waiting import wait_until

import anet.results
from anet.core.batch import Job
from anet.core.readahead import NOT_YET, ReadAhead
from anet.core.record import JobResult
from anet.streams.keeporder import FileSpill, KeepOrder


def gated(n: int, gate: threading.Event) -> Iterator[Job]:
    """Job 0 at once, the others once `gate` is set: a producer that pauses."""
    yield Job(0, b"echo 0")
    gate.wait(30)
    yield from (Job(i, b"echo %d" % i) for i in range(1, n))


def test_a_paused_source_gives_not_yet_at_once_then_its_jobs_then_ends():
    gate = threading.Event()
    ahead = ReadAhead(gated(3, gate))
    try:
        assert wait_until(lambda: next(ahead) is not NOT_YET, 10, "job 0")
        assert next(ahead) is NOT_YET  # paused: no wait here
        gate.set()
        rest = [job.id for job in ahead if job is not NOT_YET]  # ends with the source
        assert rest == [1, 2]
    finally:
        gate.set()


def test_read_ahead_stays_within_its_bound():
    pulled: list[int] = []

    def counted() -> Iterator[Job]:
        for i in range(100):
            pulled.append(i)
            yield Job(i, b"x")

    ahead = ReadAhead(counted(), max_jobs=5)
    assert next(ahead) in (NOT_YET, Job(0, b"x"))
    wait_until(lambda: len(pulled) >= 6, 10, "the thread to fill its queue")
    assert len(pulled) <= 7  # 5 waiting, one being handed over, one read and held back
    ahead.close()  # the thread waiting for room ends


def test_a_source_error_is_raised_to_the_scheduler_side():
    def broken() -> Iterator[Job]:
        yield Job(0, b"x")
        raise OSError("the pipe broke")

    ahead = ReadAhead(broken())
    seen = []

    def pull() -> bool:
        try:
            seen.append(next(ahead))
        except OSError as exc:
            seen.append(exc)
            return True
        return False

    wait_until(pull, 10, "the error")
    assert Job(0, b"x") in seen and isinstance(seen[-1], OSError)


def test_keep_order_expects_no_result_for_not_yet(tmp_path):
    order = KeepOrder(FileSpill(str(tmp_path)))
    assert list(order.jobs([Job(0, b"a"), NOT_YET, Job(1, b"b")]))[1] is NOT_YET
    results = []
    from anet.core.record import JobResult

    for i in (1, 0):
        results += order.add(JobResult(i, True, 0, None, "h", 1, 0.1, b"", b""))
    assert [r.id for r in results] == [0, 1]  # nothing waits for an id -1


KEEPALIVE = 1.5
"""The runs' --keepalive: a master frozen for longer loses its dispatcher, which kills its jobs."""
SILENCE = 3.0
"""How long the producer says nothing, once the first job runs: twice the keepalive."""


def silent_producer(first: str, then: str) -> str:
    """Shell words: `first` (the first job, or blocks of --pipe), then, once a job made the
    file `started`, SILENCE seconds of nothing, then `then`. A master frozen by the silence
    loses its dispatcher while that job runs; one that froze before starting any job makes
    the producer give up waiting (10 s) and say so in the file `gave-up`."""
    wait = (
        "n=0; until [ -e started ]; do [ $n -ge 200 ] && : > gave-up && break;"
        " sleep 0.05; n=$((n + 1)); done"
    )
    return f"{first}; {wait}; sleep {SILENCE}; {then}"


def run_fed(tmp_path: Path, producer: str, *args: str) -> dict[int, JobResult]:
    """`( producer ) | anet -S 2/: ARGS` in `tmp_path`: its results, checked to have run each
    job once, with no host lost and no stall."""
    script = (
        f"( {producer} ) | {sys.executable} -m anet -S 2/: --keepalive {KEEPALIVE}"
        f" --format msgpack {shlex.join(args)}"
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "gave-up").exists(), "the master never started the first job"
    got = {r.id: r for r in anet.results.read(io.BytesIO(done.stdout))}
    assert all(r.attempts == 1 for r in got.values()), done.stderr
    assert b"retrying" not in done.stderr and b"exited" not in done.stderr, done.stderr
    return got


def test_a_producer_silent_longer_than_the_keepalive_stalls_nothing(tmp_path):
    """The batch from stdin, its producer silent while job 0 runs. Read on the master's loop,
    that froze it: the dispatcher gave its master up, killed job 0 and it ran again."""
    producer = silent_producer("echo 'touch started; sleep 2.5; echo one'", "echo 'echo two'")
    got = run_fed(tmp_path, producer, "-")
    assert {i: r.stdout for i, r in got.items()} == {0: b"one\n", 1: b"two\n"}


def test_a_pipe_producer_silent_longer_than_the_keepalive_stalls_nothing(tmp_path):
    """--pipe's blocks come from stdin too: its producer's silence must not freeze the master."""
    first, then = (f"yes xxxxxxxxx | head -c {size}" for size in (3_000_000, 1_000_000))
    producer = silent_producer(first, then)
    got = run_fed(tmp_path, producer, "--pipe", "--block", "1M", "touch started; sleep 2.5; wc -l")
    assert sum(int(r.stdout) for r in got.values()) == 400_000  # lines of 10 bytes
