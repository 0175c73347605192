"""Everyday housekeeping of a pool of machines: find, killall, check, onall.

    async with anet.Machines(["node[01-40]"]) as machines:
        for host in await machines.find("my_simulation"):
            ...

Each verb asks every host in parallel over the one connection and dispatcher it already has
(a `Cluster`), and answers with one result per host, in the order the hosts were given: a host
that cannot be reached is a result with an `error`, never an exception, because a pool always
has a machine down somewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatcher.forked import Cancel
from dispatcher.once import OnceExit, OnceOutput, RunOnce
from dispatcher.procs import (
    ALIVE,
    DENIED,
    GONE,
    PROTECTED,
    ROW_FIELDS,
    FindProcs,
    HostProbe,
    ProbeHost,
    ProcsFound,
    Signalled,
    SignalProcs,
    machine_id,
)
from dispatcher.protocol import STDOUT

from .api import Cluster
from .errors import protocol_error
from .remote.connect import KEY_ACCEPTED, KEY_KNOWN
from .remote.hostlife import HostState
from .remote.hosts import HostSpec
from .remote.session import HostSession

REPLY_TIMEOUT = 30.0
"""Seconds a ready dispatcher gets to answer a listing or a signal request."""
MATCH_TIMEOUT = 5.0
"""Seconds a host may take to list and match its processes for a find: milliseconds for any
sane pattern; past it a pattern that backtracks for ever (`(a+)+$`) is that host's error, and
the host stops matching. The master waits this plus REPLY_TIMEOUT for the answer."""
POLL = 0.2
"""Seconds between checks whether signalled processes are gone, during the grace period:
each check reads every process's stat on the host, so not much more often than this."""
ONALL_TIMEOUT = 365 * 86400.0
"""No time limit on an onall command (Ctrl-C ends it); a lost host still ends the wait."""
KILL_WAIT = 2.0
"""Seconds for KILLed processes to vanish: KILL cannot be caught, only a stuck I/O holds one."""
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL)
"""Signals sent to end a process: killall follows them with KILL for the survivors. Others
(USR1, STOP, ...) are only sent."""


@dataclass(frozen=True, slots=True)
class Process:
    """One matched process, as `ps` would show it; `pid` + `start` identify it for signals."""

    pid: int
    start: int
    pgid: int
    group: int  # processes in the group it leads (signalled as a whole); 0: just itself
    user: str
    elapsed: float
    cpu: float
    mem: float
    rss_kb: int
    command: str
    lifeline: str = ""  # what of the user's sessions it keeps alive: killall needs force


@dataclass(frozen=True, slots=True)
class HostProcesses:
    """`find` on one host: its matches, or why the host could not be asked."""

    host: str
    processes: list[Process] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Killed:
    """What `killall` did to one process: `outcome` is one of the texts below, "killed by
    SIG" (killed by a first signal other than TERM), "sent SIG" (a signal that is not meant to
    end a process, not followed by KILL), "permission denied" or "protected" (it turned into
    anet's own, or another user's, process between the listing and the signal)."""

    process: Process
    outcome: str


KILLED_TERM = "killed"
KILLED_KILL = "killed by KILL"
WOULD_KILL = "would kill"
NEEDS_FORCE = "needs --force"
VANISHED = "already gone"
SURVIVED = "survived KILL"


@dataclass(frozen=True, slots=True)
class HostKills:
    """`killall` on one host. `refused`: a match on some host keeps a session alive and
    `force` was not given, so nothing was killed on any host; the kills say what would be."""

    host: str
    kills: list[Killed] = field(default_factory=list)
    error: str | None = None
    refused: bool = False

    @property
    def complete(self) -> bool:
        """Everything matched is dead (or would be, in a dry run), and the host answered."""
        failed = (SURVIVED, DENIED, PROTECTED)
        return (
            self.error is None
            and not self.refused
            and not any(k.outcome in failed for k in self.kills)
        )

    @property
    def lifelines(self) -> list[Killed]:
        """The matches that keep a session of the user's alive."""
        return [k for k in self.kills if k.process.lifeline]


@dataclass(frozen=True, slots=True)
class HostOutput:
    """`onall` on one host: its command's output and exit status, or why it could not run."""

    host: str
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @property
    def status(self) -> str:
        if self.error is not None:
            return self.error
        return f"signal {self.signal}" if self.signal is not None else f"exit {self.exit_code}"


