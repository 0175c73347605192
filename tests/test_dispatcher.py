"""The dispatcher alone, driven over its stdin/stdout pipes as the master would (no SSH).

It runs as its own process (its loop owns signal handlers and the SIGCHLD wakeup fd), fed with
real frames; the test plays a master that can stop reading, or a user that signals it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import IO

import pytest

from dispatcher.__main__ import CUT_NOTE, DRAIN_GRACE, HIGH_WATER
from dispatcher.protocol import (
    BOOT_FRAMES,
    BOOT_MARK,
    INPUT_CHUNK,
    INPUT_WINDOW,
    OUTPUT_CHUNK,
    PROTOCOL_VERSION,
    STDOUT,
    Bye,
    Exit,
    FrameDecoder,
    Hello,
    Input,
    InputAck,
    Kill,
    Message,
    Output,
    Run,
    Setup,
    Started,
    encode,
)

ROOT = Path(__file__).resolve().parent.parent
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class DispatcherProcess:
    """`python -m dispatcher` with its protocol on pipes; frames in, frames out."""

    def __init__(
        self,
        home: Path,
        slots: int,
        dead_after: float = 0.0,
        fold: float = 0.0,
        flags: tuple[str, ...] = (),
        stderr: IO[bytes] | None = None,
    ) -> None:
        """`flags` go to the interpreter (`-X importtime`), its stderr to `stderr` if given."""
        self.proc = subprocess.Popen(
            [sys.executable, *flags, "-c", "from dispatcher.__main__ import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, "ANET_HOME": str(home), "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.fileno()
        self.decoder = FrameDecoder()
        self.received: list[Message] = []
        boot = self._read_exactly(len(BOOT_MARK) + 1)
        assert boot == BOOT_MARK + BOOT_FRAMES
        (hello,) = self.read_until(lambda m: isinstance(m, Hello))
        self.hello = hello
        self.send(Setup(slots, "local", "", 60.0, dead_after, fold=fold))

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(self.out, n - len(data))
            assert chunk, "the dispatcher exited during start-up"
            data += chunk
        return data

    def send(self, *messages: Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(encode(m) for m in messages))
        self.proc.stdin.flush()

    def read_until(self, done, timeout: float = 60.0) -> list[Message]:
        """Messages from now on, up to and including the first for which done(msg) holds."""
        deadline = time.monotonic() + timeout
        got: list[Message] = []
        while True:
            for index, msg in enumerate(self.received):
                got.append(msg)
                if done(msg):  # what came after it is the next call's
                    self.received = self.received[index + 1 :]
                    return got
            self.received = []
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; last frames: {got[-3:]}"
            ready, _, _ = select.select([self.out], [], [], left)
            if ready:
                data = os.read(self.out, 1 << 20)
                assert data, f"the dispatcher exited; last frames: {got[-3:]}"
                self.received = self.decoder.feed(data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened in {timeout}s: {what}"
        time.sleep(0.02)


def read_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().endswith("\n"), 30, f"{path} written")
    return int(path.read_text())


@pytest.fixture
def dispatcher_process(tmp_path):
    made: list[DispatcherProcess] = []

    def start(slots: int) -> DispatcherProcess:
        made.append(DispatcherProcess(tmp_path / "home", slots))
        return made[-1]

    yield start
    for each in made:
        each.close()


def outputs(messages: list[Message], aid: int) -> bytes:
    return b"".join(
        m.data for m in messages if isinstance(m, Output) and m.aid == aid and m.stream == STDOUT
    )


def test_a_master_that_stops_reading_past_the_drain_grace_loses_no_output(
    dispatcher_process, tmp_path
):
    """Back-pressure pauses the jobs' pipes; a job that ends meanwhile keeps all its output."""
    d = dispatcher_process(2)
    big = 4 * HIGH_WATER
    small_pid = tmp_path / "small.pid"
    d.send(
        Run(1, 0, b"head -c %d /dev/zero" % big),
        Run(2, 1, b"echo $$ > %s; sleep 0.5; echo small" % str(small_pid).encode()),
    )
    # The master reads nothing now: the big job fills our pipe and the dispatcher's buffer,
    # which pauses every job's pipes; the small job ends while paused.
    pid = read_pid(small_pid)
    wait_for(lambda: not alive(pid), 30, "the small job's shell was reaped")
    time.sleep(DRAIN_GRACE + 1.0)  # the master stays away for longer than the grace
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
    got += d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    exits = {m.aid: m for m in got if isinstance(m, Exit)}
    assert exits[2].code == 0 and exits[1].code == 0
    assert outputs(got, 2) == b"small\n"
    assert outputs(got, 1) == bytes(big)


def stderr_of(messages: list[Message], aid: int) -> bytes:
    return b"".join(
        m.data for m in messages if isinstance(m, Output) and m.aid == aid and m.stream != STDOUT
    )


