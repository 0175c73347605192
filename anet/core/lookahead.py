"""How many jobs to queue on a host beyond its slots, so round trips do not leave slots idle.

A slot that frees up waits one round trip for its next job unless one is already queued on the
host. Little's law gives the queue that hides the wait: slots x round trip / job duration (at
50 ms RTT and 20 ms jobs, 2.5 jobs per slot; the old fixed `max(2, slots)` left each slot idle
for part of every job). The round trip is measured, not configured: from sending a Run to
seeing its Started, for attempts sent while the host had a free slot (so they did not wait in
its queue), the least of the recent samples, as a busy master or host only adds to it. Pure
logic fed with `now`, like the scheduler that uses it.
"""

from __future__ import annotations

import math
from collections import deque

MAX_FACTOR = 8
"""At most this many times `slots` queued: memory stays bounded by the work in flight, and so
does the tail a host's queue can hold up (speculation copies what a slow host sits on)."""
SAMPLES = 16
"""Round-trip samples kept per host: recent enough to follow a route change, enough for a min."""


def default_lookahead(slots: int) -> int:
    """Jobs queued on a host beyond its slots before any round trip is measured: enough to hide
    a LAN round trip behind short jobs."""
    return max(2, slots)


def lookahead_for(slots: int, round_trip: float, duration: float) -> int:
    """The queue that keeps `slots` busy when a job takes `duration` s and a reply `round_trip`."""
    base = default_lookahead(slots)
    cap = max(base, MAX_FACTOR * slots)
    if round_trip <= 0:
        return base
    if duration <= 0:
        return cap  # jobs too short to measure: every round trip would idle the slots
    return max(base, min(cap, math.ceil(slots * round_trip / duration)))


class RoundTrips:
    """Run-to-Started delays per host, from the attempts that started on arrival."""

    def __init__(self) -> None:
        self._sent: dict[int, tuple[str, float]] = {}  # probing attempts not yet started
        self._samples: dict[str, deque[float]] = {}

    def sent(self, aid: int, host: str, now: float) -> None:
        """`aid` went to `host` at `now`, which had a free slot: its start times a round trip."""
        if math.isfinite(now):
            self._sent[aid] = (host, now)

    def started(self, aid: int, now: float) -> str | None:
        """Record the sample if `aid` was probing; the host whose estimate changed, if any
        (most samples leave the least of them as it was: no queue to re-size then)."""
        entry = self._sent.pop(aid, None)
        if entry is None:
            return None
        host, at = entry
        samples = self._samples.get(host)
        if samples is None:
            samples = self._samples[host] = deque(maxlen=SAMPLES)
        before = min(samples, default=None)
        samples.append(max(0.0, now - at))
        return host if min(samples) != before else None

    def forget(self, aid: int) -> None:
        """The attempt ended or was lost before its Started: no sample."""
        self._sent.pop(aid, None)

    def forget_host(self, host: str) -> None:
        """A reconnection may take another route: measure again."""
        self._samples.pop(host, None)

    def estimate(self, host: str) -> float | None:
        samples = self._samples.get(host)
        return min(samples) if samples else None
