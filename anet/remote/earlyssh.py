"""SSH hosts connected while the master is still importing what a run needs.

A run on SSH hosts spent its first ~0.3 s in the master alone: the interpreter, click, the
engine's modules, asyncssh, and only then the handshakes, whose other halves (sshd's login,
the dispatcher's boot on the host: 0.2 s) ran after all that. Started here, from `anet`'s
entry point as soon as asyncssh is loaded, the handshakes and the dispatchers' boots run
while the master imports the rest (`start`): the connections are made on the event loop the
run will use, turned by a thread of its own until the run takes that loop (`handover`).
Then `Connector.connect` takes the connection made for its host (`take`) and
`SshTransport.start` the dispatcher process started on it (`take_process`).

Only what the run would have done itself is done early: the hosts of plain `-S` options, with
the ssh options the run builds when given none (`Connector.connect` compares them, and connects
anew when they differ), through the same `Connector.connect`, so known_hosts is checked the
same way and a failure is the same HostError. A connection the run does not take is closed
when the run ends (`close_untaken`), or, when no run takes the loop at all (a usage error),
by `discard`.

The imports go on beside the handshakes, though both are Python under one interpreter lock
(the handshakes slow: 4 loopback hosts, first connect to last login 37 ms alone, 56 beside
the imports). Waiting for the handshakes before importing (wp8-entry) paid while the hosts'
dispatchers took ~55 ms to boot; since they take ~25 ms, the run's imports (~115 ms) are what
the first Hello waits for, and starting them at once ended a one-job run 0-38 ms sooner
(bench.timeline, five interleaved runs of 11-21 rounds, 2026-11-30 18:32-18:46): simpler too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import preconnect
from .bootstrap import payload
from .hosts import HostSpec
from .sshlib import asyncssh, channel_errors

if TYPE_CHECKING:
    import asyncssh as ssh

    from .connect import Connector, SshOptions

Key = tuple[str, str | None, int | None]
"""What a connection is made from in a spec: host, user, port (not its slots)."""

DISCARD_WAIT = 2.0
"""Seconds `discard` gives the early connections to close when no run took them."""

SWITCH_INTERVAL = 0.001
"""The interpreter's thread switch interval while the early loop turns beside the imports:
a packet that arrives waits this long at most for the loop's thread to run (the default,
5 ms, would add up to 5 ms to each of the handshake's round trips)."""


def key(spec: HostSpec) -> Key:
    return spec.host, spec.user, spec.port


@dataclass(slots=True)
class _Early:
    loop: asyncio.AbstractEventLoop
    options: SshOptions
    connector: Connector
    tasks: dict[Key, asyncio.Task[ssh.SSHClientConnection]] = field(default_factory=dict)
    processes: dict[int, tuple[str, ssh.SSHClientProcess[bytes]]] = field(default_factory=dict)
    thread: threading.Thread | None = None
    switch_interval: float = 0.005


_early: _Early | None = None


def start(
    specs: Sequence[HostSpec],
    connector: Connector,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Connect to `specs` with `connector` (new, with the options the run will have) and
    start a dispatcher on each, on a new loop turned by a thread until `handover`. Called
    once, before the run's modules are imported."""
    global _early
    if _early is not None or not specs:
        return
    asyncssh()  # in this thread, before the other starts: the handshakes need it first
    shell_command = payload().shell_command()
    loop = loop_factory()
    early = _Early(loop, connector.options, connector)
    for spec in specs:
        if key(spec) not in early.tasks:
            early.tasks[key(spec)] = loop.create_task(_open(early, spec, shell_command))
    early.switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    early.thread = threading.Thread(target=loop.run_forever, name="anet-early-ssh", daemon=True)
    _early = early
    early.thread.start()


async def _open(early: _Early, spec: HostSpec, shell_command: str) -> ssh.SSHClientConnection:
    """The connection, as the run's own Connector would make it, and its dispatcher started."""
    conn = await early.connector.connect(spec)
    try:
        process = await conn.create_process(shell_command, encoding=None)
    except channel_errors():  # the run starts it again, and says what is wrong then
        return conn
    early.processes[id(conn)] = shell_command, process
    return conn


def handover() -> asyncio.AbstractEventLoop | None:
    """The early loop, its thread stopped, for the run to go on with on this thread; None
    when nothing was started early."""
    early = _early
    if early is None or early.thread is None:
        return None
    _stop_thread(early)
    return early.loop


def _stop_thread(early: _Early) -> None:
    thread, early.thread = early.thread, None
    if thread is not None:
        early.loop.call_soon_threadsafe(early.loop.stop)
        thread.join()
        sys.setswitchinterval(early.switch_interval)


def take(connector: Connector, spec: HostSpec) -> asyncio.Task[ssh.SSHClientConnection] | None:
    """The early connection to `spec`'s machine, if one was started with `connector`'s
    options on the running loop; each is taken once (and never by the early connector)."""
    early = _early
    if early is None or connector is early.connector or early.options != connector.options:
        return None
    with contextlib.suppress(RuntimeError):
        if asyncio.get_running_loop() is not early.loop:
            return None
    return early.tasks.pop(key(spec), None)


def key_status(label: str) -> tuple[str, str] | None:
    """What the early handshake learnt of the host's key (connect.KEY_*, known_hosts name)."""
    return _early.connector.key_status(label) if _early is not None else None


def take_process(conn: ssh.SSHClientConnection, command: str) -> ssh.SSHClientProcess[bytes] | None:
    """The dispatcher process started early on `conn`, if it runs `command`; once."""
    early = _early
    if early is None:
        return None
    started, process = early.processes.pop(id(conn), ("", None))
    if process is not None and started != command:
        process.close()
        return None
    return process


def close_untaken() -> None:
    """Close the early connections no run took (their dispatchers see EOF and exit), and
    cancel the handshakes still going: called on the early loop as the run ends."""
    global _early
    early, _early = _early, None
    if early is None:
        return
    for task in early.tasks.values():
        task.cancel()  # a handshake still going; a done task ignores it
    early.tasks.clear()
    early.connector.close_nowait()  # the untaken, and jump hosts the taken ones went through
    preconnect.close_untaken()  # sockets to hosts that asyncssh resolved otherwise


def discard() -> None:
    """When no run took the early loop (a usage error, --help): stop its thread, close what
    it opened, close the loop."""
    early = _early
    if early is None:
        return
    _stop_thread(early)
    tasks = list(early.tasks.values())
    close_untaken()
    loop = early.loop
    if loop.is_closed():
        return
    with contextlib.suppress(Exception):
        loop.run_until_complete(_closed(tasks))
    loop.close()


async def _closed(tasks: list[asyncio.Task[ssh.SSHClientConnection]]) -> None:
    """Until the tasks are done and their connections closed, at most DISCARD_WAIT."""
    conns = []
    async with asyncio.timeout(DISCARD_WAIT):
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                conns.append(await task)
        for conn in conns:
            await conn.wait_closed()
