"""anet.streams.retention on real journal files: what a finished run keeps, what the caps remove,
and what is never touched (a running journal, one that owes results, the one just written)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from anet.core.record import JobResult
from anet.errors import UsageError
from anet.streams import journal as journal_module
from anet.streams import retention
from anet.streams.journal import (
    AttemptRecord,
    Journal,
    JournalBusy,
    JournalError,
    fingerprint_batch,
)
from anet.streams.retention import Policy
from anet.views.report import render_report
from anet.views.stats import load

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = 200_000
"""Bytes of stdout per job: enough that dropping them shows in the file's size."""


def result(job_id: int, ok: bool = True) -> JobResult:
    stdout = bytes([65 + job_id % 26]) * OUTPUT
    return JobResult(job_id, ok, 0 if ok else 1, None, "node1", 1, 0.25, stdout, b"err\n")


def write_batch(directory: Path, jobs: int = 5) -> Path:
    batch = directory / "batch.txt"
    batch.write_text("".join(f"echo {i}\n" for i in range(jobs)))
    return batch


def make_journal(
    path: Path,
    batch: Path,
    ids: range = range(5),
    *,
    failed: tuple[int, ...] = (),
    owed: tuple[int, ...] = (),
) -> Path:
    """A journal as a run leaves it: results, an attempt each, delivery marks."""
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        fill(journal, ids, failed=failed, owed=owed)
    return path


def fill(
    journal: Journal,
    ids: range = range(5),
    *,
    failed: tuple[int, ...] = (),
    owed: tuple[int, ...] = (),
) -> None:
    """What a run writes into its journal (`make_journal`), the journal left open."""
    for i in ids:
        journal.record(result(i, ok=i not in failed))
        journal.record_attempt(AttemptRecord(i, 1, "node1", 1000.0 + i, 0.25, 0, None, OUTPUT))
        if i not in owed:
            journal.mark_delivered(i)
    journal.record_host_event(1000.0, "node1", "ready", "2")


def disk_size(path: Path) -> int:
    return sum(
        os.stat(f"{path}{suffix}").st_size
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    )


def outputs(path: Path, batch: Path) -> dict[int, bytes]:
    with Journal.open(path, fingerprint_batch(batch), batch, resume=True) as journal:
        return {r.id: r.stdout for r in journal.succeeded_results()}


# -- a finished run: its outputs go, its job table stays ------------------------------------------

NOT_FINISHED = [
    ("interrupted", dict(ids=range(4)), Policy()),
    ("a job failed", dict(failed=(2,)), Policy()),
    ("a result is owed", dict(owed=(3,)), Policy()),
    ("outputs kept by setting", {}, Policy(drop_outputs=False)),
]
"""(why, make_journal's arguments, policy): runs whose outputs must stay."""


def test_a_complete_delivered_run_keeps_its_job_table_but_not_its_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "INLINE_OUTPUT", OUTPUT - 1)  # every output chunked
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    before = disk_size(path)
    assert before > 5 * OUTPUT

    freed = retention.settle(path, Policy(), total=5)

    assert disk_size(path) < 64 * 1024, "the outputs are still on disk"
    assert freed == before - disk_size(path)
    stats = load(path)  # `anet status` and `anet report` read the job table as before
    assert (stats.succeeded, stats.failed, stats.attempts, stats.total) == (5, 0, 5, 5)
    assert stats.events == [(1000.0, "node1", "ready", "2")]
    assert "node1" in render_report(stats)
    with Journal.open(path, fingerprint_batch(batch), batch, resume=True) as journal:
        assert list(journal.succeeded_ids()) == [0, 1, 2, 3, 4]  # --resume runs nothing
        assert list(journal.succeeded_results(undelivered=True)) == []  # --only-new owes nothing
        with pytest.raises(JournalError, match=r"outputs .* were dropped") as caught:
            journal.succeeded_results()  # plain --resume cannot write them again: one line
        assert "\n" not in str(caught.value)
    info = retention.look(path)
    assert (info.state, info.done, info.total, info.dropped) == ("complete", 5, 5, True)


