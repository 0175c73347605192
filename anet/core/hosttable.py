"""The scheduler's hosts: each ready host's slots and queue depth, every host's health (a
host that fails many jobs in a row is paused), and how long a job takes to reach each host.

A host's queue is sized to hide its round trip (Little's law, lookahead.py) unless the caller
fixed it. Pure: the scheduler's `now` is the only clock.
"""

from __future__ import annotations

from .lookahead import RoundTrips, default_lookahead, lookahead_for
from .speculation import HostHealth, Runtimes, Slots, Speculation, tail_limit


class HostTable:
    """`slots`: the ready hosts, by name; `health`: every host seen (pauses outlive a loss)."""

    def __init__(self) -> None:
        self.slots: dict[str, Slots] = {}
        self.health: dict[str, HostHealth] = {}
        self._trips = RoundTrips()
        self._adaptive: set[str] = set()  # hosts whose lookahead follows their round trip
        self._held: set[str] = set()  # hosts polite mode holds: they start nothing now

    def ready(self, name: str, slots: int, lookahead: int | None) -> None:
        """The host can take `slots` running attempts plus `lookahead` queued ones; without a
        `lookahead`, the queue grows to hide the host's measured round trip."""
        extra = default_lookahead(slots) if lookahead is None else lookahead
        if not slots:  # a run's share of none of its slots: it takes nothing here, queued or not
            extra = 0
        if lookahead is None:
            self._adaptive.add(name)
        else:
            self._adaptive.discard(name)
        known = self.slots.get(name)
        if known is not None:  # announced again: new size, same attempts in flight
            known.slots, known.capacity = slots, slots + extra
        else:
            self.slots[name] = Slots(name, slots, slots + extra)
            self.health.setdefault(name, HostHealth())

    def lost(self, name: str) -> Slots | None:
        """Forget a ready host (its health stays); its record, to requeue its attempts. Its hold
        goes too: a new dispatcher holds nothing (announced again while ready, a host that
        is held stays held: its share of the slots changed, not its state)."""
        host = self.slots.pop(name, None)
        self._held.discard(name)
        if host is not None:
            self._trips.forget_host(name)
            for aid in host.attempts:
                self._trips.forget(aid)
        return host

    def hold(self, name: str, held: bool) -> None:
        """Polite mode holds the ready host (it starts no job now), or no longer does; a host
        that is not ready has no dispatcher to hold it."""
        if held and name in self.slots:
            self._held.add(name)
        else:
            self._held.discard(name)

    def usable(self, now: float) -> list[Slots]:
        """The ready hosts that are neither paused nor held."""
        held = self._held
        return [
            h
            for h in self.slots.values()
            if now >= self.health[h.name].paused_until and h.name not in held
        ]

    def sent(self, aid: int, host: Slots, now: float) -> None:
        """An attempt went to `host`; if it starts on arrival, its start times the round trip."""
        if len(host.attempts) < host.slots and host.name in self._adaptive:  # (load, inline)
            self._trips.sent(aid, host.name, now)

    def started(self, aid: int, now: float) -> str | None:
        """The attempt started: the host whose round trip that measured, if it did."""
        return self._trips.started(aid, now)

    def forget(self, aid: int) -> None:
        """The attempt ended: it times nothing any more."""
        self._trips.forget(aid)

    def tail_limit(
        self, host: Slots, usable: list[Slots], spec: Speculation, runtimes: Runtimes, peek: int
    ) -> int:
        """For a very slow host: while fewer jobs than this are left to start, it takes none
        (the others would finish them sooner); 0 when it takes its share. Never more than
        `peek` times the cluster's capacity, as many jobs as may be read ahead to know."""
        floor = runtimes.floor  # no host is faster
        if runtimes.slowness(host.name) < spec.slow_host_ratio * floor:
            return 0  # the cheap test first: most hosts are not very slow
        others = [h for h in usable if h is not host]
        limit = tail_limit(spec, runtimes, host, others)
        if limit <= 0 or limit > peek * sum(h.capacity for h in self.slots.values()):
            return 0
        return limit

    def retune(self, name: str, runtimes: Runtimes) -> None:
        """Size the host's queue to its round trip and its typical job (Little's law)."""
        host, trip = self.slots.get(name), self._trips.estimate(name)
        if host is None or trip is None or name not in self._adaptive or not runtimes.count:
            return
        if not host.slots:  # a share of none: its queue stays empty
            return
        duration = runtimes.expected(name)
        host.capacity = host.slots + lookahead_for(host.slots, trip, duration)
