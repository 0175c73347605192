"""--line-buffer: the jobs' stdout lines as they come, whole lines interleaved (GNU parallel's
--lb), with --tag; pure for the line keeping, end to end against real sshd hosts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from anet.core.record import JobResult
from anet.streams import linebuffer
from anet.streams.linebuffer import LineBuffer
from anet.streams.sinks import PLAIN


def result(job: int, stdout: bytes) -> JobResult:
    return JobResult(job, True, 0, None, "h", 1, 0.1, stdout, b"")


def feed(buffer: LineBuffer, steps: list[tuple[str, int, int, bytes]]) -> list[bytes]:
    """Run `steps` ("out" or "end", aid, job, data) through `buffer`; the writes it made."""
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    async def main() -> None:
        buffer.write = write
        for kind, aid, job, data in steps:
            if kind == "out":
                await buffer.output(aid, job, data)
            else:
                await buffer.ended(aid, job)

    asyncio.run(main())
    return written


def test_whole_lines_go_out_as_they_complete_and_a_last_line_at_the_end():
    written = feed(
        LineBuffer(PLAIN),
        [
            ("out", 1, 0, b"a1\na"),
            ("out", 2, 1, b"b1\n"),
            ("out", 1, 0, b"2 cont"),
            ("out", 2, 1, b"b2\nb3"),
            ("out", 1, 0, b"inued\n"),
            ("end", 2, 1, b""),
            ("out", 1, 0, b"no break"),
            ("end", 1, 0, b""),
        ],
    )
    assert written == [b"a1\n", b"b1\n", b"b2\n", b"a2 continued\n", b"b3", b"no break"]


def test_tags_prefix_every_line_and_end_the_last_one(monkeypatch):
    tags = {0: b"x y", 1: b"z"}
    forgotten: list[int] = []
    buffer = LineBuffer(PLAIN, tags.__getitem__, forgotten.append)
    written = feed(buffer, [("out", 5, 0, b"1\n2\n3"), ("out", 6, 1, b"q\n"), ("end", 5, 0, b"")])
    assert b"".join(written) == b"x y\t1\nx y\t2\nz\tq\nx y\t3\n"
    # the result of a job whose lines went out writes nothing, and lets its tag go; one that
    # ran in no attempt here (an earlier run's, written again by --resume) is written whole
    assert buffer.encoder.encode(result(0, b"1\n2\n3")) == b""
    assert forgotten == [0]
    assert buffer.encoder.encode(result(7, b"earlier\n")) == b"earlier\n"


def test_a_line_longer_than_the_hold_goes_out_unfinished(monkeypatch):
    monkeypatch.setattr(linebuffer, "HOLD", 10)
    written = feed(LineBuffer(PLAIN), [("out", 1, 0, b"x" * 8), ("out", 1, 0, b"y" * 8)])
    assert written == [b"x" * 8 + b"y" * 8]


def test_lines_of_two_jobs_on_a_host_interleave_as_they_come(cluster, tmp_path):
    flag = tmp_path / "b-printed"
    command = (
        f"if [ {{}} = a ]; then echo A1; printf A; while [ ! -e {flag} ]; do sleep 0.05; done;"
        f" echo 2; else sleep 0.5; echo B1; touch {flag}; fi"
    )
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config)]
    for extra, expected in (
        ([], b"A1\nB1\nA2\n"),
        (["--tag"], b"a\tA1\nb\tB1\na\tA2\n"),
    ):
        flag.unlink(missing_ok=True)
        done = subprocess.run(
            [*argv, "-S", "2/host1", "-q", "--no-journal", "--line-buffer", *extra,
             command, ":::", "a", "b"],
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected
    # Without --line-buffer, each job's output whole, though a's lines came before and after b's
    # (b most likely ends first; a, which sees b's flag within 0.05 s, may end before b's shell)
    flag.unlink()
    grouped = subprocess.run(
        [*argv, "-S", "2/host1", "-q", "--no-journal", "--format", "plain", command,
         ":::", "a", "b"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert grouped.returncode == 0, grouped.stderr
    assert grouped.stdout in (b"B1\nA1\nA2\n", b"A1\nA2\nB1\n")


def test_line_buffer_goes_with_plain_only_and_not_with_keep_order():
    for extra, said in (
        (["--format", "jsonl"], b"--line-buffer goes with --format plain, not jsonl"),
        (["-k"], b"it does not go with -k"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "anet", "--lb", *extra, "echo", ":::", "x"],
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 255 and said in done.stderr
        assert done.stderr.count(b"\n") == 1
