"""--halt parsing and decisions: pure."""

from __future__ import annotations

import pytest

from anet.core.halt import Halt, HaltPolicy
from anet.errors import UsageError


def test_never_and_none_never_halt():
    for text in (None, "never"):
        assert HaltPolicy.parse(text).check(1000, 1000) is None


def test_now_after_a_count_of_failures():
    policy = HaltPolicy.parse("now,fail=3")
    assert [policy.check(n) for n in (0, 1, 2, 3, 4)] == [None, None, None, Halt.NOW, Halt.NOW]


def test_soon_after_a_percentage_of_the_batch():
    policy = HaltPolicy.parse("soon,fail=10%")
    assert policy.needs_total
    assert policy.check(9, 100) is None
    assert policy.check(10, 100) is Halt.SOON


@pytest.mark.parametrize(
    "text", ["later,fail=1", "now", "now,fail=", "now,success=1", "now,fail=x", "soon,fail=0",
             "soon,fail=150%"],
)  # fmt: skip
def test_bad_halt_specs_are_one_line_usage_errors(text):
    with pytest.raises(UsageError, match="--halt"):
        HaltPolicy.parse(text)


def _anet(tmp_path, lines, *args):
    import subprocess
    import sys

    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"{line}\n" for line in lines))
    argv = [sys.executable, "-m", "anet", "--no-journal", "--format", "jsonl", "-j", "2", *args]
    return subprocess.run([*argv, str(batch)], capture_output=True, timeout=60, text=True)


def test_halt_now_stops_the_batch_and_kills_what_runs(tmp_path):
    import time

    start = time.monotonic()
    done = _anet(tmp_path, ["exit 1", "exit 1"] + ["sleep 30"] * 10, "--retries", "0",
                 "--halt", "now,fail=2")  # fmt: skip
    assert time.monotonic() - start < 20  # the sleepers were killed, not waited for
    assert done.returncode == 2
    assert "halting now: 2 jobs failed" in done.stderr
    assert len(done.stdout.splitlines()) == 2  # only the two failures were reported
    # The last word counts the jobs the halt left undone (it said "2 of 2 jobs failed").
    assert done.stderr.endswith("anet: 2 jobs failed; halted with 10 of 12 jobs not done\n")


def test_halt_soon_lets_running_jobs_finish_but_starts_no_new_one(tmp_path):
    done = _anet(tmp_path, ["exit 1"] + ["sleep 0.5"] * 30, "--retries", "0",
                 "--halt", "soon,fail=1")  # fmt: skip
    assert done.returncode == 1
    assert "halting soon: 1 job failed; jobs not started yet never start" in done.stderr
    finished = len(done.stdout.splitlines())
    assert 1 < finished < 31  # those already handed out ended; the rest never started
    last = f"anet: 1 job failed; halted with {31 - finished} of 31 jobs not done\n"
    assert done.stderr.endswith(last), done.stderr


def test_halt_soon_takes_back_what_waits_in_a_dispatchers_queue(tmp_path):
    """Jobs sent ahead to fill slots as they free up had not started when the halt came: they
    never start (before, 8 of 10 ran with 4 slots). At most the slots' worth may: the dispatcher
    fills the failed job's slot before the master's word arrives."""
    done = _anet(tmp_path, ["exit 1"] + ["sleep 1"] * 11, "-j", "4", "--retries", "0",
                 "--halt", "soon,fail=1")  # fmt: skip
    assert done.returncode == 1
    assert 1 < len(done.stdout.splitlines()) <= 1 + 4, done.stdout
