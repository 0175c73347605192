"""A spooled output's journal copy is its spool file, given a name in the journal's folder.

Copying a gigabyte into SQLite wrote it twice (WAL, checkpoint) through Python and halved a big
output's speed with the journal on; these tests check the file is kept (linked where the kernel
allows, copied where not), read back, counted and removed with its journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from test_spool import pattern, spooled_result

from anet.core import spool as spool_module
from anet.core.record import SpooledResult
from anet.core.spool import Spool
from anet.streams import retention
from anet.streams.journal import (
    AttemptRecord,
    Journal,
    JournalError,
    fingerprint_batch,
    outputs_dir,
)
from anet.streams.journalreader import JournalReader
from anet.streams.retention import Policy

BIG = 5000  # spooled_result spools an output of 1000 bytes or more


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    path = tmp_path / "batch.txt"
    path.write_text("".join(f"echo {i}\n" for i in range(8)))
    return path


def open_journal(tmp_path: Path, batch: Path, *, resume: bool = False) -> Journal:
    return Journal.open(tmp_path / "j.sqlite", fingerprint_batch(batch), batch, resume=resume)


def record(journal: Journal, result: SpooledResult) -> None:
    asyncio.run(journal.record_spooled(result))
    journal.flush()


def inode(spool: Spool) -> int:
    return os.fstat(spool._fd).st_ino


def test_a_spooled_output_is_kept_as_its_own_file_not_copied_into_sqlite(tmp_path, batch):
    spools = tmp_path / "spools"
    spools.mkdir()
    result = spooled_result(spools, pattern(BIG), pattern(BIG, 5), id=3)
    with open_journal(tmp_path, batch) as journal:
        record(journal, result)
        kept = outputs_dir(journal.path)
        assert sorted(os.listdir(kept)) == ["3.err", "3.out"]
        assert os.stat(kept / "3.out").st_ino == inode(result.out)  # the same file: a link
        assert os.stat(kept / "3.err").st_ino == inode(result.err)
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(kept / "3.out").st_mode) == 0o600
        (back,) = journal.succeeded_results()
    assert type(back) is SpooledResult and isinstance(back.out, Spool)
    assert (back.stdout, back.stderr) == (pattern(BIG), pattern(BIG, 5))
    with closing(sqlite3.connect(tmp_path / "j.sqlite")) as db:
        assert db.execute("SELECT count(*) FROM output_chunks").fetchone() == (0,)
        assert db.execute("SELECT length(stdout) FROM results").fetchone() == (0,)
    del result
    assert (tmp_path / "j.sqlite.outputs" / "3.out").read_bytes() == pattern(BIG)


def test_where_no_link_can_be_made_the_output_is_copied_whole(tmp_path, batch, monkeypatch):
    monkeypatch.setattr(spool_module, "_link", lambda fd, path: False)  # another file system
    result = spooled_result(tmp_path, pattern(BIG), b"small stderr", id=4)
    with open_journal(tmp_path, batch) as journal:
        record(journal, result)
        kept = outputs_dir(journal.path)
        assert os.listdir(kept) == ["4.out"]  # the small stderr stays in its row
        assert os.stat(kept / "4.out").st_ino != inode(result.out)
        assert stat.S_IMODE(os.stat(kept / "4.out").st_mode) == 0o600
        (back,) = journal.succeeded_results()
    assert (back.stdout, back.stderr) == (pattern(BIG), b"small stderr")


def test_a_parked_output_is_copied_from_its_slice(tmp_path, batch):
    """A spool parked by keep-order reads a slice of a shared file: that slice, not the file."""
    parking = spool_module.Parking(tmp_path)
    first, second = Spool(tmp_path), Spool(tmp_path)
    first.write(pattern(3000, 1))
    second.write(pattern(BIG, 2))
    parking.park(first)
    parked = parking.park(second)
    result = dataclasses.replace(spooled_result(tmp_path, b"", b"", id=1), stdout=parked)
    with open_journal(tmp_path, batch) as journal:
        record(journal, result)
        (back,) = journal.succeeded_results()
    assert back.stdout == pattern(BIG, 2)


def test_a_later_result_of_a_job_replaces_its_files_and_leaves_none_it_does_not_use(
    tmp_path, batch
):
    with open_journal(tmp_path, batch) as journal:
        record(journal, spooled_result(tmp_path, pattern(BIG), pattern(BIG, 1), ok=False))
    with open_journal(tmp_path, batch, resume=True) as journal:  # --resume runs it again
        record(journal, spooled_result(tmp_path, pattern(BIG, 9), b"fine\n", id=7))
        assert os.listdir(outputs_dir(journal.path)) == ["7.out"]
        (back,) = journal.succeeded_results()
        assert (back.stdout, back.stderr) == (pattern(BIG, 9), b"fine\n")
        record(journal, spooled_result(tmp_path, pattern(BIG, 4), b"", ok=False))
        (back,) = journal.succeeded_results()  # a success stands: its file too
        assert back.stdout == pattern(BIG, 9)


def test_a_kept_output_that_went_missing_is_one_line_naming_it(tmp_path, batch):
    with open_journal(tmp_path, batch) as journal:
        record(journal, spooled_result(tmp_path, pattern(BIG), b"", id=2))
        os.unlink(outputs_dir(journal.path) / "2.out")
        with pytest.raises(JournalError, match=r"the output of job 2 \(2\.out\)") as caught:
            list(journal.succeeded_results())
    assert "\n" not in str(caught.value)


def test_status_shows_the_last_line_of_a_stderr_kept_as_a_file(tmp_path, batch):
    stderr = pattern(BIG, 3) + b"\nthe reason it failed\n"
    with open_journal(tmp_path, batch) as journal:
        record(journal, spooled_result(tmp_path, b"", stderr, id=5, ok=False, exit_code=1))
    with JournalReader.open(tmp_path / "j.sqlite") as reader:
        (failure,) = reader.failures(10, tail=21)
    assert failure.stderr == b"the reason it failed\n"


def test_a_fresh_run_of_the_journal_removes_the_outputs_of_the_last_one(tmp_path, batch):
    with open_journal(tmp_path, batch) as journal:
        record(journal, spooled_result(tmp_path, pattern(BIG), b"", id=6))
    assert os.listdir(tmp_path / "j.sqlite.outputs") == ["6.out"]
    with open_journal(tmp_path, batch):
        assert not (tmp_path / "j.sqlite.outputs").exists()


def test_retention_counts_drops_and_removes_the_kept_outputs(tmp_path, batch):
    with open_journal(tmp_path, batch) as journal:
        for i in range(8):
            record(journal, spooled_result(tmp_path, pattern(BIG * 10, i), b"", id=i))
            journal.record_attempt(AttemptRecord(i, 1, "h1", 1000.0 + i, 0.25, 0, None, BIG))
            journal.mark_delivered(i)
    path = tmp_path / "j.sqlite"
    info = retention.look(path)
    assert info.size > 8 * BIG * 10  # the folder counts: the SQLite file alone is small
    freed = retention.settle(path, Policy(), total=8)
    assert freed >= 8 * BIG * 10 and not outputs_dir(path).exists()
    assert retention.look(path).dropped

    with open_journal(tmp_path, batch) as journal:
        record(journal, spooled_result(tmp_path, pattern(BIG), b"", id=0))
    assert retention.remove(path) >= BIG
    assert not outputs_dir(path).exists() and not path.exists()


def test_a_journal_of_schema_1_is_resumed_and_a_newer_one_refused(tmp_path, batch):
    with open_journal(tmp_path, batch):
        pass
    path = tmp_path / "j.sqlite"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_journal(tmp_path, batch, resume=True) as journal:  # it may keep files from now
        assert journal.meta["schema_version"] == "2"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(Exception, match="schema version 3, this anet reads 2"):
        open_journal(tmp_path, batch, resume=True)


def test_a_full_disk_while_copying_an_output_is_one_line_and_leaves_no_part_behind(
    tmp_path, batch, monkeypatch
):
    """The journal on another file system (no link) that is full: the copy fails midway."""
    monkeypatch.setattr(spool_module, "_link", lambda fd, path: False)

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    with open_journal(tmp_path, batch) as journal:
        with pytest.raises(JournalError) as caught:
            asyncio.run(journal.record_spooled(spooled_result(tmp_path, pattern(BIG), b"")))
        assert journal.broken and not journal.unflushed  # no row without its file
        assert os.listdir(outputs_dir(journal.path)) == []
    assert str(caught.value) == (
        f"cannot write journal {tmp_path / 'j.sqlite'}: No space left on device"
    )