def test_dropping_the_outputs_writes_nothing_into_the_old_journal(tmp_path):
    """The batch size and the drop are written into the lean copy alone, which the rename
    makes the journal: the old file is never written (a write there cost a transaction and
    its syncs at every run's end), so until the rename it is exactly what the run left."""
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    with closing(sqlite3.connect(path)) as db:  # the run's WAL into the file, as its close does
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    old = os.open(path, os.O_RDONLY)  # the old file, whatever the name points to later
    try:
        before = os.pread(old, 1 << 24, 0)
        assert retention.settle(path, Policy(), total=5) > 0
        assert os.pread(old, 1 << 24, 0) == before
    finally:
        os.close(old)
    info = retention.look(path)
    assert (info.state, info.total, info.recorded, info.dropped) == ("complete", 5, True, True)


def test_a_finished_journal_without_output_bytes_is_stamped_where_it_is(tmp_path):
    """Jobs that printed nothing (`true`, `sleep`) leave nothing to drop: the journal is
    stamped as dropped in place, in one transaction, not copied and renamed (the copy and
    its sync were most of a one-job run's exit: 30 of its last 50 ms)."""
    batch = write_batch(tmp_path, jobs=2)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        for i in range(2):
            journal.record(JobResult(i, True, 0, None, "node1", 1, 0.25, b"", b""))
            journal.record_attempt(AttemptRecord(i, 1, "node1", 1000.0 + i, 0.25, 0, None, 0))
            journal.mark_delivered(i)
    inode = os.stat(path).st_ino

    assert retention.settle(path, Policy(), total=2) == 0

    assert os.stat(path).st_ino == inode, "copied and renamed, for nothing to free"
    info = retention.look(path)
    assert (info.state, info.total, info.recorded, info.dropped) == ("complete", 2, True, True)
    with Journal.open(path, fingerprint_batch(batch), batch, resume=True) as journal:
        assert list(journal.succeeded_ids()) == [0, 1]
        with pytest.raises(JournalError, match=r"outputs .* were dropped"):
            journal.succeeded_results()


def test_one_output_byte_is_enough_for_the_copy(tmp_path):
    batch = write_batch(tmp_path, jobs=2)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        for i in range(2):
            err = b"!" if i else b""
            journal.record(JobResult(i, True, 0, None, "node1", 1, 0.25, b"", err))
            journal.mark_delivered(i)
    inode = os.stat(path).st_ino
    retention.settle(path, Policy(), total=2)
    assert os.stat(path).st_ino != inode
    assert retention.look(path).dropped


@pytest.mark.parametrize(("why", "make", "policy"), NOT_FINISHED)
def test_a_run_not_complete_and_delivered_is_kept_whole(tmp_path, why, make, policy):
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch, **make)
    want = outputs(path, batch)
    assert retention.settle(path, policy, total=5) == 0, why
    assert outputs(path, batch) == want and want, why
    assert not retention.look(path).dropped


def test_a_finished_journal_of_an_older_anet_is_settled_and_owes_nothing(tmp_path):
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    with closing(sqlite3.connect(path)) as db:  # as schema 1 first had it: no delivery marks
        db.executescript(
            "DROP TABLE host_events; DROP TABLE output_chunks;"
            " ALTER TABLE results DROP COLUMN delivered; ALTER TABLE results DROP COLUMN chunked;"
        )
    assert retention.settle(path, Policy(), total=5) > 4 * OUTPUT
    with Journal.open(path, fingerprint_batch(batch), batch, resume=True) as journal:
        assert list(journal.succeeded_ids()) == [0, 1, 2, 3, 4]
        assert list(journal.succeeded_results(undelivered=True)) == []
    assert load(path).attempts == 5


def test_the_batch_size_is_counted_when_the_run_did_not_count_it(tmp_path):
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    assert retention.settle(path, Policy(), total=None) > 0
    batch.write_text("echo other\n")  # the size was recorded: the listing still knows it
    assert retention.look(path).total == 5


def test_a_journal_a_run_holds_is_not_settled(tmp_path):
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    with (
        Journal.open(path, fingerprint_batch(batch), batch, resume=True),
        pytest.raises(JournalBusy),
    ):
        retention.settle(path, Policy(), total=5)
    assert len(outputs(path, batch)) == 5


def test_the_run_settles_its_own_journal_before_it_closes_it(tmp_path):
    """`settle_own`: the stamp is written by the run that holds the journal, in its own
    connection, so it is there as soon as the journal closes, with no second open."""
    batch = write_batch(tmp_path, jobs=2)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        for i in range(2):
            journal.record(JobResult(i, True, 0, None, "node1", 1, 0.25, b"", b""))
            journal.mark_delivered(i)  # buffered: settle_own commits it first
        assert retention.settle_own(journal, Policy(), total=2)
        with pytest.raises(JournalBusy):  # the run holds it all along
            retention.settle(path, Policy(), total=2)
    info = retention.look(path)
    assert (info.state, info.total, info.recorded, info.dropped) == ("complete", 2, True, True)
    assert not os.path.exists(f"{path}-wal"), "the close checkpointed the stamp with the rest"


