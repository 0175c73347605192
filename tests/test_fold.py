"""Protocol 4's fold: a dispatcher told `Setup.fold` reports a short job in one Done frame.

The dispatcher runs as its own process over pipes (test_dispatcher's DispatcherProcess); the
engine half is in test_engine.py. What must hold: a job that ends within the fold is one Done
and nothing else, with all its output; a longer one, or one with more output than a Done
holds, is reported as before (Started, Output..., Exit), its held output first and whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dispatcher import DispatcherProcess, outputs, stderr_of

from dispatcher.protocol import FOLD_OUTPUT, MAX_FOLD, Done, Dones, Exit, Message, Run, Started


@pytest.fixture
def folding(tmp_path: Path) -> Iterator[DispatcherProcess]:
    d = DispatcherProcess(tmp_path / "home", 2, fold=MAX_FOLD)
    try:
        yield d
    finally:
        d.close()


def ends(aid: int):
    return lambda m: isinstance(m, (Exit, Done)) and m.aid == aid


def about(messages: list[Message], aid: int) -> list[Message]:
    return [m for m in messages if getattr(m, "aid", None) == aid]


def test_a_job_that_ends_within_the_fold_is_one_done_with_all_its_output(folding):
    folding.send(Run(1, 0, b"echo out; echo err >&2; exit 3"))
    got = about(folding.read_until(ends(1)), 1)
    assert len(got) == 1 and isinstance(got[0], Done), got
    done = got[0]
    assert (done.stdout, done.stderr, done.code, done.signal) == (b"out\n", b"err\n", 3, None)
    assert done.slot in (1, 2) and done.pid > 1


def test_a_job_longer_than_the_fold_is_started_then_streamed(tmp_path: Path):
    d = DispatcherProcess(tmp_path / "home", 1, fold=0.05)
    try:
        d.send(Run(1, 0, b"echo before; sleep 0.5; echo after"))
        got = about(d.read_until(ends(1)), 1)
    finally:
        d.close()
    assert isinstance(got[0], Started) and isinstance(got[-1], Exit), got
    assert not any(isinstance(m, Done) for m in got)
    assert outputs(got, 1) == b"before\nafter\n"


def test_output_past_what_a_done_holds_is_sent_whole_and_in_order(folding):
    size = 3 * FOLD_OUTPUT + 5
    folding.send(Run(1, 0, b"head -c %d /dev/zero; echo tail >&2" % size))
    got = about(folding.read_until(ends(1)), 1)
    assert isinstance(got[0], Started) and isinstance(got[-1], Exit), got[:2]
    assert outputs(got, 1) == bytes(size)
    assert stderr_of(got, 1) == b"tail\n"


def test_without_a_fold_every_job_is_started_output_exit(tmp_path: Path):
    d = DispatcherProcess(tmp_path / "home", 1)
    try:
        d.send(Run(1, 0, b"echo hi"))
        got = about(d.read_until(ends(1)), 1)
    finally:
        d.close()
    assert [type(m) for m in got] == [Started, type(got[1]), Exit] and outputs(got, 1) == b"hi\n"


def test_many_short_jobs_are_each_one_done_record_some_in_one_frame(folding):
    """Every job once, as a Done frame or an item of a Dones frame (those that ended in the
    same turn of the dispatcher's loop), with its own output."""
    count = 40
    folding.send(*(Run(aid, aid, b"echo %d" % aid) for aid in range(count)))
    records: list[Done] = []
    while len(records) < count:
        for msg in folding.read_until(lambda m: isinstance(m, (Done, Dones))):
            assert not isinstance(msg, (Started, Exit)), msg
            records += msg.dones() if isinstance(msg, Dones) else [msg]
    assert sorted(r.aid for r in records) == list(range(count))
    assert all(r.stdout == b"%d\n" % r.aid and r.code == 0 for r in records)
