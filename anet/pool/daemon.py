"""A pool's life as a process: one per name (a lock held for its whole life), in the
foreground for a supervisor, or detached from the terminal (`anet up`'s default).

Detaching is the classic double fork: the first child calls setsid (a new session, no
controlling terminal), the second can never acquire one; the daemon's stdin is /dev/null and
its stdout and stderr its log file. The command that started it waits on a pipe until the pool
answers on its socket (or says in one line why it could not), so `anet up` returns when the
pool is ready, with its hosts connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dispatcher.polite import Polite

from ..api import Cluster
from ..errors import AnetError, UsageError
from ..remote.connect import SshOptions
from ..remote.hostlife import HostPhase
from ..remote.hosts import HostSpec
from ..streams.retention import DEFAULT_KEEP
from .client import is_up
from .hostset import HostChanges
from .place import Place, make_private
from .server import Pool, settle


@dataclass(frozen=True, slots=True)
class PoolConfig:
    hosts: Sequence[HostSpec]
    ssh: SshOptions
    keepalive: float
    cwd: str
    """Where jobs on this machine run: the directory `anet up` was given in (the daemon itself
    moves to /, and a batch's relative paths mean the directory its user was in)."""
    polite: Polite = field(default_factory=Polite)
    """Polite mode (--nice, --max-load, --memfree, --yield): the pool's hosts', for every run."""
    keep_runs: int | None = DEFAULT_KEEP
    """Ended runs the pool keeps (listed, attachable, their files on disk): the newest ones;
    None keeps them all ($ANET_JOURNALS_KEEP at `anet up`, as for the journals)."""


class Lock:
    """The pool's pid file, locked for the daemon's life: a second `anet up` finds it held and
    reads the pid; a daemon killed with -9 leaves it unlocked, so the next one takes over."""

    def __init__(self, place: Place) -> None:
        self._path = place.pid_file
        self._fd: int | None = None

    def take(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise UsageError(f"the pool is already up (pid {pid or '?'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            os.close(self._fd)
            self._fd = None


async def serve(place: Place, config: PoolConfig, ready: Callable[[str], None]) -> None:
    """Be the pool until `anet down` or SIGTERM/SIGINT; `ready` gets the one-line summary once
    the socket answers. UsageError when the pool is already up."""
    make_private(place.run_dir)
    make_private(place.state_dir)
    lock = Lock(place)
    lock.take()
    try:
        if (pid := await is_up(place)) is not None:  # a pool of an older layout: never two
            raise UsageError(f"the pool is already up (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            place.socket.unlink()  # left by a pool that died: nobody answers it
        changes = HostChanges.load(place.hosts_file)  # `pool add`/`drain` of earlier pools
        cluster = Cluster(
            changes.apply(config.hosts), ssh=config.ssh, keepalive=config.keepalive,
            cwd=config.cwd, polite=config.polite,
        )  # fmt: skip
        async with cluster:
            await settle(cluster, list(cluster.hosts))
            pool = Pool(place, cluster, keep_runs=config.keep_runs, changes=changes)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # resumed later
                loop.add_signal_handler(signum, functools.partial(pool.stop, resume_later=True))
            hosts = cluster.hosts.values()
            up = sum(state.state == HostPhase.READY for state in hosts)
            line = f"pool {place.name!r} is up: {up} of {len(hosts)} hosts ready"
            await pool.serve(lambda: ready(f"{line} (pid {os.getpid()})"))
    finally:
        lock.release()


def detach(place: Place, start: Callable[[Callable[[str], None]], int]) -> str:
    """Run `start(ready)` in a daemon process; return the line it gave `ready`, or raise
    AnetError with the line it failed with (its log has the rest)."""
    make_private(place.state_dir)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the first child: a session of its own, then the daemon is its child
        os.close(read_end)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _become_daemon(place, write_end)
        report = os.fdopen(write_end, "w")

        def ready(line: str) -> None:
            report.write(f"ok {line}\n")
            report.close()

        code = 1
        try:
            code = start(ready)
        except BaseException as exc:  # the parent must hear why, in one line; the log, all
            traceback.print_exc()
            if not report.closed:
                report.write(f"error {exc}\n")
                report.close()
        finally:
            os._exit(code)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as answer:
        line = answer.readline().strip()
    if line.startswith("ok "):
        return line[3:]
    reason = line[6:] if line.startswith("error ") else f"the pool exited (see {place.log})"
    raise AnetError(reason)


def _become_daemon(place: Place, keep: int) -> None:
    """stdin from /dev/null, stdout and stderr to the log; no other inherited descriptor."""
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(place.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    os.chdir("/")
    # The command's stderr writer drains in a thread, and no thread survives a fork: the log is
    # written directly (a file never blocks as a terminal or a pipe can).
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's life
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
