"""A batch read from a stream (`./make_jobs | anet -`) by a thread of its own: a producer that
pauses never stalls the master (anet/core/readahead.py, the backlog's NOT_YET)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

from waiting import wait_until

from anet.core.backlog import Backlog
from anet.core.batch import Job
from anet.core.readahead import NOT_YET, ReadAhead
from anet.core.scheduler import SOURCE_POLL, Scheduler
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


def test_a_starved_backlog_is_not_drained_and_the_scheduler_looks_again_soon():
    source = iter([Job(0, b"a"), NOT_YET, Job(1, b"b")])
    backlog = Backlog(source)
    assert backlog.next_for("h", frozenset({"h"})).job.id == 0
    assert backlog.next_for("h", frozenset({"h"})) is None  # NOT_YET: nothing now
    assert backlog.starved and not backlog.source_done and not backlog.drained
    assert not backlog.fewer_than(1)  # more may come: a slow host's tail must not be decided
    assert backlog.next_for("h", frozenset({"h"})).job.id == 1
    scheduler = Scheduler(iter([NOT_YET]), retries=0, timeout=None, speculate=False)
    scheduler.host_ready("h", 1)
    assert scheduler.next_runs(10.0) == []
    assert scheduler.next_wakeup(10.0) == 10.0 + SOURCE_POLL
    assert not scheduler.finished


def test_keep_order_expects_no_result_for_not_yet(tmp_path):
    order = KeepOrder(FileSpill(str(tmp_path)))
    assert list(order.jobs([Job(0, b"a"), NOT_YET, Job(1, b"b")]))[1] is NOT_YET
    results = []
    from anet.core.record import JobResult

    for i in (1, 0):
        results += order.add(JobResult(i, True, 0, None, "h", 1, 0.1, b"", b""))
    assert [r.id for r in results] == [0, 1]  # nothing waits for an id -1


def test_a_producer_silent_longer_than_the_keepalive_stalls_nothing(tmp_path):
    """The batch from stdin, its producer silent 5 s with a 2 s keepalive. Read on the master's
    loop, that froze it: the dispatcher gave its master up, killed job 0 and it ran again."""
    producer = "echo 'sleep 4; echo one'; sleep 5; echo 'echo two'"
    script = f"( {producer} ) | {sys.executable} -m anet -S 2/: --keepalive 2 --format msgpack -"
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import io

    import anet.results

    got = {r.id: r for r in anet.results.read(io.BytesIO(done.stdout))}
    assert {i: (r.stdout, r.attempts) for i, r in got.items()} == {
        0: (b"one\n", 1), 1: (b"two\n", 1),
    }  # fmt: skip
    assert b"retrying" not in done.stderr and b"exited" not in done.stderr, done.stderr


def test_a_pipe_producer_silent_longer_than_the_keepalive_stalls_nothing(tmp_path):
    """--pipe's blocks come from stdin too: its producer's silence must not freeze the master."""
    producer = "yes xxxxxxxxx | head -c 3000000; sleep 5; yes xxxxxxxxx | head -c 1000000"
    command = "sleep 4; wc -l"
    script = (
        f"( {producer} ) | {sys.executable} -m anet -S 2/: --keepalive 2 --format msgpack"
        f" --pipe --block 1M '{command}'"
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import io

    import anet.results

    got = {r.id: r for r in anet.results.read(io.BytesIO(done.stdout))}
    assert sum(int(r.stdout) for r in got.values()) == 400_000  # lines of 10 bytes
    assert all(r.attempts == 1 for r in got.values()), done.stderr
    assert b"retrying" not in done.stderr and b"exited" not in done.stderr, done.stderr
