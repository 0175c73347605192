"""The example consumers in batch_examples/ read what anet.streams.sinks writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anet.core.record import JobResult
from anet.streams.sinks import encoder_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "batch_examples"

RECORDS = [
    JobResult(1, True, 0, None, "alpha", 1, 0.5, b"2\n3\n5\n", b""),
    JobResult(2, False, 1, None, "beta", 3, 1.0, b"", b"oops\n"),
    JobResult(300, True, 0, None, "alpha", 1, 0.1, b"", b""),
    JobResult(2**32 - 1, True, 0, None, "gamma", 2, 2.0, b"x" * 70 + b"\nsecond\n", b""),
    JobResult(70000, True, 0, None, "beta", 1, 0.2, b"tab\there\x00\xff no newline", b""),
    JobResult(5, False, None, 9, "gamma", 1, 9.0, b"killed", b""),
    JobResult(6, False, None, None, "", 2, 0.0, b"", b"", error="no host left"),
]


def stream(name: str) -> bytes:
    encoder = encoder_for(name)
    return encoder.header + b"".join(encoder.encode(r) for r in RECORDS)


@pytest.fixture(scope="module")
def c_consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    binary = tmp_path_factory.mktemp("consumer") / "consumer"
    command = ["cc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2"]
    subprocess.run([*command, "-o", str(binary), str(EXAMPLES / "consumer.c")], check=True)
    return binary


def run(command: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, input=data, capture_output=True, env=env, timeout=60)


def test_c_consumer_reads_the_anet_stream(c_consumer: Path) -> None:
    done = run([str(c_consumer)], stream("anet"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert done.stdout.decode() == (
        "job 1: 6 bytes, first line: 2\n"
        "job 300: 0 bytes, first line: \n"
        f"job 4294967295: 78 bytes, first line: {'x' * 60}\n"
        "job 70000: 21 bytes, first line: tab.here.. no newline\n"
        "total: 4 jobs, 105 bytes\n"
    )


def test_c_consumer_reads_an_empty_stream(c_consumer: Path) -> None:
    done = run([str(c_consumer)], b"")
    assert (done.returncode, done.stdout) == (0, b"total: 0 jobs, 0 bytes\n")


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (14 + 3, "record at byte 14 ends at byte 17"),  # in a header
        (14 + 8 + 8 + 50, "record at byte 22 ends at byte 80"),  # in a payload
    ],
)
def test_c_consumer_rejects_a_truncated_stream(c_consumer: Path, cut: int, message: str) -> None:
    done = run([str(c_consumer)], stream("anet")[:cut])
    assert done.returncode == 1
    assert done.stderr.decode() == f"consumer: truncated stream: {message}\n"
    assert done.stdout.decode().splitlines()[0] == "job 1: 6 bytes, first line: 2"
    assert "total" not in done.stdout.decode()


PY_SUMMARY = (
    "job 1 on alpha: ok, 6 bytes\n"
    "job 2 on beta: exit 1, 0 bytes\n"
    "job 300 on alpha: ok, 0 bytes\n"
    "job 4294967295 on gamma: ok, 78 bytes\n"
    "job 70000 on beta: ok, 21 bytes\n"
    "job 5 on gamma: signal 9, 6 bytes\n"
    "job 6: error: no host left, 0 bytes\n"
    "7 jobs, 3 failed, 111 bytes of output\n"
)


@pytest.mark.parametrize("name", ["msgpack", "jsonl", "text"])
def test_python_consumer_summarises_any_format(name: str) -> None:
    done = run([sys.executable, str(EXAMPLES / "consumer.py")], stream(name))
    assert (done.returncode, done.stderr) == (1, b"")  # 1: some jobs failed
    assert done.stdout.decode() == PY_SUMMARY


def test_python_consumer_reads_the_anet_stream() -> None:
    done = run([sys.executable, str(EXAMPLES / "consumer.py")], stream("anet"))
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode().splitlines() == [
        "job 1: ok, 6 bytes",
        "job 300: ok, 0 bytes",
        "job 4294967295: ok, 78 bytes",
        "job 70000: ok, 21 bytes",
        "4 jobs, 0 failed, 105 bytes of output",
    ]


def test_python_consumer_reports_a_corrupt_stream() -> None:
    done = run([sys.executable, str(EXAMPLES / "consumer.py")], stream("msgpack")[:-3])
    assert done.returncode == 2
    assert done.stderr.decode().startswith("consumer.py: msgpack result stream: truncated record")
    assert done.stdout.decode().count("\n") == 6  # the complete records came first


def test_c_consumer_reads_a_stream_arriving_in_pieces(c_consumer: Path) -> None:
    with subprocess.Popen([str(c_consumer)], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        data = stream("anet")
        for start in range(0, len(data), 5):
            proc.stdin.write(data[start : start + 5])
            proc.stdin.flush()
        proc.stdin.close()
        output = proc.stdout.read()
    assert proc.returncode == 0
    assert output.endswith(b"total: 4 jobs, 105 bytes\n")