@dataclass(frozen=True, slots=True)
class HostCheck:
    """`check` on one host: what works, and what a job would find there."""

    host: str
    key: str | None = None  # KEY_* of anet.connect, None when the handshake never got there
    auth: bool | None = None  # key authentication worked; None when not reached
    python: str | None = None
    cores: int | None = None
    load: float | None = None
    mem_free_kb: int | None = None
    disk_free_kb: int | None = None
    hostname: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Machines:
    """One-shot commands over every host: find, killall, check, onall.

    It holds a `Cluster` (one connection and one dispatcher per host, as a run has) and asks
    each host by request, with the arguments of `Cluster`; use it as `async with`.
    """

    def __init__(self, hosts: Sequence[HostSpec | str] | None = None, **kwargs: Any) -> None:
        self._cluster = Cluster(hosts, **kwargs)

    async def __aenter__(self) -> Machines:
        await self._cluster.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._cluster.__aexit__(*exc_info)

    @property
    def hosts(self) -> dict[str, HostState]:
        """The hosts, as the cluster knows them, in the order given."""
        return self._cluster.hosts

    @property
    def cluster(self) -> Cluster:
        """The cluster the commands go through: a batch can run on it meanwhile."""
        return self._cluster

    # -- find and killall -----------------------------------------------------------------

    async def find(self, pattern: str, *, timeout: float = MATCH_TIMEOUT) -> list[HostProcesses]:
        """Each host's processes of the SSH user whose command line matches `pattern`; a host
        that cannot match it within `timeout` seconds answers with an error."""

        async def ask(session: HostSession) -> HostProcesses:
            procs, error = await _find(session, pattern, timeout)
            return HostProcesses(session.label, procs, error)

        return await self._cluster.each_host(ask, lambda host, why: HostProcesses(host, error=why))

    async def killall(
        self,
        pattern: str,
        *,
        sig: int = signal.SIGTERM,
        grace: float = 5.0,
        dry_run: bool = False,
        force: bool = False,
    ) -> list[HostKills]:
        """Signal the matches (their whole group, for a group leader), KILL the survivors after
        `grace` seconds, and say per process what happened. `dry_run` signals nothing.

        Every host is listed first: when a match anywhere keeps one of the user's sessions
        alive (a login shell, tmux, Jupyter: `Process.lifeline`) and `force` is false, nothing
        is killed anywhere and every answer is `refused`, listing what would be taken.
        """
        found = {answer.host: answer for answer in await self.find(pattern)}
        refused = not force and any(p.lifeline for a in found.values() for p in a.processes)
        if dry_run or refused:
            return [_would_kill(answer, refused) for answer in found.values()]

        async def kill(session: HostSession) -> HostKills:
            listed = found[session.label]
            if listed.error is not None or not listed.processes:
                return HostKills(session.label, error=listed.error)
            return HostKills(session.label, await _kill(session, listed.processes, sig, grace))

        return await self._cluster.each_host(kill, lambda host, why: HostKills(host, error=why))

    # -- check ------------------------------------------------------------------------------

    async def check(self) -> list[HostCheck]:
        """Connect to every host and report what works: key, auth, python, resources."""

        async def ask(session: HostSession) -> HostCheck:
            hello = session.hello
            assert hello is not None
            with session.request() as req:
                session.send(ProbeHost(req.rid, hello.workdir))
                reply = await req.reply(HostProbe, REPLY_TIMEOUT)
            return HostCheck(
                session.label,
                key=None if session.spec.local else self._cluster.host_key(session.label),
                auth=None if session.spec.local else True,
                python=hello.python,
                cores=hello.cores,
                load=reply.load,
                mem_free_kb=reply.mem_free_kb if reply.mem_free_kb >= 0 else None,
                disk_free_kb=reply.disk_free_kb if reply.disk_free_kb >= 0 else None,
                hostname=hello.hostname,
            )

        def failed(label: str, reason: str) -> HostCheck:
            key = self._cluster.host_key(label)
            auth: bool | None = None
            if reason.startswith("authentication failed"):
                key, auth = key or KEY_KNOWN, False  # the key check comes first in SSH
            elif key in (KEY_KNOWN, KEY_ACCEPTED):
                auth = True  # connected: what failed came after the login
            if self.hosts[label].spec.local:
                key, auth = None, None
            return HostCheck(label, key=key, auth=auth, error=reason)

        return await self._cluster.each_host(ask, failed)

    # -- onall ------------------------------------------------------------------------------

    async def onall(self, command: str | bytes) -> list[HostOutput]:
        """Run `command` once on every host (not once per slot); each host's output and status."""
        data = command.encode() if isinstance(command, str) else command

        async def ask(session: HostSession) -> HostOutput:
            # In the home directory on remote hosts, as `ssh host CMD` (and clush) run it;
            # in the current directory on the local machine, as a batch job would.
            command = data if session.spec.local else b"cd && " + data
            out, err = bytearray(), bytearray()
            with session.request() as req:  # its HostError comes if the host is lost
                session.send(RunOnce(req.rid, command))
                while True:
                    msg = await req.get(ONALL_TIMEOUT)
                    if isinstance(msg, OnceOutput):
                        (out if msg.stream == STDOUT else err).extend(msg.data)
                    elif isinstance(msg, OnceExit):
                        return HostOutput(session.label, bytes(out), bytes(err), msg.code,
                                          msg.signal)  # fmt: skip
                    else:
                        raise protocol_error(session.label, f"{type(msg).__name__} in onall")

        return await self._cluster.each_host(ask, lambda host, why: HostOutput(host, error=why))