def test_an_escapee_holding_the_pipes_is_cut_after_the_grace_and_the_cut_is_said(
    dispatcher_process, tmp_path
):
    """A job that leaves a process of another session on its stdout: what that process wrote
    arrives, the result does not wait for it for ever, and the cut is told in the job's stderr."""
    d = dispatcher_process(1)
    escapee_pid = tmp_path / "escapee.pid"
    escape = b"setsid sh -c 'echo $$ > %s; echo late; exec sleep 60' &" % str(escapee_pid).encode()
    d.send(Run(1, 0, b"echo early; " + escape + b" sleep 0.2"))
    try:
        started = time.monotonic()
        got = d.read_until(lambda m: isinstance(m, Exit))
        waited = time.monotonic() - started
        assert got[-1].code == 0  # the job's own status: its shell did succeed
        assert sorted(outputs(got, 1).splitlines()) == [b"early", b"late"]
        assert stderr_of(got, 1) == CUT_NOTE
        assert DRAIN_GRACE <= waited < DRAIN_GRACE + 5
    finally:
        os.kill(read_pid(escapee_pid), signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_dispatcher_told_to_die_kills_its_jobs_first(dispatcher_process, tmp_path, sig):
    d = dispatcher_process(3)
    pid_files = [tmp_path / f"job{i}.pid" for i in range(3)]
    d.send(
        *(
            Run(i, i, b"echo $$ > %s; exec sleep 300" % str(p).encode())
            for i, p in enumerate(pid_files)
        )
    )
    pids = [read_pid(p) for p in pid_files]
    try:
        d.proc.send_signal(sig)
        d.read_until(lambda m: isinstance(m, Bye), timeout=10)
        assert d.proc.wait(timeout=10) == 0
        assert [p for p in pids if alive(p)] == []
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


_NOT_FROM_A_MASTER: list[Message] = [
    Started(1, 100, 1),
    Exit(1, 0, None, 0.1, 0.1, 1),
    Hello(PROTOCOL_VERSION, "h", 1, "3.11", 0.0, 1, "/w"),
    Bye(),
    Setup(1, "again", "", 60.0, 0.0),
]


@pytest.mark.parametrize("frame", _NOT_FROM_A_MASTER, ids=lambda m: type(m).__name__)
def test_a_frame_no_master_sends_ends_the_dispatcher_and_its_jobs(
    dispatcher_process, tmp_path, capfd, frame: Message
):
    """What only a dispatcher sends, or a second Setup, is a broken master: the dispatcher
    stops as for a corrupt frame (one line on stderr, jobs killed, Bye), never ignores it."""
    d = dispatcher_process(1)
    pid_file = tmp_path / "job.pid"
    d.send(Run(1, 0, b"echo $$ > %s; exec sleep 300" % str(pid_file).encode()))
    pid = read_pid(pid_file)
    try:
        d.send(frame)
        d.read_until(lambda m: isinstance(m, Bye), timeout=10)
        assert d.proc.wait(timeout=10) == 0
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    name = type(frame).__name__
    said = (
        "the master sent a second Setup"
        if isinstance(frame, Setup)
        else f"the master sent {name}, which only the dispatcher sends"
    )
    assert f"anet dispatcher: {said}\n" in capfd.readouterr().err


def _drain(fd: int, timeout: float) -> bool:
    """Read (and drop) what the program wrote on its terminal; False once it closed it."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return True
    try:
        return bool(os.read(fd, 65536))
    except OSError:  # EIO: the last holder of the terminal's other side closed it
        return False


def test_ctrl_c_at_a_terminal_leaves_no_local_job_running(tmp_path):
    """The terminal sends ^C's SIGINT to its whole foreground group: anet must still stop its
    local jobs, which run in their own sessions and would outlive a dispatcher killed by it."""
    pids = tmp_path / "pids"
    pids.mkdir()
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"echo $$ > {pids}/{i}.pid; exec sleep 300\n" for i in range(4)))
    argv = [sys.executable, "-m", "anet", "-S", "4/:", "--no-journal", "-q", str(batch)]
    env = {**os.environ, "ANET_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("ANET_HOSTS", None)
    child, terminal = pty.fork()
    if child == 0:  # a new session whose controlling terminal is the pty, in its foreground
        os.execve(sys.executable, argv, env)
    jobs: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(jobs) < 4:
            assert _drain(terminal, 0.05) and time.monotonic() < deadline, "jobs never started"
            jobs = [int(p.read_text()) for p in pids.glob("*.pid") if p.read_text().endswith("\n")]
        os.write(terminal, b"\x03")  # the user's Ctrl-C, as the terminal driver delivers it
        deadline = time.monotonic() + 30
        while _drain(terminal, 0.1):
            assert time.monotonic() < deadline, "anet did not exit after Ctrl-C"
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 130
        assert [pid for pid in jobs if alive(pid)] == []
    finally:
        for pid in jobs:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if alive(child):
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
        os.close(terminal)


# -- a job's stdin: Input frames in, InputAcks out (the test keeps within the window) ----------


def acked(messages: list, aid: int) -> int:
    return sum(m.size for m in messages if isinstance(m, InputAck) and m.aid == aid)


def test_a_job_reads_its_input_to_the_end_and_every_byte_is_acknowledged(dispatcher_process):
    d = dispatcher_process(2)
    data = b"".join(b"line %d\n" % i for i in range(100_000))  # ~900 KB: several chunks
    d.send(Run(1, 0, b"wc -l; wc -c", stdin=True))
    chunks = [data[at : at + INPUT_CHUNK] for at in range(0, len(data), INPUT_CHUNK)]
    d.send(*(Input(1, chunk) for chunk in chunks), Input(1, b"", True))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    assert outputs(got, 1).split() == [b"100000", b"0"]  # the first wc read all of it
    assert acked(got, 1) == len(data)
    assert got[-1].code == 0


def test_a_job_that_never_reads_holds_a_window_and_stalls_no_other_job(dispatcher_process):
    d = dispatcher_process(2)
    d.send(Run(1, 0, b"sleep 300", stdin=True), Run(2, 1, b"cat", stdin=True))
    window = [Input(1, b"x" * INPUT_CHUNK) for _ in range(INPUT_WINDOW // INPUT_CHUNK)]
    d.send(*window)  # more than a pipe holds: the rest waits in the dispatcher
    d.send(Input(2, b"hello\n"), Input(2, b"", True))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
    assert outputs(got, 2) == b"hello\n"
    assert 0 < acked(got, 1) < INPUT_WINDOW  # the pipe took some, the dispatcher holds the rest
    d.send(Kill(1, 1.0))
    assert d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)[-1].signal is not None


def test_a_job_that_exits_without_reading_ends_with_its_input_thrown_away(dispatcher_process):
    d = dispatcher_process(1)
    d.send(Run(1, 0, b"exec true", stdin=True))
    d.read_until(lambda m: isinstance(m, Exit) and m.aid == 1)
    d.send(Run(2, 1, b"exec sleep 0.3", stdin=True))
    d.send(*(Input(2, b"y" * INPUT_CHUNK) for _ in range(INPUT_WINDOW // INPUT_CHUNK)))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
    assert got[-1].code == 0
    closed = [m for m in got if isinstance(m, InputAck) and m.closed]
    assert len(closed) == 1  # the EPIPE once the job exited: the master is told to stop
    assert acked(got, 2) == INPUT_WINDOW
    d.send(Input(2, b"late"), Input(1, b"", True))  # about ended attempts: ignored
    d.send(Run(3, 2, b"echo still here"))
    got = d.read_until(lambda m: isinstance(m, Exit) and m.aid == 3)
    assert outputs(got, 3) == b"still here\n"
    assert not [m for m in got if isinstance(m, InputAck)]


def test_a_pipe_closed_early_never_silences_the_pipe_that_reuses_its_fd(dispatcher_process):
    """A job whose input is all in (its pipe closed) runs on; a later job's stdin pipe may take
    its fd number. When the first job ended, the dispatcher once stopped watching that number:
    the later job, its pipe full, waited for room it was never told of."""
    d = dispatcher_process(4)
    big = b"b" * 250_000  # more than a pipe holds: the rest waits for room
    for k in range(12):
        a, b = 2 * k + 1, 2 * k + 2
        d.send(Run(a, a, b"cat > /dev/null; sleep 0.1", stdin=True), Input(a, b"a", True))
        d.send(Run(b, b, b"sleep 0.2; wc -c", stdin=True), Input(b, big), Input(b, b"", True))
    got: list[Message] = []
    while len({m.aid for m in got if isinstance(m, Exit)}) < 24:
        got += d.read_until(lambda m: isinstance(m, Exit), timeout=10)
    assert [outputs(got, 2 * k + 2) for k in range(12)] == [b"250000\n"] * 12


def test_a_job_that_fills_its_pipe_gets_one_of_a_whole_chunk(dispatcher_process):
    """A job that fills its output pipe prints a lot: its pipe grows to OUTPUT_CHUNK, so each
    read takes a whole frame's worth (a quarter of the frames a 64 KiB pipe gives the master).
    The test stops reading, so the dispatcher pauses and the job's pipe fills; once reading
    resumes, the first read of that pipe finds it full."""
    d = dispatcher_process(1)
    d.send(Run(1, 0, b"exec head -c %d /dev/zero" % (8 * HIGH_WATER)))
    (started,) = [m for m in d.read_until(lambda m: isinstance(m, Started)) if m.aid == 1]
    pipe = os.open(f"/proc/{started.pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK)  # never read
    try:

        def buffered() -> int:
            return struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0" * 4))[0]

        wait_for(lambda: buffered() >= 1 << 16, 30, "the paused job's pipe is full")
        got = 0
        while got < 2 * HIGH_WATER:
            (msg,) = d.read_until(lambda m: True)
            got += len(msg.data) if isinstance(msg, Output) else 0
        assert fcntl.fcntl(pipe, F_GETPIPE_SZ) == OUTPUT_CHUNK
    finally:
        os.close(pipe)
