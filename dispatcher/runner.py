"""Start one job attempt in its own process group, reap it, kill its whole group.

A job is `sh -c COMMAND` with stdin from /dev/null (or a pipe, for a Run with `stdin`: see
jobinput.py) and stdout/stderr on pipes. It gets its own
session (and so its own process group, pgid == pid) so that one `killpg` reaches everything it
started, pipelines and background children included. When the job's shell exits, whatever it
left running in its group is killed too: a batch job must not outlive its result.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
import time

from .jobinput import F_SETPIPE_SZ
from .once import OnceExit, OnceOutput
from .polite import niceness_setter
from .protocol import OUTPUT_CHUNK, STDERR, STDOUT, Exit, Message, Output, Run

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from subprocess import Popen
    from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union


class JobProcess:
    """One running attempt: its process, its open output pipes, and how it ended.

    An onall command (`rid` set) runs the same way, in slot 0 (it takes none), and its frames
    are the request's replies (once.py) rather than an attempt's.
    """

    def __init__(
        self,
        run: Run,
        slot: int,
        proc: Popen,  # type: ignore[type-arg]
        rid: Optional[int] = None,
    ) -> None:
        self.aid = run.aid
        self.rid = rid
        self.slot = slot
        self.proc = proc
        self.pid = proc.pid
        self.started = time.monotonic()
        self.pipes: Dict[int, int] = {}  # fd -> STDOUT / STDERR, while still open
        self._files: Dict[int, IO[bytes]] = {}  # closing the file, not the fd, avoids double close
        assert proc.stdout is not None and proc.stderr is not None
        for stream, pipe in ((STDOUT, proc.stdout), (STDERR, proc.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self.pipes[fd] = stream
            self._files[fd] = pipe
        self.status: Optional[int] = None  # raw wait status once reaped
        self.duration = 0.0
        self.cpu = 0.0
        self.maxrss_kb = 0
        self.kill_at: Optional[float] = None  # when a TERM escalates to KILL
        self.doomed = False  # polite mode killed it (--memfree-kill, --yield): never twice
        self.suspended_at: Optional[float] = None  # --yield stopped its group then
        self.drain_left: Optional[float] = None
        """Seconds of reading still granted to pipes an escapee may hold open; None until the
        shell is reaped with a pipe still open."""
        self.drain_until: Optional[float] = None
        """When that grace ends; set only while the pipes are being read, so a paused job's
        grace does not run out unread."""
        self.held: Optional[List[Tuple[int, bytes]]] = None
        """While its Started is held (Setup.fold): the output chunks held with it, by stream;
        None once the Started went (or was never to be held)."""
        self.held_size = 0

    @property
    def exited(self) -> bool:
        return self.status is not None

    def try_reap(self) -> bool:
        """Reap the job if its shell has exited; kill its group's leftovers first.

        `WNOWAIT` lets us see the exit without releasing the pid, so the group id cannot be
        recycled by an unrelated process between our look and our `killpg`.
        """
        if self.status is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is None:
            return False
        kill_group(self.pid, signal.SIGKILL)
        _, status, usage = os.wait4(self.pid, 0)
        self.status = status
        # Reaped here: tell Popen, so it never waits on a pid that may belong to someone else.
        self.proc.returncode = (
            -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        )
        self.duration = time.monotonic() - self.started
        self.cpu = usage.ru_utime + usage.ru_stime
        self.maxrss_kb = usage.ru_maxrss
        return True

    def output_message(self, stream: int, data: bytes) -> Message:
        if self.rid is not None:
            return OnceOutput(self.rid, stream, data)
        return Output(self.aid, stream, data)

    def exit_message(self) -> Message:
        status = self.status if self.status is not None else 0
        if os.WIFSIGNALED(status):
            code, sig = None, os.WTERMSIG(status)
        else:
            code, sig = os.WEXITSTATUS(status), None
        if self.rid is not None:
            return OnceExit(self.rid, code, sig)
        return Exit(self.aid, code, sig, self.duration, self.cpu, self.maxrss_kb)

    def done_fields(self) -> List[Any]:
        """The whole attempt as a Done's fields: it ended while its Started and output were
        held. (Fields, not a Done: several of them travel in one Dones frame.)"""
        exit = self.exit_message()
        assert isinstance(exit, Exit) and self.held is not None
        out = b"".join(data for stream, data in self.held if stream == STDOUT)
        err = b"".join(data for stream, data in self.held if stream != STDOUT)
        return [
            self.aid, self.pid, self.slot, exit.code, exit.signal, exit.duration, exit.cpu,
            exit.maxrss_kb, out, err,
        ]  # fmt: skip

    def drain_clock(self, now: float, reading: bool) -> None:
        """Run the escapee grace clock while the pipes are read, stop it while they are not."""
        if self.drain_left is None:
            return
        if reading and self.drain_until is None:
            self.drain_until = now + self.drain_left
        elif not reading and self.drain_until is not None:
            self.drain_left = max(0.0, self.drain_until - now)
            self.drain_until = None

    def close_pipe(self, fd: int) -> None:
        self.pipes.pop(fd, None)
        pipe = self._files.pop(fd, None)
        if pipe is not None:
            pipe.close()


def spawn(
    run: Run,
    slot: int,
    cwd: Union[str, bytes],
    env: Dict[str, str],
    rid: Optional[int] = None,
    nice: int = 0,
) -> JobProcess:
    """Start the attempt; OSError (bad cwd, no /bin/sh, fork failure) is the caller's to report.

    `nice` > 0: the job runs at that niceness at least (polite mode)."""
    # Imported at the first job, not at the boot: with threading, locale and re, 15 M
    # instructions, a seventh of a boot (callgrind, 3.11), which a dispatcher given no job (3
    # hosts of 4 in a one-job run) never pays. After the first job, a dictionary lookup.
    import subprocess

    job_env = dict(env)
    job_env.update(run.env)
    job_env["ANET_JOB_ID"] = str(run.job)
    job_env["ANET_SLOT"] = str(slot)
    proc = subprocess.Popen(
        [b"/bin/sh", b"-c", run.command],
        stdin=subprocess.PIPE if run.stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=job_env,
        start_new_session=True,
        close_fds=True,
        preexec_fn=niceness_setter(nice),  # None (the fast spawn path) unless asked
    )
    return JobProcess(run, slot, proc, rid)


DEFAULT_PIPE = 1 << 16
"""A new pipe's capacity on Linux: a read that returns this much found the pipe full."""


def widen(fd: int, size: int = OUTPUT_CHUNK) -> None:
    """The job filled its output pipe: it prints a lot. A pipe of OUTPUT_CHUNK lets each read
    take a whole frame's worth, a quarter of the reads and frames for the same bytes (measured:
    1 GB in 64 KiB frames cost the master about as much to take apart as to receive). Only such
    jobs get it: the user's pipe pages are limited (pipe-user-pages-soft), and most jobs print
    a line. Linux only, and a refusal (or an fd that is no pipe) changes nothing but speed."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def read_buffered(fd: int) -> Iterator[bytes]:
    """What a pipe holds right now, in chunks; never waits for a writer to add more.

    FIONREAD bounds the reading: a writer that never stops cannot keep us here.
    """
    try:
        left = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return
    while left > 0:
        try:
            data = os.read(fd, min(left, OUTPUT_CHUNK))
        except BlockingIOError:
            return
        if not data:
            return
        left -= len(data)
        yield data


def kill_group(pgid: int, sig: int) -> None:
    """Signal a whole job group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