def _would_kill(listed: HostProcesses, refused: bool) -> HostKills:
    """What killall would do on a host, when it does nothing (a dry run, or refused)."""
    kills = [
        Killed(p, f"{NEEDS_FORCE} ({p.lifeline})" if refused and p.lifeline else WOULD_KILL)
        for p in listed.processes
    ]
    return HostKills(listed.host, kills, listed.error, refused)


def _master() -> tuple[str, int]:
    """Who the master is, so the dispatcher on its own machine never matches it."""
    return machine_id(), os.getpid()


async def _find(
    session: HostSession, pattern: str, timeout: float
) -> tuple[list[Process], str | None]:
    with session.request() as req:
        session.send(FindProcs(req.rid, pattern, *_master(), timeout))
        reply = None
        try:
            reply = await req.reply(ProcsFound, timeout + REPLY_TIMEOUT)
        finally:
            if reply is None:  # given up on (no answer, or our caller was cancelled)
                session.send(Cancel(req.rid))  # so the host stops matching at once
    if reply.error:
        return [], reply.error
    return [Process(**dict(zip(ROW_FIELDS, row, strict=True))) for row in reply.procs], None


async def _signal(session: HostSession, procs: list[Process], sig: int) -> dict[int, str]:
    """pid -> outcome of sending `sig` (0: only look) to each process, or its group."""
    targets = [[p.pid, p.start, p.group > 0] for p in procs]
    with session.request() as req:
        session.send(SignalProcs(req.rid, targets, sig, *_master()))
        reply = await req.reply(Signalled, REPLY_TIMEOUT)
    return {pid: outcome for pid, outcome in reply.outcomes}


async def _kill(session: HostSession, procs: list[Process], sig: int, grace: float) -> list[Killed]:
    """`sig`, up to `grace` seconds for them to go, then KILL; one outcome per process."""
    final: dict[int, str] = {}
    pending = []
    first = await _signal(session, procs, sig)
    for p in procs:
        outcome = first.get(p.pid, GONE)
        if outcome == GONE:
            final[p.pid] = VANISHED
        elif outcome in (DENIED, PROTECTED):
            final[p.pid] = outcome
        elif sig not in ENDING_SIGNALS:
            final[p.pid] = f"sent {_name(sig)}"
        else:
            pending.append(p)
    ended = KILLED_TERM if sig == signal.SIGTERM else f"killed by {_name(sig)}"
    pending = await _wait_gone(session, pending, grace, ended, final)
    if pending:
        await _signal(session, pending, signal.SIGKILL)
        pending = await _wait_gone(session, pending, KILL_WAIT, KILLED_KILL, final)
        final.update((p.pid, SURVIVED) for p in pending)
    return [Killed(p, final[p.pid]) for p in procs]


async def _wait_gone(
    session: HostSession, procs: list[Process], bound: float, outcome: str, final: dict[int, str]
) -> list[Process]:
    """Poll until `procs` are gone or `bound` seconds pass; the gone get `outcome` in `final`,
    the survivors are returned."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while procs:
        alive = await _signal(session, procs, 0)
        final.update((p.pid, outcome) for p in procs if alive.get(p.pid) != ALIVE)
        procs = [p for p in procs if alive.get(p.pid) == ALIVE]
        if not procs or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL)
    return procs


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return str(sig)
