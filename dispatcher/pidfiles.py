"""Remember every running job group on disk, so a dispatcher's successor can kill its orphans.

A dispatcher killed with SIGKILL cannot kill its jobs: they live in their own sessions and are
reparented to init. Each dispatcher therefore keeps one file per running job group under
`<workdir>/.pids/<its pid>-<its start time>/`, and a new dispatcher first kills the groups of
every predecessor that is no longer alive. Start times (from /proc) make sure a recycled pid is
never mistaken for an orphan; where /proc is missing, existence alone has to do.

Runs on the end machines: Python 3.8+, stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Optional


def start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):  # no /proc (macOS, BSD): fall back to existence
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


class PidFiles:
    """This dispatcher's directory of running job groups."""

    def __init__(self, workdir: str) -> None:
        self.root = os.path.join(workdir, ".pids")
        me = os.getpid()
        self.dir = os.path.join(self.root, "%d-%s" % (me, start_time(me)))
        os.makedirs(self.dir, 0o700, exist_ok=True)

    def add(self, pgid: int) -> None:
        with open(os.path.join(self.dir, str(pgid)), "w") as entry:
            entry.write(start_time(pgid) or "?")

    def remove(self, pgid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, str(pgid)))

    def close(self) -> None:
        _remove_dir(self.dir)

    def kill_orphans(self) -> int:
        """Kill the job groups of every dead predecessor; returns how many groups were killed."""
        killed = 0
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if path == self.dir or _alive(name):
                continue
            for entry in os.listdir(path):
                killed += _kill_if_same(os.path.join(path, entry), entry)
            _remove_dir(path)
        return killed


def _remove_dir(path: str) -> None:
    """Remove a directory of pid files (flat: this module writes no folder into it), quietly.
    Not shutil.rmtree: importing shutil costs the dispatcher 4 ms at every start."""
    with contextlib.suppress(OSError):
        for name in os.listdir(path):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)


def _alive(name: str) -> bool:
    """Is the dispatcher that named its directory `<pid>-<start time>` still running?"""
    pid, _, started = name.partition("-")
    if not pid.isdigit():
        return False
    now = start_time(int(pid))
    return now is not None and (now == started or "?" in (now, started))


def _kill_if_same(path: str, entry: str) -> int:
    if not entry.isdigit():
        return 0
    try:
        with open(path) as recorded:
            started = recorded.read().strip()
    except OSError:
        return 0
    now = start_time(int(entry))
    if now is None or (now != started and "?" not in (now, started)):
        return 0  # the group is gone, or its pid now belongs to someone else
    try:
        os.killpg(int(entry), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return 0
    return 1
