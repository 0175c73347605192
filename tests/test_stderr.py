"""Diagnostics never stall the work (invariant 9): a stderr nobody reads, a frozen terminal, or a
stopped pager cost log lines, never results."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from anet import results
from anet.views.diagnostics import UnblockedStderr
from anet.views.observe import ObserveArgs, RunObservers

ROOT = Path(__file__).resolve().parent.parent


def anet_env() -> dict[str, str]:
    """The test's environment (its own home: tests/conftest.py), with this worktree's anet."""
    return os.environ | {"PYTHONPATH": str(ROOT)}


def read_results_in_thread(stream) -> tuple[list[int], threading.Thread]:
    """Collect result ids as they arrive, in a thread, so the test can bound the wait."""
    ids: list[int] = []

    def reader() -> None:
        for result in results.read(stream):
            ids.append(result.id)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return ids, thread


def unread_pipe() -> tuple[int, int]:
    """A pipe made one page small: a few dozen log lines fill it."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    return read_end, write_end


def unread_terminal() -> tuple[int, int]:
    """A pseudo-terminal whose screen side nobody reads: a frozen terminal (Ctrl-S), a terminal
    emulator that hangs; the live view is drawn there, -v lines above it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    return master, slave


@pytest.mark.parametrize("make_stderr", [unread_pipe, unread_terminal])
def test_a_stderr_nobody_reads_does_not_stop_the_results(tmp_path, make_stderr):
    """Java's Runtime.exec gives anet a stderr pipe it never reads: with -v every failed attempt
    is a log line, so the pipe (or the terminal's buffer) fills after a few dozen jobs."""
    jobs = 300
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"echo {i}; exit 1\n" for i in range(jobs)))
    reader_end, stderr = make_stderr()
    argv = [sys.executable, "-m", "anet", "run", "-v", "--format", "msgpack", "--no-journal",
            "--retries", "2", "-j", "4", str(batch)]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=anet_env()
    )
    os.close(stderr)
    try:
        ids, reader = read_results_in_thread(proc.stdout)
        reader.join(timeout=30)
        assert sorted(ids) == list(range(jobs)), f"{len(ids)} of {jobs} results in 30 s"
        assert proc.wait(timeout=10) == 101  # every job failed: the count, capped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(reader_end)
        proc.stdout.close()


class _NoHosts:
    """A cluster with no host yet: the view's source reads `hosts` and `connected` only."""

    def __init__(self) -> None:
        self.hosts: dict = {}
        self.connected = True


def _status_lines(args: ObserveArgs, tmp_path: Path, monkeypatch) -> str:
    """What the progress view writes on a non-terminal stderr in 0.3 s of a run."""
    monkeypatch.setattr("anet.views.progress.STATUS_INTERVAL", 0.02)
    monkeypatch.delenv("ANET_PROGRESS", raising=False)
    batch = tmp_path / "b.txt"
    batch.write_text("true\n")
    stderr = io.StringIO()

    async def run() -> None:
        with RunObservers(args, stderr, batch, None) as seen:
            async with seen.watching(_NoHosts()):  # type: ignore[arg-type]
                await asyncio.sleep(0.3)  # a run in which nothing happens: only the timer

    asyncio.run(run())
    return stderr.getvalue()


def test_no_periodic_status_on_a_non_terminal_stderr_unless_asked(tmp_path, monkeypatch):
    assert _status_lines(ObserveArgs(), tmp_path, monkeypatch) == ""
    asked = _status_lines(ObserveArgs(progress=True), tmp_path, monkeypatch)
    assert asked.count("done,") >= 3, asked


def test_what_does_not_fit_is_dropped_whole_and_counted_where_it_was_dropped():
    read_end, write_end = unread_pipe()
    stream = UnblockedStderr(write_end, capacity=2000)
    lines = [f"line {i:04d} {'x' * 40}\n" for i in range(1000)]  # 51 KB into 4 KiB + 2000 B
    started = time.monotonic()
    for line in lines:
        stream.write(line)
    assert time.monotonic() - started < 1.0  # no write waited for the reader
    taken = bytearray()

    def reader() -> None:
        while data := os.read(read_end, 65536):
            taken.extend(data)

    thread = threading.Thread(target=reader)
    thread.start()
    stream.write("after\n")
    assert stream.drain(grace=10)
    stream.close()
    os.close(write_end)
    thread.join(timeout=10)
    os.close(read_end)
    *kept, notice, after = taken.decode().splitlines(keepends=True)
    assert kept == lines[: len(kept)] and 0 < len(kept) < len(lines)  # whole lines, in order
    assert notice == (
        f"anet: {len(lines) - len(kept)} diagnostic message(s), {51 * (len(lines) - len(kept))}"
        " bytes, dropped here: stderr was not being read\n"
    )
    assert after == "after\n"


def test_a_closed_stderr_is_not_an_error():
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = UnblockedStderr(write_end)
    started = time.monotonic()
    for _ in range(3):  # EPIPE: discarded, never raised, never waited for
        assert stream.write("nobody hears this\n") == 18
    assert stream.drain(grace=5) is False
    assert time.monotonic() - started < 1.0
    stream.close()
    os.close(write_end)
