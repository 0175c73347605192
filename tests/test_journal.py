"""anet.streams.journal: real SQLite files; what was flushed survives kill -9, resume is safe."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from anet.core.record import JobResult
from anet.errors import AnetError, UsageError
from anet.streams import journal as journal_module
from anet.streams.journal import (
    AttemptRecord,
    IdSet,
    Journal,
    JournalError,
    JournalSummary,
    default_journal_path,
    fingerprint_batch,
)
from anet.views.report import render_report
from anet.views.stats import load

ROOT = Path(__file__).resolve().parent.parent
FP = "f" * 64


def ok(job_id: int, stdout: bytes = b"", **kw) -> JobResult:
    fields = dict(exit_code=0, signal=None, host="node1", attempts=1, duration=0.25, stderr=b"")
    return JobResult(job_id, True, stdout=stdout, **(fields | kw))


def failed(job_id: int, **kw) -> JobResult:
    fields = dict(exit_code=1, signal=None, host="node1", attempts=1, duration=0.5)
    return JobResult(job_id, False, stdout=b"", stderr=b"boom\n", **(fields | kw))


def fresh(path: Path, **kw) -> Journal:
    return Journal.open(path, FP, "batch.txt", resume=False, **kw)


def count_rows(path: Path, table: str = "results") -> int:
    """Through a second connection, as another process would see the file."""
    with closing(sqlite3.connect(path)) as other:
        return other.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def run_child(code: str, *args: str, **kw) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_binary_outputs(tmp_path):
    path = tmp_path / "j.sqlite"
    every_byte = bytes(range(256)) * 3
    kept = [
        ok(0, every_byte, stderr=b"\x00warn\xff", host="8/bob@node2:2222", duration=1.5),
        ok(5, b"", attempts=3),
        ok(2, b"\r\n\x1b[31m"),
    ]
    lost = [
        failed(1, exit_code=None, signal=9),
        JobResult(3, False, None, None, "", 2, 0.0, b"", b"", error="no usable host left"),
    ]
    with fresh(path) as journal:
        for result in [*kept, *lost]:
            journal.record(result)
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert list(journal.succeeded_results()) == sorted(kept, key=lambda r: r.id)
        assert set(journal.succeeded_ids()) == {0, 2, 5}
        assert journal.summary() == JournalSummary(succeeded=3, failed=2)
        assert journal.meta["fingerprint"] == FP
        assert journal.meta["batch_path"] == str(Path("batch.txt").resolve())
        assert journal.meta["schema_version"] == "2"  # 2: outputs may be files beside it
    with closing(sqlite3.connect(path)) as db:
        columns = "id, ok, exit_code, signal, host, attempts, duration, stdout, stderr, error"
        rows = db.execute(f"SELECT {columns} FROM results WHERE NOT ok ORDER BY id").fetchall()
    assert [JobResult(r[0], bool(r[1]), *r[2:]) for r in rows] == lost


def test_attempts_are_logged_in_order(tmp_path):
    tries = [
        AttemptRecord(4, 1, "node1", 1700000000.5, 2.0, None, 9, 0),
        AttemptRecord(4, 2, "node2", 1700000003.0, 1.0, 0, None, 123),
        AttemptRecord(1, 1, "node1", 1700000001.0, 0.1, 1, None, 5),
    ]
    with fresh(tmp_path / "j.sqlite") as journal:
        for attempt in tries:
            journal.record_attempt(attempt)
        assert list(journal.attempts()) == tries


def test_parent_directories_are_private_and_so_is_the_file(tmp_path):
    path = tmp_path / "state" / "anet" / "journals" / "j.sqlite"
    fresh(path).close()
    for directory in (tmp_path / "state", path.parent.parent, path.parent):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_fresh_journal_is_built_unsynced(tmp_path, monkeypatch):
    """Nothing is written into the journal being built before its syncs are turned off: the
    application id written first, in SQLite's default mode, cost a synced rollback journal
    (three syncs and the folder's) before the one sync the built file gets."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kw):
        db = connect(*args, **kw)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(journal_module.sqlite3, "connect", traced)
    fresh(tmp_path / "j.sqlite").close()
    first = statements[0].strip().rstrip(";").upper()
    assert first == "PRAGMA SYNCHRONOUS = OFF", statements[:3]


def test_a_fresh_journal_makes_its_first_commit_when_opened(tmp_path):
    """The first commit creates the WAL and syncs its header and folder: made at the open
    (while hosts connect), not by the first result's commit, which must precede its bytes."""
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        assert os.path.getsize(f"{path}-wal") > 0, "the first result's commit would make it"
        journal.record(ok(1))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert list(journal.succeeded_ids()) == [1]
        assert "opened" in journal.meta


# -- group commits and durability ------------------------------------------------------------


def test_records_are_visible_to_others_only_once_flushed(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path, batch_size=1000) as journal:
        for i in range(10):
            journal.record(ok(i))
        journal.record_attempt(AttemptRecord(0, 1, "node1", 0.0, 0.1, 0, None, 0))
        assert count_rows(path) == 0
        assert count_rows(path, "attempts") == 0
        journal.flush()
        assert count_rows(path) == 10
        assert count_rows(path, "attempts") == 1
        journal.record(ok(10))
        assert count_rows(path) == 10
    assert count_rows(path) == 11  # close() flushes


def test_a_full_buffer_commits_by_itself(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path, batch_size=5) as journal:
        for i in range(7):
            journal.record(ok(i))
        assert count_rows(path) == 5


def test_leaving_the_with_block_on_an_error_still_flushes(tmp_path):
    path = tmp_path / "j.sqlite"
    with pytest.raises(KeyboardInterrupt), fresh(path) as journal:
        journal.record(ok(1))
        raise KeyboardInterrupt
    assert count_rows(path) == 1
    journal.close()  # idempotent


KILLED_WRITER = """
    import sys, time
    from anet.streams.journal import Journal
    from anet.core.record import JobResult

    def result(i):
        return JobResult(i, i % 7 != 0, i % 7 != 0 and 0 or 2, None, "h", 1, 0.1,
                         b"out %d \\xff" % i, b"")

    journal = Journal.open(sys.argv[1], "fp", "batch.txt", resume=False, batch_size=100_000)
    for i in range(3000):
        journal.record(result(i))
    journal.flush()
    for i in range(3000, 3500):
        journal.record(result(i))  # buffered, never flushed
    print("flushed", flush=True)
    time.sleep(60)
"""


def test_flushed_results_survive_kill_9_of_the_writer(tmp_path):
    path = tmp_path / "j.sqlite"
    child = run_child(KILLED_WRITER, str(path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "flushed\n", child.stderr.read() if child.stderr else ""
        assert Path(f"{path}-wal").exists()  # the results sit in the WAL, not checkpointed
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    with Journal.open(path, "fp", "batch.txt", resume=True) as journal:
        expected = [i for i in range(3000) if i % 7 != 0]
        assert list(journal.succeeded_ids()) == expected
        assert journal.summary() == JournalSummary(len(expected), 3000 - len(expected))
        results = list(journal.succeeded_results())
        assert [r.stdout for r in results] == [b"out %d \xff" % i for i in expected]
        journal.record(ok(3001))  # and the resumed run can carry on writing
    assert count_rows(path) == 3001


# -- resume ----------------------------------------------------------------------------------


def test_resume_keeps_what_the_journal_holds(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(1, b"one"))
        journal.record(failed(2))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert list(journal.succeeded_ids()) == [1]
        journal.record(ok(2, b"two"))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert [(r.id, r.stdout) for r in journal.succeeded_results()] == [(1, b"one"), (2, b"two")]


def test_without_resume_an_old_journal_is_replaced(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(1))
    with Journal.open(path, "other", "batch.txt", resume=False) as journal:
        assert journal.summary() == JournalSummary(0, 0)
        assert journal.meta["fingerprint"] == "other"
    assert count_rows(path) == 0


def test_an_unflushed_old_wal_is_not_replayed_into_a_new_journal(tmp_path):
    path = tmp_path / "j.sqlite"
    child = run_child(KILLED_WRITER, str(path))
    assert child.stdout is not None and child.stdout.readline() == "flushed\n"
    child.kill()
    child.communicate()
    with Journal.open(path, "fp", "batch.txt", resume=False) as journal:
        assert journal.summary() == JournalSummary(0, 0)


def test_resume_refuses_a_changed_batch(tmp_path):
    path = tmp_path / "j.sqlite"
    fresh(path).close()
    with pytest.raises(UsageError, match=r"batch file changed.*without --resume") as caught:
        Journal.open(path, "0" * 64, "batch.txt", resume=True)
    assert "\n" not in str(caught.value)


def test_resume_refuses_a_journal_whose_ids_were_numbered_by_another_rule(tmp_path):
    """Before anet numbered jobs as the original ANet did, a white-space-only line was no job
    and a lone CR ended none: that journal's ids are not this batch's ids, unless the batch has
    no such line (then both rules give the same ids, and the journal resumes)."""
    path, batch = tmp_path / "j.sqlite", tmp_path / "batch.txt"
    batch.write_bytes(b"echo a\r\n\necho b\n")
    with fresh(path) as journal:
        journal.record(ok(1))
    with Journal.open(path, FP, batch, resume=True):
        pass  # a journal of this anet resumes
    with closing(sqlite3.connect(path)) as db:
        db.execute("DELETE FROM meta WHERE key = 'job_ids'")
        db.commit()
    with Journal.open(path, FP, batch, resume=True):
        pass  # the older rule numbered this batch alike
    for differs in (b"echo a\n  \necho b\n", b"echo a\recho b\n", b"\t\r\necho b"):
        batch.write_bytes(differs)
        with pytest.raises(UsageError, match=r"numbered .* run without --resume"):
            Journal.open(path, FP, batch, resume=True)


def test_resume_without_a_journal_names_the_path(tmp_path):
    path = tmp_path / "nothing" / "j.sqlite"
    with pytest.raises(UsageError, match=f"no journal to resume at {path}"):
        Journal.open(path, FP, "batch.txt", resume=True)
    assert not path.parent.exists()


def damaged_journal(path: Path) -> None:
    with fresh(path) as journal:
        for i in range(200):
            journal.record(ok(i, b"x" * 100))
    data = bytearray(path.read_bytes())
    data[100:] = bytes(random.Random(1).randbytes(len(data) - 100))
    path.write_bytes(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"echo hello\n" * 100),
        lambda p: sqlite3.connect(p).executescript("CREATE TABLE meta (key, value);").close(),
        damaged_journal,
    ],
    ids=["text", "other-database", "damaged"],
)
def test_resume_refuses_a_file_that_is_not_a_sound_journal(tmp_path, make):
    path = tmp_path / "j.sqlite"
    make(path)
    with pytest.raises(UsageError) as caught, Journal.open(path, FP, "b", resume=True) as journal:
        list(journal.succeeded_results())  # damage may show only when pages are read
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_a_damaged_journal_is_replaced_by_a_fresh_run(tmp_path):
    path = tmp_path / "j.sqlite"
    damaged_journal(path)
    with fresh(path) as journal:
        journal.record(ok(1))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert list(journal.succeeded_ids()) == [1]


def test_a_stranger_file_is_never_overwritten(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"precious\n")
    with pytest.raises(UsageError, match="not an anet journal"):
        fresh(path)
    assert path.read_bytes() == b"precious\n"


# -- replacing results -----------------------------------------------------------------------


def test_a_later_result_replaces_an_earlier_failure(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(failed(1))
        journal.record(failed(2))
        journal.flush()
        journal.record(ok(1, b"second try", attempts=2))
        journal.record(failed(2, exit_code=3))
        assert journal.summary() == JournalSummary(1, 1)
        assert [(r.id, r.stdout) for r in journal.succeeded_results()] == [(1, b"second try")]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT exit_code FROM results WHERE id = 2").fetchone() == (3,)


@pytest.mark.parametrize("flush_between", [False, True])
def test_a_success_is_never_replaced_by_a_failure(tmp_path, flush_between):
    with fresh(tmp_path / "j.sqlite") as journal:
        journal.record(ok(1, b"good"))
        if flush_between:
            journal.flush()
        journal.record(failed(1))
        journal.record(ok(2, b"first"))
        journal.record(ok(2, b"latest"))
        results = [(r.id, r.stdout) for r in journal.succeeded_results()]
        assert results == [(1, b"good"), (2, b"latest")]


# -- ids and streaming -----------------------------------------------------------------------


def test_idset_holds_ids_up_to_2_to_the_32():
    ids = IdSet([5, 2**32 - 1, 0, 2**31, 5])
    assert len(ids) == 4
    assert list(ids) == [0, 5, 2**31, 2**32 - 1]
    for present in (0, 5, 2**31, 2**32 - 1):
        assert present in ids
    for absent in (1, 4, 6, 2**31 - 1, 2**32 - 2, 2**32, -1, "5", 5.0):
        assert absent not in ids
    with pytest.raises(ValueError):
        ids.add(-1)
    assert not IdSet()


def test_ids_take_well_under_a_byte_each():
    """A bit each: 25 KB for 200,000 ids, where a set of ints takes some 10 MB (a million took
    26 s under load, being traced, to show the same)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids = IdSet(range(200_000))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ids) == 200_000 and 199_999 in ids and 200_000 not in ids
    assert used < 200_000, used


def test_succeeded_ids_are_read_into_the_compact_set(tmp_path):
    with fresh(tmp_path / "j.sqlite", batch_size=10_000) as journal:
        for i in range(100_000):
            journal.record(ok(i) if i % 10 else failed(i))
        journal.flush()
        tracemalloc.start()
        try:
            ids = journal.succeeded_ids()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(ids) == 90_000 and 11 in ids and 10 not in ids
    assert peak < 1_000_000, peak  # a set of 90,000 ints would take ~5 MB


def test_succeeded_results_stream_in_id_order(tmp_path):
    order = list(range(2000))
    random.Random(7).shuffle(order)
    with fresh(tmp_path / "j.sqlite") as journal:
        for i in order:
            journal.record(ok(i, b"%d:" % i + b"x" * 10_000) if i % 3 else failed(i))
        journal.flush()  # 13 MB of output stored
        tracemalloc.start()
        try:
            seen = []
            for result in journal.succeeded_results():
                seen.append(result.id)
                assert result.stdout.startswith(b"%d:" % result.id)
                if result.id == 1000:  # writing while reading neither fails nor disturbs it
                    journal.record(ok(5000, b"5000: late"))
                    journal.flush()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert seen == [i for i in range(2000) if i % 3] + [5000]
    assert peak < 3_000_000, peak


# -- paths and fingerprints ------------------------------------------------------------------


def test_default_path_honours_xdg_state_home(tmp_path):
    batch = tmp_path / "batch.txt"
    path = default_journal_path(batch, {"XDG_STATE_HOME": "/state", "HOME": "/home/u"})
    assert path.parent == Path("/state/anet/journals")
    assert path.name.startswith("batch.txt-") and path.suffix == ".sqlite"
    tag = hashlib.sha256(os.fsencode(batch.resolve())).hexdigest()[:8]
    assert path.name == f"batch.txt-{tag}.sqlite"
    fallback = default_journal_path(batch, {"HOME": "/home/u"})
    assert fallback == Path("/home/u/.local/state/anet/journals") / path.name
    relative = default_journal_path(batch, {"XDG_STATE_HOME": "state", "HOME": "/home/u"})
    assert relative == fallback  # the XDG spec: relative values are ignored


def test_default_path_tells_same_named_batches_apart(tmp_path, monkeypatch):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    one = default_journal_path(tmp_path / "a" / "batch.txt", env)
    two = default_journal_path(tmp_path / "b" / "batch.txt", env)
    assert one != two and one.parent == two.parent
    monkeypatch.chdir(tmp_path)
    assert default_journal_path(Path("a/batch.txt"), env) == one


def test_fingerprint_streams_a_million_line_batch(tmp_path):
    batch = tmp_path / "batch.txt"
    with open(batch, "wb") as stream:
        for start in range(0, 1_000_000, 10_000):
            stream.write(b"".join(b"echo %d\n" % i for i in range(start, start + 10_000)))
    tracemalloc.start()
    try:
        digest = fingerprint_batch(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(batch.read_bytes()).hexdigest()
    assert peak < 1_000_000, peak  # the file is 12.9 MB
    with pytest.raises(UsageError, match="cannot read batch file"):
        fingerprint_batch(tmp_path / "missing.txt")


# -- unwritable journals ---------------------------------------------------------------------


def test_a_location_that_cannot_hold_a_journal_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "journals" / "j.sqlite"
    with pytest.raises(AnetError, match=f"cannot create journal {path}: ") as caught:
        fresh(path)
    assert "\n" not in str(caught.value)


FULL_DISK_WRITER = """
    import resource, signal, sys
    from anet.errors import AnetError
    from anet.streams.journal import Journal
    from anet.core.record import JobResult

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    journal = Journal.open(sys.argv[1], "fp", "batch.txt", resume=False)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
    for i in range(20):
        journal.record(JobResult(i, True, 0, None, "h", 1, 0.1, b"x" * 65536, b""))
    late = JobResult(99, True, 0, None, "h", 1, 0.1, b"", b"")
    for step in (journal.flush, lambda: journal.record(late)):
        try:
            step()
            print("no error")
        except AnetError as exc:
            print(repr(str(exc)))
    journal.close()
    print("closed")
"""


def test_a_full_disk_is_a_one_line_error_naming_the_journal(tmp_path):
    path = tmp_path / "j.sqlite"
    child = run_child(FULL_DISK_WRITER, str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    first, second, closed = out.splitlines()
    assert first.startswith(f"'cannot write journal {path}: ")
    assert second == first  # a broken journal stays broken: no result is silently dropped
    assert closed == "closed"


# -- delivery marks, big outputs, one run at a time -------------------------------------------


def test_only_results_never_marked_delivered_are_owed_to_the_consumer(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        for i in range(6):
            journal.record(ok(i, b"out %d" % i))
        journal.record(failed(6))
        journal.flush()
        for i in (0, 2, 3):
            journal.mark_delivered(i)
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        owed = [r.id for r in journal.succeeded_results(undelivered=True)]
        assert owed == [1, 4, 5]  # a failure is not owed: resume runs that job again
        assert next(journal.succeeded_results(undelivered=True)).stdout == b"out 1"
        assert [r.id for r in journal.succeeded_results()] == [0, 1, 2, 3, 4, 5]


def test_a_result_that_replaces_a_failure_is_owed_again(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(failed(0))
        journal.flush()
        journal.mark_delivered(0)
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        journal.record(ok(0, b"second try"))
        assert [r.stdout for r in journal.succeeded_results(undelivered=True)] == [b"second try"]


def test_a_journal_written_before_delivery_marks_counts_its_results_as_delivered(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(0))
    with closing(sqlite3.connect(path)) as db:  # the results table as schema 1 first had it
        db.executescript(
            "ALTER TABLE results DROP COLUMN delivered; ALTER TABLE results DROP COLUMN chunked;"
            " ALTER TABLE attempts DROP COLUMN excused;"
        )
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert list(journal.succeeded_results(undelivered=True)) == []
        journal.record(ok(1))
        assert [r.id for r in journal.succeeded_results(undelivered=True)] == [1]
        kill = AttemptRecord(1, 1, "node1", 1700000000.0, 0.5, None, 9, 0, excused=True)
        journal.record_attempt(kill)  # the attempts table gained its column too
        journal.flush()
        assert list(journal.attempts()) == [kill]


def test_outputs_past_the_inline_limit_are_kept_whole_in_chunks(tmp_path, monkeypatch):
    import anet.streams.journal

    monkeypatch.setattr(anet.streams.journal, "INLINE_OUTPUT", 1000)
    monkeypatch.setattr(anet.streams.journal, "CHUNK", 300)
    big = bytes(random.Random(1).randbytes(2500))
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(0, big, stderr=big[:700] + big))
        journal.record(ok(1, b"small"))
        journal.record(ok(2, b"", stderr=big))
    assert count_rows(path, "output_chunks") == 9 + 11 + 9
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        got = {r.id: r for r in journal.succeeded_results()}
        assert got[0] == ok(0, big, stderr=big[:700] + big)
        assert got[1] == ok(1, b"small")
        assert got[2] == ok(2, b"", stderr=big)
        assert [r.id for r in journal.results_from(1)] == [1, 2]


def test_a_failure_never_replaces_the_chunks_of_a_success(tmp_path, monkeypatch):
    import anet.streams.journal

    monkeypatch.setattr(anet.streams.journal, "INLINE_OUTPUT", 10)
    monkeypatch.setattr(anet.streams.journal, "CHUNK", 4)
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(0, b"the first, kept"))
        journal.flush()
        journal.record(JobResult(0, False, 1, None, "h", 2, 0.1, b"x" * 40, b""))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        assert [r.stdout for r in journal.succeeded_results()] == [b"the first, kept"]


SCALE = 1024
"""test_an_output_past_sqlites_value_limit_is_journaled runs the journal's sizes and SQLite's
limit divided by this: the same refusal, a thousandth of the bytes."""


def test_an_output_past_sqlites_value_limit_is_journaled(tmp_path, monkeypatch):
    """SQLite refuses one value over 10**9 bytes ("string or blob too big"): the run died.

    At that size the test built, wrote and read back 1 GB (19 s, 2 GB of the test's memory);
    here SQLite's limit, INLINE_OUTPUT and CHUNK are all divided by SCALE, so an output past
    the limit is about 1 MB and meets the same refusal unless the journal cuts it; the real
    constants are checked against the real limit apart."""
    import anet.streams.journal

    with closing(sqlite3.connect(":memory:")) as plain:
        limit = plain.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)  # SQLite's own, 10**9 by default
    inline, chunk = anet.streams.journal.INLINE_OUTPUT, anet.streams.journal.CHUNK
    assert inline < limit and chunk < limit  # a row's stdout and stderr together; one chunk
    monkeypatch.setattr(anet.streams.journal, "INLINE_OUTPUT", inline // SCALE)
    monkeypatch.setattr(anet.streams.journal, "CHUNK", chunk // SCALE)
    huge = b"y" * (limit // SCALE + 4096)
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit // SCALE)
        journal.record(ok(0, huge))
        journal.record(ok(1, b"after"))
    with Journal.open(path, FP, "batch.txt", resume=True) as journal:
        results = list(journal.succeeded_results())
        assert [len(r.stdout) for r in results] == [len(huge), 5]
        assert results[0].stdout == huge


def test_a_second_run_of_the_same_journal_is_refused_until_the_first_ends(tmp_path):
    path = tmp_path / "j.sqlite"
    first = fresh(path)
    with pytest.raises(JournalError, match=rf"in use by another anet run .*pid {os.getpid()}"):
        fresh(path)
    with pytest.raises(JournalError, match="in use"):
        Journal.open(path, FP, "batch.txt", resume=True)
    first.record(ok(0))
    first.close()
    with Journal.open(path, FP, "batch.txt", resume=True) as again:
        assert list(again.succeeded_ids()) == [0]


HOLDER = """
    import sys, time
    from anet.streams.journal import Journal

    journal = Journal.open(sys.argv[1], "fp", "batch.txt", resume=False)
    print("open", flush=True)
    time.sleep(60)
"""


def test_the_lock_of_a_killed_run_is_gone_with_it(tmp_path):
    path = tmp_path / "j.sqlite"
    child = run_child(HOLDER, str(path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n"
        with pytest.raises(JournalError, match=f"pid {child.pid}"):
            Journal.open(path, "fp", "batch.txt", resume=True)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.communicate()
    with Journal.open(path, "fp", "batch.txt", resume=True) as journal:
        assert journal.summary() == JournalSummary(0, 0)


# -- read-only, as `anet status` and `anet report` read it -----------------------------------


def test_status_gives_the_last_stderr_line_of_a_failure_whose_output_was_chunked(
    tmp_path, monkeypatch
):
    """A chunked row's stderr column is empty: status said "exit 1" instead of the reason."""
    import anet.streams.journal

    monkeypatch.setattr(anet.streams.journal, "INLINE_OUTPUT", 1000)
    monkeypatch.setattr(anet.streams.journal, "CHUNK", 300)
    stderr = b"a" * 580 + b"\ndisk quota exceeded\n"  # chunks end at 300, 600: the line spans two
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(JobResult(0, False, 1, None, "node1", 1, 0.5, b"x" * 2500, stderr))
        journal.record(JobResult(1, False, 1, None, "node1", 1, 0.5, b"", b"small and inline\n"))
    assert count_rows(path, "output_chunks") == 9 + 3
    assert [(job.id, job.why) for job in load(path).failed_jobs] == [
        (0, "disk quota exceeded"),
        (1, "small and inline"),
    ]


def test_status_reads_a_journal_that_a_run_holds_open(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(ok(0))
        journal.record(failed(1))
        journal.record_attempt(AttemptRecord(0, 1, "node1", 1700000000.0, 0.25, 0, None, 2))
        journal.flush()
        seen = load(path)
        assert (seen.succeeded, seen.failed, seen.attempts) == (1, 1, 1)
        journal.record(ok(2))
        journal.flush()
        assert load(path).succeeded == 2


def test_status_reads_a_journal_whose_path_has_uri_characters(tmp_path):
    """The read-only open is a `file:` URI: a `?` or `#` in the path cut it short."""
    path = tmp_path / "batch #2?" / "j %41.sqlite"
    path.parent.mkdir()
    with fresh(path) as journal:
        journal.record(ok(0))
    assert load(path).succeeded == 1


def test_status_and_report_read_an_older_journal_without_changing_it(tmp_path):
    path = tmp_path / "j.sqlite"
    with fresh(path) as journal:
        journal.record(failed(0))
        journal.record_attempt(AttemptRecord(0, 1, "node1", 1700000000.0, 0.5, 1, None, 0))
        journal.record_host_event(1700000000.0, "node1", "ready", None)
    with closing(sqlite3.connect(path)) as db:  # as schema 1 first had it
        db.executescript(
            "DROP TABLE host_events; DROP TABLE output_chunks;"
            " ALTER TABLE results DROP COLUMN delivered; ALTER TABLE results DROP COLUMN chunked;"
            " ALTER TABLE attempts DROP COLUMN excused;"
        )
    before = path.read_bytes()
    seen = load(path)
    assert (seen.failed, seen.events, seen.failed_jobs[0].why) == (1, [], "boom")
    assert [h.failed_attempts for h in seen.hosts] == [1]
    assert "node1" in render_report(seen)  # a host without host events has its bar
    assert path.read_bytes() == before
