"""The dispatcher's own ways of noticing that its master is gone, each path alone.

A dispatcher whose master vanished must kill its jobs and exit: a cut-off machine runs no
orphan work. It notices in two ways, and each is tested here with the other out of the game:
- EOF on its stdin (the SSH channel closed): `dead_after` is off, and the test keeps reading
  its stdout, so no write can fail with EPIPE and stand in for the EOF;
- `dead_after` seconds of silence (a frozen master, a partition that closes nothing): stdin
  stays open, and heartbeats sent before the silence show that hearing keeps it alive.
The heartbeat interval is 60 s in both, so no heartbeat of its own runs into a closed pipe.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_dispatcher import DispatcherProcess, alive, read_pid

from dispatcher.protocol import Bye, Heartbeat, Message, Run


def _sleeper(pid_file: Path) -> Run:
    return Run(1, 0, b"echo $$ > %s; exec sleep 300" % str(pid_file).encode())


def _stopped_with_its_job_killed(d: DispatcherProcess, pid: int) -> list[Message]:
    """The dispatcher's last frames up to Bye; it exited 0 and its job is gone."""
    try:
        last = d.read_until(lambda m: isinstance(m, Bye), timeout=15)
        assert d.proc.wait(timeout=15) == 0
        assert not alive(pid), "the job outlived its dispatcher"
        return last
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_eof_on_stdin_alone_kills_the_jobs_and_ends_the_dispatcher(tmp_path):
    d = DispatcherProcess(tmp_path / "home", 1, dead_after=0.0)
    try:
        pid_file = tmp_path / "job.pid"
        d.send(_sleeper(pid_file))
        pid = read_pid(pid_file)
        assert d.proc.stdin is not None
        d.proc.stdin.close()  # the master is gone; its reading end stays open (no EPIPE)
        _stopped_with_its_job_killed(d, pid)
    finally:
        d.close()


def test_silence_past_dead_after_alone_kills_the_jobs_and_ends_the_dispatcher(tmp_path):
    dead_after = 1.0
    d = DispatcherProcess(tmp_path / "home", 1, dead_after=dead_after)
    try:
        pid_file = tmp_path / "job.pid"
        d.send(_sleeper(pid_file))
        pid = read_pid(pid_file)
        # Heard from every 0.2 s for twice `dead_after`: it must stay, and its job too.
        hearing_until = time.monotonic() + 2 * dead_after
        while time.monotonic() < hearing_until:
            d.send(Heartbeat(0.0))
            time.sleep(0.2)
            assert d.proc.poll() is None and alive(pid), "died while the master still spoke"
        silent_from = time.monotonic()
        _stopped_with_its_job_killed(d, pid)  # stdin still open: only the silence ends it
        waited = time.monotonic() - silent_from
        assert dead_after - 0.3 <= waited < dead_after + 10, waited
    finally:
        d.close()
