"""The engine's big outputs on a fake clock, each bound at its byte: memory up to SPOOL_AT, then
a spool file per stream (in the run's spool folder, with what memory held before it), a small
spool read back at the end, the output caps (both streams, or stdout alone), and a spool that
cannot be written. Milliseconds each (zero bytes, written to tmp_path): they are in the
mutation check's selection ([tool.mutmut]), which test_spool.py and test_bigout.py are not.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from test_engine import Hosts, jobs
from test_spool import spool_fds

from anet.core.engine import KEEP_SMALL, Engine, HostStats, RunPolicy
from anet.core.record import JobResult, SpooledResult
from anet.core.spool import SPOOL_AT, OutputCap, Spool
from dispatcher.protocol import STDERR, STDOUT, Exit, Output, Run

STREAM = {"out": STDOUT, "err": STDERR}


def running(tmp_path: Path, *caps: OutputCap) -> tuple[Hosts, Run]:
    """One job started on h1, its output spooled under tmp_path."""
    stats: dict[str, HostStats] = {}
    engine = Engine(jobs(1), RunPolicy(speculate=False, caps=caps), stats, spool_dir=tmp_path)
    hosts = Hosts(engine, stats)
    hosts.ready("h1", 1)
    return hosts, hosts.start("h1", 0)


def say(hosts: Hosts, run: Run, stream: str, data: bytes) -> bool:
    """One Output frame; what the engine answered: True when it cut the attempt."""
    cut = hosts.engine.frame("h1", Output(run.aid, STREAM[stream], data), hosts.now)
    hosts.round()
    return cut


def end(hosts: Hosts, run: Run, signal: int | None = None) -> JobResult:
    code = None if signal else 0
    hosts.say("h1", Exit(run.aid, code, signal, 1.0, 0.5, 1000))
    (result,) = hosts.results
    return result


def test_spool_at_bytes_stay_in_memory_and_the_next_spools_that_stream_with_what_it_held(
    tmp_path,
):
    hosts, run = running(tmp_path)
    assert not say(hosts, run, "out", b"a" * (SPOOL_AT - 10))
    assert not say(hosts, run, "err", b"b" * 10)
    assert spool_fds(tmp_path) == 0  # SPOOL_AT in all: still in memory
    assert not say(hosts, run, "out", b"c")
    assert spool_fds(tmp_path) == 1  # stdout only, in the run's folder
    assert not say(hosts, run, "out", b"d")  # small, but after the spool: into it
    result = end(hosts, run)
    assert type(result) is SpooledResult and isinstance(result.out, Spool)
    assert result.stdout == b"a" * (SPOOL_AT - 10) + b"cd"
    assert type(result.err) is bytes and result.stderr == b"b" * 10  # never spooled
    assert [a.size for a in hosts.attempts] == [SPOOL_AT + 2]


@pytest.mark.parametrize("small", [3, KEEP_SMALL])
def test_a_stream_spooled_small_is_read_back_into_its_result(tmp_path, small: int):
    hosts, run = running(tmp_path)
    say(hosts, run, "out", bytes(SPOOL_AT + 1))
    say(hosts, run, "err", b"e" * small)  # spooled, as the output is big by now
    assert spool_fds(tmp_path) == 2
    result = end(hosts, run)
    assert type(result.err) is bytes and result.stderr == b"e" * small
    assert spool_fds(tmp_path) == 1  # the read-back one's file is gone
    assert len(result.out) == SPOOL_AT + 1 and result.stdout == bytes(SPOOL_AT + 1)
    assert [a.size for a in hosts.attempts] == [SPOOL_AT + 1 + small]


def test_a_spooled_stream_counts_for_the_cap_on_stdout(tmp_path):
    hosts, run = running(tmp_path, OutputCap(2 * SPOOL_AT, "the format's limit", True))
    assert not say(hosts, run, "out", bytes(SPOOL_AT + 1))
    assert not say(hosts, run, "out", bytes(SPOOL_AT - 1))  # at the cap
    assert say(hosts, run, "out", b"!")
    assert hosts.kills == [("h1", run.aid)] and spool_fds(tmp_path) == 0
    result = end(hosts, run, signal=15)
    assert (result.ok, result.error) == (False, "its output passed the format's limit")
    assert [a.size for a in hosts.attempts] == [2 * SPOOL_AT]


def test_a_cap_on_stdout_lets_stderr_pass_and_keeps_it_in_memory_up_to_spool_at(tmp_path):
    hosts, run = running(tmp_path, OutputCap(100, "the format's limit", stdout_only=True))
    assert not say(hosts, run, "out", bytes(100))  # at the cap
    assert not say(hosts, run, "err", bytes(SPOOL_AT - 100))  # past the quick bound (100)
    assert spool_fds(tmp_path) == 0 and hosts.kills == []
    assert not say(hosts, run, "err", b"e")
    assert spool_fds(tmp_path) == 1
    assert say(hosts, run, "out", b"!")  # one byte of stdout past the cap
    assert hosts.kills == [("h1", run.aid)]
    assert not say(hosts, run, "out", b"late")  # till the kill: ignored, no second Kill
    assert end(hosts, run, signal=15).error == "its output passed the format's limit"


@pytest.mark.parametrize(("first", "then"), [("err", "err"), ("err", "out"), ("out", "err")])
def test_a_cap_on_both_streams_counts_each_byte_of_either(tmp_path, first: str, then: str):
    hosts, run = running(tmp_path, OutputCap(100, "--max-output 100"))
    assert not say(hosts, run, first, bytes(60))
    assert not say(hosts, run, then, bytes(40))  # at the cap
    assert not hosts.kills
    assert say(hosts, run, then, b"!")
    assert hosts.kills == [("h1", run.aid)]
    result = end(hosts, run, signal=15)
    assert (result.ok, result.stdout, result.stderr) == (False, b"", b"")
    assert result.error == "its output passed --max-output 100"
    assert [a.size for a in hosts.attempts] == [100]


def test_one_output_frame_past_the_cap_at_once_is_cut(tmp_path):
    hosts, run = running(tmp_path, OutputCap(100, "--max-output 100"))
    assert say(hosts, run, "out", bytes(101))
    assert end(hosts, run, signal=15).error == "its output passed --max-output 100"
    assert [a.size for a in hosts.attempts] == [0]


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
        (OSError("the spool folder is gone"), "the spool folder is gone"),  # no strerror
    ],
)
def test_a_spool_that_cannot_be_written_cuts_its_attempt_saying_why(
    tmp_path, monkeypatch, error: OSError, why: str
):
    def fails(self: Spool, data: bytes) -> None:
        raise error

    monkeypatch.setattr(Spool, "write", fails)
    hosts, run = running(tmp_path)
    assert say(hosts, run, "out", bytes(SPOOL_AT + 1))
    assert hosts.kills == [("h1", run.aid)]
    result = end(hosts, run, signal=15)
    assert result.error == f"its output could not be spooled to disk ({why})"


@pytest.mark.parametrize("big", ["out", "err"])
def test_a_result_is_spooled_only_while_a_stream_of_it_stays_in_a_spool(tmp_path, big: str):
    """The big stream first, in memory; then a few bytes of the other pass SPOOL_AT in all and
    are the ones spooled: read back small at the end, so the result holds bytes only (a plain
    JobResult). The other way round, the big stream's spool stays, whichever stream it is."""
    small = "err" if big == "out" else "out"
    hosts, run = running(tmp_path)
    say(hosts, run, big, b"B" * (SPOOL_AT - 10))
    say(hosts, run, small, b"s" * 20)
    result = end(hosts, run)
    assert type(result) is JobResult and spool_fds(tmp_path) == 0
    assert (result.stdout, result.stderr)[big == "err"] == b"B" * (SPOOL_AT - 10)
    assert (result.stdout, result.stderr)[small == "err"] == b"s" * 20

    hosts, run = running(tmp_path)
    say(hosts, run, small, b"s" * 20)
    say(hosts, run, big, b"B" * SPOOL_AT)
    result = end(hosts, run)
    assert type(result) is SpooledResult and spool_fds(tmp_path) == 1
    held = (result.out, result.err)
    assert isinstance(held[big == "err"], Spool) and held[small == "err"] == b"s" * 20