@pytest.mark.parametrize(("why", "make", "policy"), NOT_FINISHED)
def test_a_run_not_finished_records_its_batch_size_and_keeps_its_outputs(
    tmp_path, why, make, policy
):
    batch = write_batch(tmp_path)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        fill(journal, **make)
        assert retention.settle_own(journal, policy, total=5), why
    info = retention.look(path)
    assert (info.total, info.recorded, info.dropped) == (5, True, False), why
    assert len(outputs(path, batch)) == len(make.get("ids", range(5))) - len(
        make.get("failed", ())
    ), why


def test_outputs_to_drop_are_left_to_the_copy_after_the_close(tmp_path):
    batch = write_batch(tmp_path)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        fill(journal)
        assert not retention.settle_own(journal, Policy(), total=5)
    assert not retention.look(path).dropped and len(outputs(path, batch)) == 5
    retention.after_run(path, Policy(), total=5)
    assert retention.look(path).dropped
    assert disk_size(path) < 64 * 1024


def test_a_broken_journal_is_left_to_the_step_after_its_close(tmp_path):
    batch = write_batch(tmp_path, jobs=1)
    path = tmp_path / "j.sqlite"
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False) as journal:
        journal.record(JobResult(0, True, 0, None, "node1", 1, 0.25, b"", b""))
        journal._broken = JournalError("disk full")  # as a failed commit leaves it
        assert not retention.settle_own(journal, Policy(), total=1)


# -- the caps: the most recent N, a total size ---------------------------------------------------


def journals_dir(tmp_path: Path, count: int, **make: object) -> list[Path]:
    """`count` journals, oldest first, an hour apart."""
    directory = tmp_path / "journals"
    directory.mkdir()
    batch = write_batch(tmp_path)
    paths = []
    for n in range(count):
        path = make_journal(directory / f"b{n}.txt-0000000{n}.sqlite", batch, **make)  # type: ignore[arg-type]
        os.utime(path, (1_700_000_000 + 3600 * n,) * 2)
        paths.append(path)
    return paths


def remaining(paths: list[Path]) -> list[int]:
    return [n for n, path in enumerate(paths) if path.exists()]


def test_only_the_most_recent_journals_are_kept_and_their_locks_go_with_them(tmp_path):
    paths = journals_dir(tmp_path, 5)
    removed = retention.enforce(paths[0].parent, Policy(keep=2, max_size=None))
    assert remaining(paths) == [3, 4]
    assert sorted(info.path for info in removed) == paths[:3]
    left = {p.name for p in paths[0].parent.iterdir()}
    assert not {name for name in left if name.startswith(("b0", "b1", "b2"))}, left


def test_looking_at_the_journals_leaves_no_file_beside_them(tmp_path):
    """A read-only SQLite open left an empty WAL and a 32 KiB -shm beside every journal that
    the end of each run looked at, and the WAL's time made an old journal look recent."""
    paths = journals_dir(tmp_path, 2)
    before = sorted(os.listdir(paths[0].parent))
    assert [info.path for info in retention.survey(paths[0].parent)] == paths[::-1]
    retention.enforce(paths[0].parent, Policy())
    assert sorted(os.listdir(paths[0].parent)) == before


def test_the_oldest_go_first_until_the_total_size_fits(tmp_path):
    paths = journals_dir(tmp_path, 4)
    each = disk_size(paths[0])
    retention.enforce(paths[0].parent, Policy(keep=None, max_size=int(2.5 * each)))
    assert remaining(paths) == [2, 3]


def test_a_busy_an_owing_and_the_current_journal_are_never_removed(tmp_path):
    paths = journals_dir(tmp_path, 5)
    batch = tmp_path / "batch.txt"
    make_journal(paths[1], batch, owed=(4,))  # owes a result to --resume --only-new
    os.utime(paths[1], (1_700_000_000 + 3600,) * 2)
    with Journal.open(paths[0], fingerprint_batch(batch), batch, resume=True):  # a run holds it
        assert retention.look(paths[0]).state == "running"
        retention.enforce(paths[0].parent, Policy(keep=1, max_size=None), spare=paths[2])
        assert remaining(paths) == [0, 1, 2, 4]  # the most recent is kept, and the protected
        retention.enforce(paths[0].parent, Policy(keep=None, max_size=1), spare=paths[2])
        assert remaining(paths) == [0, 1, 2]
    assert retention.look(paths[0]).state == "complete"


