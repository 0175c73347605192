"""The local dispatcher, started before the master has imported what a run needs.

A run on this machine spends 0.2 s of CPU importing (asyncio, click, the engine) before it
starts its local dispatcher, whose boot then costs another process 0.07 s more. Started
first, by `anet`'s entry point (`start`), that boot runs on another core while the master
imports; `LocalTransport` then takes the process (`take`) and speaks to it over the pipes it
would have made itself. A process nobody took (a usage error, a run through a pool, or the
hosts were not this machine after all) is stopped at exit (`discard`), before it was told
anything: no Setup, no job, so nothing of it outlives the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable

from .bootstrap import PYTHON_FLAGS, Payload, payload

DISCARD_WAIT = 1.0
"""Seconds `discard` waits for an unused dispatcher to go (it has nothing to stop)."""

_started: subprocess.Popen[bytes] | None = None


def command(code: str) -> list[str]:
    """The local dispatcher's command line: this Python, the stub, no shell."""
    return [sys.executable, *PYTHON_FLAGS, "-c", code]


def start() -> None:
    """Start the local dispatcher now, for a run that `take`s it later. Out of the terminal's
    foreground group, as LocalTransport's own: a ^C there must reach the master alone."""
    global _started
    if _started is None:
        _started = subprocess.Popen(
            command(payload().code),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


def take(wanted: Payload) -> subprocess.Popen[bytes] | None:
    """The process `start` made, once, if it runs `wanted`'s stub and still runs; else None."""
    global _started
    proc, _started = _started, None
    if proc is not None and (proc.args != command(wanted.code) or proc.poll() is not None):
        _stop(proc)
        return None
    return proc


def discard() -> None:
    """Stop a started dispatcher nobody took: EOF and TERM (it holds no job), then reap it."""
    global _started
    proc, _started = _started, None
    if proc is not None:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    with contextlib.suppress(OSError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(DISCARD_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


Waiter = Callable[[], Awaitable[int | None]]
Streams = tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamReader, Waiter]
"""stdin, stdout, stderr, and a wait for the exit status."""


async def adopt(proc: subprocess.Popen[bytes], high_water: int) -> Streams:
    """The running loop's streams on `proc`'s pipes (as asyncio's own subprocess would give),
    and a wait for its exit that blocks no thread (a pidfd where Linux has one)."""
    assert proc.stdin and proc.stdout and proc.stderr
    loop = asyncio.get_running_loop()
    stdout, stderr = asyncio.StreamReader(), asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), proc.stdout)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), proc.stderr)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, proc.stdin
    )
    transport.set_write_buffer_limits(high=high_water)
    stdin = asyncio.StreamWriter(transport, protocol, None, loop)

    async def wait() -> int | None:
        if proc.poll() is None:
            await _exited(proc, loop)
        return proc.wait()

    return stdin, stdout, stderr, wait


async def _exited(proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
    """Until `proc` has exited: its pidfd readable, or (no pidfd) a short poll."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        while proc.poll() is None:
            await asyncio.sleep(0.01)
        return
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
