"""Big outputs, the pure parts: the engine spools past SPOOL_AT and kills an attempt whose output
passes a cap; every encoder writes a spooled result in pieces, byte for byte what it writes for
the same result held in memory. The real runs (1 GB, RSS measured) are in test_bigout.py."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
from pathlib import Path

import pytest
from test_engine import Hosts, jobs

from anet import results
from anet.core import spool as spool_module
from anet.core.engine import Engine, HostStats, RunPolicy
from anet.core.record import JobResult, SpooledResult
from anet.core.spool import SPOOL_AT, OutputCap, Parking, Spool
from anet.streams import sinks
from anet.streams.sinks import FORMATS, PLAIN, TAGGED_TEXT
from dispatcher.protocol import STDERR, STDOUT, Exit, Output

PIECE = 256 << 10


def spool_fds(directory: Path) -> int:
    """Open files of this process that are spools made in `directory` (unlinked: "(deleted)")."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(directory)) and target.endswith("(deleted)")
    return count


def engine_in(tmp_path: Path, n: int = 1, **policy) -> Hosts:
    stats: dict[str, HostStats] = {}
    engine = Engine(jobs(n), RunPolicy(speculate=False, **policy), stats, spool_dir=tmp_path)
    hosts = Hosts(engine, stats)
    hosts.ready("h1", n)
    return hosts


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(size))


def test_a_small_output_stays_in_memory_and_a_big_one_goes_to_a_private_unlinked_file(tmp_path):
    hosts = engine_in(tmp_path, 2)
    small = hosts.start("h1", 0)
    big = hosts.start("h1", 1, slot=2)
    data = pattern(3 * SPOOL_AT + 5)
    hosts.say("h1", Output(small.aid, STDOUT, b"0\n"))
    for at in range(0, len(data), PIECE):
        hosts.say(
            "h1", Output(big.aid, STDOUT if at % (2 * PIECE) else STDERR, data[at : at + PIECE])
        )
    assert spool_fds(tmp_path) == 2  # one per stream, and no name in the directory
    assert os.listdir(tmp_path) == []
    hosts.finish("h1", 0)
    hosts.finish("h1", 1)
    plain, spooled = sorted(hosts.results, key=lambda r: r.id)
    assert type(plain) is JobResult and plain.out == b"0\n"
    assert type(spooled) is SpooledResult and isinstance(spooled.out, Spool)
    stdout = b"".join(data[at : at + PIECE] for at in range(PIECE, len(data), 2 * PIECE))
    stderr = b"".join(data[at : at + PIECE] for at in range(0, len(data), 2 * PIECE))
    assert spooled.stdout == stdout and spooled.stderr == stderr  # read lazily, whole
    assert b"".join(spooled.out.chunks(1000)) == stdout
    assert spooled.output_size == len(data) and hosts.attempts[-1].size == len(data)
    del spooled, hosts
    assert spool_fds(tmp_path) == 0  # the files go with the result


def test_a_timed_out_attempt_keeps_its_spooled_output_for_its_failure(tmp_path):
    hosts = engine_in(tmp_path, 1, retries=0, timeout=5.0)
    run = hosts.start("h1", 0)
    hosts.say("h1", Output(run.aid, STDOUT, bytes(SPOOL_AT + 1)))
    assert spool_fds(tmp_path) == 1
    hosts.advance(5.0)  # killed, but its output is the failure's: kept
    assert hosts.kills == [("h1", run.aid)]
    hosts.say("h1", Exit(run.aid, None, 15, 5.0, 0.0, 0))
    (result,) = hosts.results
    assert not result.ok and len(result.out) == SPOOL_AT + 1


def test_an_attempt_whose_output_is_moot_gives_its_spool_back_at_its_kill(tmp_path):
    hosts = engine_in(tmp_path, 2)
    runs = [hosts.start("h1", 0), hosts.start("h1", 1, slot=2)]
    for run in runs:
        hosts.say("h1", Output(run.aid, STDOUT, bytes(SPOOL_AT + 1)))
    assert spool_fds(tmp_path) == 2
    hosts.engine.abort()  # as --halt now; a copy that lost the race is killed the same way
    hosts.round()
    assert sorted(aid for _, aid in hosts.kills) == sorted(r.aid for r in runs)
    assert spool_fds(tmp_path) == 0  # before their Exits come
    hosts.say("h1", Output(runs[0].aid, STDOUT, bytes(SPOOL_AT + 1)))  # late output: ignored
    assert spool_fds(tmp_path) == 0


def test_output_past_a_cap_kills_the_attempt_and_fails_the_job_with_no_retry(tmp_path):
    cap = OutputCap(3 * SPOOL_AT, "--max-output 3M")
    hosts = engine_in(tmp_path, 1, retries=2, caps=(cap,))
    run = hosts.start("h1", 0)
    for _ in range(3):
        hosts.say("h1", Output(run.aid, STDERR, bytes(SPOOL_AT)))
    assert hosts.kills == [] and spool_fds(tmp_path) == 1
    hosts.say("h1", Output(run.aid, STDOUT, b"x"))
    assert hosts.kills == [("h1", run.aid)]
    assert spool_fds(tmp_path) == 0  # what it printed is moot: its space comes back now
    hosts.say("h1", Output(run.aid, STDOUT, bytes(SPOOL_AT)))  # still printing till the kill
    hosts.say("h1", Exit(run.aid, None, 15, 1.0, 0.0, 0))
    (result,) = hosts.results
    assert not result.ok and result.signal == 15 and result.attempts == 1
    assert result.error == "its output passed --max-output 3M"
    assert (result.stdout, result.stderr) == (b"", b"")
    assert [r.aid for r in hosts.runs["h1"]] == [run.aid] and hosts.engine.finished  # no retry
    assert hosts.attempts[-1].size == 3 * SPOOL_AT  # what it had printed within the cap


