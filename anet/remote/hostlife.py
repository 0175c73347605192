"""One end machine's life: connect, boot its dispatcher, sync its deps, serve, and when it fails,
back off and come back, until the cluster closes or the host needs the user.

It decides nothing about jobs: it keeps the host's `HostState` (phase, error, backoff) and
reports what happens to the owner (`HostEvents`): ready, gone, failed, and the timeline events
the journal keeps. Every wait is on the event loop's clock, so tests run it on a fake clock
that jumps (tests/fakeclock.py): "exactly 10 retries in 3.95 s" without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ..core.backoff import Backoff
from ..core.engine import HostStats
from ..errors import HostError
from ..logs import get_logger
from .hosts import HostSpec
from .session import HostSession
from .transport import Transport

log = get_logger()


class HostPhase(StrEnum):
    """Where a host is in its life; the values are what displays show."""

    CONNECTING = "connecting"  # opening the connection, or booting the dispatcher
    SYNCING = "syncing"  # its dispatcher is up; the deps are on their way
    READY = "ready"  # serving jobs
    BACKING_OFF = "backing off"  # failed; trying again after a growing, jittered delay
    FAILED = "failed"  # given up: only the user can fix it (a key, python3, a lying host)
    CLOSED = "closed"  # the cluster closed


@dataclass(slots=True)
class HostState(HostStats):
    """What the cluster knows of one host: its life here, its work counters (HostStats, kept
    by the engine) beside. Displays and summaries read it on a timer."""

    spec: HostSpec
    state: HostPhase = HostPhase.CONNECTING
    error: str | None = None
    slots: int = 0
    failures: int = 0
    ever_ready: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    last_heard: float | None = None  # event-loop clock of the last frame from the host
    retry_at: float | None = None  # event-loop clock of the next connection try, backing off
    held: str = ""  # why polite mode holds its queued jobs now (a loaded host), "" when not
    held_since: float | None = None  # event-loop clock: since when it is held
    held_time: float = 0.0  # seconds it was held before that: its slots' time lost

    def hold(self, reason: str, now: float) -> None:
        """Polite mode holds the host now for `reason`, or ("") no longer does."""
        if self.held_since is not None:
            self.held_time += max(0.0, now - self.held_since)
        self.held, self.held_since = reason, (now if reason else None)

    def time_held(self, now: float) -> float:
        """Seconds polite mode held the host in all, until `now` (event-loop clock)."""
        since = self.held_since
        return self.held_time + (max(0.0, now - since) if since is not None else 0.0)


class HostEvents(Protocol):
    """What a host's life tells its owner; the owner decides what it means for the jobs."""

    def host_ready(self, session: HostSession) -> None:
        """The dispatcher is up (and its deps synced): it may get jobs."""

    async def host_gone(self, label: str) -> None:
        """The dispatcher ended, however: its attempts are lost (it may be back later)."""

    async def host_failed(self, label: str) -> None:
        """A failure was recorded in the host's state (backing off, or given up)."""

    def host_event(self, label: str, event: str, detail: str | None) -> None:
        """ready, back, lost, unreachable, failed: for the journal's timeline."""


Prepare = Callable[[HostSession], Awaitable[None]]


async def host_life(
    state: HostState,
    session: HostSession,
    transport: Transport,
    events: HostEvents,
    closing: asyncio.Event,
    prepare: Prepare | None = None,
) -> None:
    """Keep one host serving until `closing` is set: a failure is an event, never a crash.

    A dead dispatcher is restarted over the same connection; a lost connection is opened
    again after a jittered, growing delay; an error only the user can fix gives the host up.
    """
    loop = asyncio.get_running_loop()
    try:
        while not closing.is_set():
            try:
                if not transport.connected:
                    state.state = HostPhase.CONNECTING
                    await transport.connect()
                await session.run(transport, _ready(state, events), _syncing(state, prepare))
                error = HostError(state.spec.label, "the dispatcher exited")
            except HostError as exc:
                error = exc
            finally:
                await events.host_gone(state.spec.label)
            if closing.is_set() or not await _failed(state, error, events):
                return
            delay = state.backoff.next_delay()
            state.retry_at = loop.time() + delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await closing.wait()
    finally:
        transport.close()
        state.state = HostPhase.FAILED if state.state == HostPhase.FAILED else HostPhase.CLOSED


def _syncing(state: HostState, prepare: Prepare | None) -> Prepare | None:
    if prepare is None:
        return None

    async def syncing(session: HostSession) -> None:
        state.state = HostPhase.SYNCING
        await prepare(session)

    return syncing


def _ready(state: HostState, events: HostEvents) -> Callable[[HostSession], None]:
    def ready(session: HostSession) -> None:
        label = session.label
        if state.failures and state.ever_ready:
            log.warning(f"{label}: back, {session.slots} slots", host=label)
        events.host_event(label, "back" if state.ever_ready else "ready", str(session.slots))
        state.retry_at = None
        state.state, state.slots, state.ever_ready = HostPhase.READY, session.slots, True
        state.backoff.reset()
        assert session.hello is not None
        log.info(
            f"{label}: ready, {session.slots} slots",
            host=label,
            hostname=session.hello.hostname,
            python=session.hello.python,
            cores=session.hello.cores,
        )
        events.host_ready(session)

    return ready


async def _failed(state: HostState, error: HostError, events: HostEvents) -> bool:
    """Record and report a failure; False when the host is given up for good."""
    label = state.spec.label
    try:
        if error.permanent:
            events.host_event(label, "failed", error.reason)
            state.state, state.error = HostPhase.FAILED, error.reason
            log.error(str(error), host=error.host, reason=error.reason)
            return False
        was_ready = state.state == HostPhase.READY
        events.host_event(label, "lost" if was_ready else "unreachable", error.reason)
        state.failures += 1
        if was_ready or error.reason != state.error:  # once per change, not once per try
            log.warning(f"{error}; retrying", host=error.host, reason=error.reason)
        state.state, state.error = HostPhase.BACKING_OFF, error.reason
        return True
    finally:
        await events.host_failed(label)


def stuck(hosts: Iterable[HostState]) -> str | None:
    """Why no host can ever take the run's work, or None while one may.

    That is when every host was given up, or when none has ever worked and each has failed at
    least once (a typo in every host name must not hang). Hosts that worked before and are now
    unreachable are waited for: the user sees the warnings and may press Ctrl-C.
    """
    hosts = list(hosts)
    if any(h.state == HostPhase.READY for h in hosts):
        return None
    given_up = all(h.state == HostPhase.FAILED for h in hosts)
    never_worked = not any(h.ever_ready for h in hosts) and all(
        h.failures or h.state == HostPhase.FAILED for h in hosts
    )
    if not (given_up or never_worked):
        return None
    reasons = "; ".join(f"{h.spec.label}: {h.error}" for h in hosts[:3] if h.error)
    return f"no usable host ({reasons})" if reasons else "no usable host"