def test_a_run_that_opened_the_lock_of_a_journal_being_removed_takes_a_fresh_lock(
    tmp_path, monkeypatch
):
    """A run opens `<journal>.lock`, `anet journals clean` removes the journal and its lock file
    before the run's flock: the run must not lock the removed file, or a third run would lock a
    new one and share the journal with it."""
    batch = write_batch(tmp_path)
    path = make_journal(tmp_path / "j.sqlite", batch)
    real_flock = journal_module.fcntl.flock
    raced: list[int] = []

    def flock_after_removal(fd: int, how: int) -> None:
        if not raced:
            raced.append(fd)
            assert retention.remove(path) is not None  # the removal wins the race
        real_flock(fd, how)

    monkeypatch.setattr(journal_module.fcntl, "flock", flock_after_removal)
    with Journal.open(path, fingerprint_batch(batch), batch, resume=False):
        monkeypatch.setattr(journal_module.fcntl, "flock", real_flock)
        with pytest.raises(JournalBusy):  # a second run sees the lock the first one holds
            Journal.open(path, fingerprint_batch(batch), batch, resume=False)


# -- settings -------------------------------------------------------------------------------------


def test_settings_come_from_the_environment():
    assert Policy.from_environ({}) == Policy(keep=20, max_size=1 << 30, drop_outputs=True)
    env = {
        "ANET_JOURNALS_KEEP": "5",
        "ANET_JOURNALS_MAX_SIZE": "250M",
        "ANET_JOURNALS_KEEP_OUTPUTS": "1",
    }
    assert Policy.from_environ(env) == Policy(keep=5, max_size=250 << 20, drop_outputs=False)
    off = {"ANET_JOURNALS_KEEP": "off", "ANET_JOURNALS_MAX_SIZE": "off"}
    assert Policy.from_environ(off) == Policy(keep=None, max_size=None)
    assert [retention.parse_size(t) for t in ("512", "4k", "1.5G", "2GiB", "3 MB")] == [
        512, 4096, 3 << 29, 2 << 30, 3 << 20,
    ]  # fmt: skip
    assert [retention.parse_age(t) for t in ("30s", "90m", "12h", "7d", "2w", "3")] == [
        30, 5400, 43200, 604800, 1209600, 259200,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ANET_JOURNALS_KEEP": "many"}, "ANET_JOURNALS_KEEP takes a number of journals"),
        ({"ANET_JOURNALS_KEEP": "0"}, "ANET_JOURNALS_KEEP takes a number of journals"),
        ({"ANET_JOURNALS_MAX_SIZE": "1X"}, "ANET_JOURNALS_MAX_SIZE takes a size"),
        ({"ANET_JOURNALS_KEEP_OUTPUTS": "maybe"}, "ANET_JOURNALS_KEEP_OUTPUTS takes 0 or 1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env, said):
    with pytest.raises(UsageError, match=said) as caught:
        Policy.from_environ(env)
    assert "\n" not in str(caught.value)


# -- a state directory that cannot be written ------------------------------------------------------

READ_ONLY_SETTLE = """
    import os, subprocess, sys
    from pathlib import Path
    from anet import logs
    from anet.streams import retention

    logs.configure()
    directory = Path(sys.argv[1])
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
    newest = max(directory.glob("*.sqlite"), key=lambda p: p.stat().st_mtime)
    retention.after_run(newest, retention.Policy(keep=1), total=5)
    print("returned")
"""


def in_read_only_namespace(*argv: str) -> list[str]:
    """A user and mount namespace of our own: there, a read-only bind mount is a real EROFS,
    which a chmod is not for root."""
    return ["unshare", "--user", "--map-root-user", "--mount", *argv]


def test_retention_on_a_read_only_state_dir_is_one_warning(tmp_path):
    paths = journals_dir(tmp_path, 3)
    sizes = [disk_size(p) for p in paths]
    code = textwrap.dedent(READ_ONLY_SETTLE)
    done = subprocess.run(
        in_read_only_namespace(sys.executable, "-c", code, str(paths[0].parent)),
        capture_output=True, text=True, timeout=60,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "returned\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("anet: ") and "Read-only file system" in lines[0], lines
    assert [disk_size(p) for p in paths] == sizes  # nothing removed, nothing dropped