def test_a_stdout_cap_leaves_stderr_alone(tmp_path):
    cap = OutputCap(100, "the anet format's limit", stdout_only=True)
    hosts = engine_in(tmp_path, 1, caps=(cap,))
    run = hosts.start("h1", 0)
    hosts.say("h1", Output(run.aid, STDERR, bytes(1000)), Output(run.aid, STDOUT, bytes(100)))
    assert hosts.kills == []
    hosts.say("h1", Output(run.aid, STDOUT, b"!"))
    assert hosts.kills == [("h1", run.aid)]


def test_a_spool_that_cannot_be_written_fails_its_job_not_the_run(tmp_path, monkeypatch):
    def full(self: Spool, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Spool, "write", full)
    hosts = engine_in(tmp_path, 2, retries=0)
    run = hosts.start("h1", 0)
    hosts.say("h1", Output(run.aid, STDOUT, bytes(SPOOL_AT + 1)))
    assert hosts.kills == [("h1", run.aid)]
    hosts.say("h1", Exit(run.aid, None, 15, 1.0, 0.0, 0))
    hosts.start("h1", 1, slot=2)
    hosts.finish("h1", 1, b"fine\n")
    failed, fine = sorted(hosts.results, key=lambda r: r.id)
    assert failed.error == "its output could not be spooled to disk (No space left on device)"
    assert fine.ok and fine.stdout == b"fine\n"


def spooled_result(tmp_path: Path, stdout: bytes, stderr: bytes, **fields) -> SpooledResult:
    held = []
    for data in (stdout, stderr):
        if len(data) < 1000:
            held.append(data)
            continue
        spool = Spool(tmp_path)
        spool.write(data)
        held.append(spool)
    base = dict(id=7, ok=True, exit_code=0, signal=None, host="h1", attempts=1, duration=0.25)
    return SpooledResult(**{**base, **fields}, stdout=held[0], stderr=held[1])


LINES = b"".join(b"line %d of a long output\n" % i for i in range(200_000)) + b"no end"


@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [
        (LINES, b"oops\n"),
        (pattern(3 << 20), LINES),
        (b"", pattern(5000)),
        ("é".encode() * 9000, b""),
    ],
    ids=["lines", "binary-and-lines", "stderr-only", "utf8"],
)
def test_every_format_writes_a_spooled_result_as_it_writes_it_from_memory(tmp_path, stdout, stderr):
    for ok in (True, False):
        spooled = spooled_result(tmp_path, stdout, stderr, ok=ok, exit_code=0 if ok else 2)
        in_memory = JobResult(
            **{f.name: getattr(spooled, f.name) for f in dataclasses.fields(spooled)}
        )
        assert spooled == in_memory
        for encoder in (*FORMATS.values(), TAGGED_TEXT, PLAIN):
            pieces = list(encoder.parts(spooled))
            assert max(map(len, pieces), default=0) <= 2 << 20  # never the whole output
            written = b"".join(pieces)
            if encoder.name == "jsonl":  # a spooled output goes as base64 whatever it is
                assert b"_base64" in written
                (back,) = results.read(io.BytesIO(written), "jsonl")
                assert back == in_memory
            else:
                assert written == encoder.encode(in_memory), encoder.name
            assert b"".join(encoder.parts(in_memory)) == encoder.encode(in_memory)


def test_an_output_the_anet_format_cannot_carry_is_refused_before_its_first_byte(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sinks, "ANET_MAX_STDOUT", 4999)
    result = spooled_result(tmp_path, bytes(5000), b"")
    with pytest.raises(ValueError, match="5000 bytes, over the 4999-byte record limit"):
        next(FORMATS["anet"].parts(result))
    cap = sinks.output_cap(FORMATS["anet"])
    assert cap == OutputCap(4999, "4999 bytes on stdout, the most the anet format carries", True)
    assert b"".join(FORMATS["msgpack"].parts(result))  # the others carry it


def test_parked_spools_share_one_file_and_it_goes_with_the_last_of_them(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "PARK_FILE", 25_000)
    parking = Parking(tmp_path)
    spools = []
    for i in range(10):
        spool = Spool(tmp_path)
        spool.write(pattern(5000 + i, i))
        spools.append(spool)
    assert spool_fds(tmp_path) == 10
    parked = [parking.park(spool) for spool in spools]
    for spool in spools:
        spool.close()
    assert spool_fds(tmp_path) == 3  # 10 outputs of 5 KB in files of 25 KB at most
    assert all(p.parked for p in parked) and not any(s.parked for s in spools)
    for i, spool in enumerate(parked):
        assert spool.read() == pattern(5000 + i, i) and spool.tail(7) == pattern(5000 + i, i)[-7:]
        assert b"".join(spool.chunks(999, 10, 4000)) == pattern(5000 + i, i)[10:4000]
    assert parking.park(parked[0]) is parked[0]
    del spools
    for spool in parked[:3]:
        spool.close()
    assert spool_fds(tmp_path) == 3  # the first file still has a slice alive
    del parked[:5], parking
    assert spool_fds(tmp_path) == 2
    parked.clear()
    assert spool_fds(tmp_path) == 0
