"""Judging attempts and hosts by what finished jobs showed: how long jobs take, how slow (or
broken) each host is, and what follows: timeouts, speculative copies, host pauses.

Pure and bounded, like the scheduler that uses it: durations and failures go in with the host
that produced them, estimates and decisions come out, and the caller's clock is the only clock.

The model is the simplest one that explains a batch of similar jobs on unequal machines: a job's
duration is its own size times its host's *slowness*. Slowness is learnt per host as the median
ratio of its durations to the batch's median (a median, not a mean, so one huge job does not make
a host look slow); durations divided by their host's slowness then describe the jobs alone, and
their quantiles say when a running attempt is late *for its host*. Every window has a fixed size,
so memory does not grow with the batch (invariant 4), and old samples age out when a batch drifts.

The speculation rules follow LATE (Zaharia et al., OSDI 2008) and Spark's `spark.speculation.*`:
copy only attempts far beyond what finished jobs needed (`multiplier` x a `quantile`, never below
`min_runtime`), put the copy where it is expected to end soonest, copy the attempt expected to end
last first, cap the copies while work is still queued, and copy only when the copy is expected to
finish before the original.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from ..errors import UsageError

WINDOW = 256
"""Successful durations kept (the most recent): enough for a stable 90th percentile."""
HOST_WINDOW = 16
"""Speed samples kept per host: the median of 16 shrugs off a few odd jobs."""
MIN_RATIO, MAX_RATIO = 1e-3, 1e3
"""Bounds of one speed sample, so an instant job or a hung one cannot zero or explode a host."""


@dataclass(frozen=True, slots=True)
class Speculation:
    """When to start a copy of a running attempt; defaults after Spark and LATE (see the module)."""

    multiplier: float = 1.5
    """A started attempt is a straggler past `multiplier` x the `quantile` of finished durations,
    scaled by its host's slowness (a slow host's jobs are slow, not stuck)."""
    quantile: float = 0.9
    min_runtime: float = 1.0
    """Never call an attempt a straggler before this many seconds: short jobs are not worth it."""
    min_samples: int = 3
    """Successful jobs needed before any estimate is trusted."""
    max_copy_fraction: float = 0.1
    """Share of all slots that copies may hold while jobs still wait for a host (LATE's cap)."""
    slow_host_ratio: float = 4.0
    """A host this many times slower than the fastest gets no tail job that others finish sooner."""

    def threshold(self, runtimes: Runtimes, slowness: float) -> float:
        """Seconds after which an attempt on a host of this slowness counts as a straggler."""
        return max(self.min_runtime, self.multiplier * runtimes.quantile(self.quantile) * slowness)


@dataclass(frozen=True, slots=True)
class Timeout:
    """A per-attempt time limit: fixed `seconds`, or `percent` of the median successful duration.

    The percentage (GNU parallel's `--timeout 300%`) applies once `min_samples` jobs succeeded,
    is scaled by the host's slowness (a slow host is not a hung one), and never goes below `floor`
    seconds, so the start-up jitter of tiny jobs cannot get them killed.
    """

    seconds: float | None = None
    percent: float | None = None
    min_samples: int = 3
    floor: float = 1.0

    @classmethod
    def parse(cls, spec: float | str | Timeout | None) -> Timeout | None:
        """`30`, `30.5`, `"30"` -> seconds; `"300%"` -> percent of the median; None -> no limit."""
        if spec is None or isinstance(spec, Timeout):
            return spec
        text = str(spec).strip()
        try:
            value = float(text.removesuffix("%"))
        except ValueError:
            raise UsageError(f"timeout {spec!r} is neither seconds nor a percentage") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"timeout {spec!r} must be a positive number")
        return cls(percent=value) if text.endswith("%") else cls(seconds=value)

    def limit(self, runtimes: Runtimes, slowness: float) -> float | None:
        """Seconds an attempt may run on a host of this slowness; None while the percentage has
        too few samples."""
        if self.seconds is not None:
            return self.seconds
        if self.percent is None or runtimes.count < self.min_samples:
            return None
        return max(self.floor, self.percent / 100 * runtimes.median() * slowness)


class Runtimes:
    """Recent successful durations (as if run on a host of slowness 1) and each host's slowness."""

    def __init__(self, window: int = WINDOW, host_window: int = HOST_WINDOW) -> None:
        self._raw: deque[float] = deque(maxlen=window)  # as measured: anchors the speed ratios
        self._norm: deque[float] = deque(maxlen=window)  # divided by the host's slowness
        self._ratios: dict[str, MedianWindow] = {}
        self._host_window = host_window
        self._slowness: dict[str, float] = {}  # cached median of _ratios[host]
        self.floor = 1.0
        """The least slowness any host has (1.0 for the unmeasured): a cheap lower bound."""
        self._sorted: list[float] | None = None  # cached sorted(_norm)
        self._tail_sums: list[float] | None = None  # [i] = sum(_sorted[i:]), made for outlook
        self._sum = 0.0  # sum(_sorted)
        self._anchor: float | None = None  # cached median(_raw)
        self._new = 0  # samples since the caches were built

    @property
    def count(self) -> int:
        return len(self._norm)

    def observe(self, host: str, duration: float) -> None:
        """An attempt on `host` succeeded after `duration` seconds. (Called once a job: the
        cached anchor and the host's new slowness are used as they are, not asked again.)"""
        duration = max(0.0, duration)
        anchor = self._anchor if self._anchor is not None else self._raw_median()
        slowness = self._add_ratio(host, duration / anchor) if anchor else self.slowness(host)
        self._raw.append(duration)
        self._norm.append(duration / slowness)
        self._new += 1
        if self._new * 16 >= len(self._norm):  # rebuilt once 1/16 of the window is new: cheap
            self._sorted = self._anchor = None  # and exact enough, and exact while it is small
            self._new = 0

    def at_least(self, host: str, elapsed: float, size: float | None = None) -> None:
        """An attempt on `host` was stopped after `elapsed` s unfinished: the host is no faster
        than that for a job of `size` (as a copy on another host showed), or a typical job.

        Without this, a slow host whose attempts always lose to copies (or time out) would never
        finish a job, never be measured, and keep looking as fast as the rest. The job's size
        matters: a big job stopped late says nothing bad about its host.
        """
        size = size or self._raw_median()
        if size and elapsed / size > self.slowness(host):
            self._add_ratio(host, elapsed / size)

    def slowness(self, host: str) -> float:
        """How many times longer than a typical host `host` takes; 1.0 until it is measured."""
        return self._slowness.get(host, 1.0)

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile of the normalized durations (0.0 without samples)."""
        values = self._values()
        if not values:
            return 0.0
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def median(self) -> float:
        return self.quantile(0.5)

    def expected(self, host: str) -> float:
        """Mean seconds a job takes on `host`."""
        return self.mean() * self.slowness(host)

    def outlook(self, host: str, elapsed: float) -> tuple[float, float]:
        """Expected seconds left for an attempt that has run `elapsed` s on `host`, and the size
        of its job (seconds on a host of slowness 1), which a copy would need too.

        If finished jobs ran that long, this one is likely as big as they were: their mean says
        both. If none did, a job that big is unheard of: the host is to blame (a copy would be a
        typical job), and the attempt is taken to be half done: it needs as long again, so one
        stuck far beyond the rest looks ever later, which is what makes it worth a copy.
        """
        values = self._values()
        slowness = self.slowness(host)
        start = bisect_right(values, elapsed / slowness)
        if start == len(values):
            return elapsed, self.mean()
        if self._tail_sums is None:  # only a straggler's outlook needs them: made then
            self._tail_sums = list(accumulate(reversed(values)))[::-1]
        size = self._tail_sums[start] / (len(values) - start)
        return size * slowness - elapsed, size

    def mean(self) -> float:
        """Mean duration of a job on a host of slowness 1 (0.0 without samples)."""
        values = self._values()
        return self._sum / len(values) if values else 0.0

    def _values(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self._norm)
            self._sum = sum(self._sorted)  # for mean(), asked every round; not tail sums
            self._tail_sums = None
        return self._sorted

    def _raw_median(self) -> float | None:
        if self._anchor is None and self._raw:
            self._anchor = _median(self._raw)
        return self._anchor

    def _add_ratio(self, host: str, ratio: float) -> float:
        """Add a sample to the host's window; its slowness after it."""
        samples = self._ratios.get(host)
        if samples is None:
            samples = self._ratios[host] = MedianWindow(self._host_window)
        slowness = samples.add(min(MAX_RATIO, max(MIN_RATIO, ratio)))
        before = self._slowness.get(host)
        self._slowness[host] = slowness
        if slowness < self.floor:  # the new least
            self.floor = slowness
        elif before == self.floor and slowness != before:  # the least may have gone up
            self.floor = min(1.0, *self._slowness.values())
        return slowness


class MedianWindow:
    """The last `size` samples and their exact median, kept sorted as they come and go.

    A host's slowness is the median of its window, needed after every success there: kept
    sorted, a new sample costs a bisection and a list shift of at most `size` items, not a
    sort of the whole window (`statistics.median`, which was the dearest part of a job's
    bookkeeping).
    """

    __slots__ = ("_order", "_sorted")

    def __init__(self, size: int) -> None:
        self._order: deque[float] = deque(maxlen=size)  # in arrival order: who leaves next
        self._sorted: list[float] = []

    def add(self, value: float) -> float:
        """Take `value` (the oldest sample leaves a full window); the median after it."""
        order, ordered = self._order, self._sorted
        if len(order) == order.maxlen:
            del ordered[bisect_left(ordered, order[0])]
        order.append(value)
        insort(ordered, value)
        half = len(ordered) // 2  # _middle, inline: this runs once a job
        return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2

    def __len__(self) -> int:
        return len(self._order)


def _median(values: Iterable[float]) -> float:
    """statistics.median of a non-empty window, without importing statistics (with fractions,
    decimal and random: 5 ms of every start)."""
    return _middle(sorted(values))


def _middle(ordered: Sequence[float]) -> float:
    """The median of non-empty sorted values."""
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def start_wait(load: int, slots: int, expected: float) -> float:
    """Seconds until an attempt queued behind `load` others on a host of `slots` slots starts.

    The dispatcher runs `slots` attempts and queues the rest; on average one slot frees every
    `expected / slots` seconds, so the k-th in line (0-based) starts after (k + 1) of those.
    """
    return 0.0 if load < slots else (load - slots + 1) * expected / max(1, slots)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An attempt a copy might beat: the expected seconds until it ends (`remaining`, with any
    wait in its host's queue), its job's expected `size` (a copy takes `size` x its host's
    slowness), and the hosts that must not get the copy (running the job, or where it failed)."""

    aid: int
    remaining: float
    size: float
    avoid: frozenset[str]


@dataclass(slots=True)
class Target:
    """A host that may take `free` copies in this round, behind the `load` attempts it holds;
    `typical` (the mean seconds of a job there) sets the pace at which its slots free up."""

    host: str
    free: int
    load: int
    slots: int
    slowness: float
    typical: float

    def finish(self, size: float) -> float:
        """Expected seconds until a copy of a job of `size` added now would end."""
        return start_wait(self.load, self.slots, self.typical) + size * self.slowness


def plan_copies(
    candidates: list[Candidate], targets: list[Target], budget: int
) -> list[tuple[int, str]]:
    """Which attempts get a copy, and where: `(aid, host)` pairs, at most `budget` of them.

    LATE's order: the attempt expected to end last goes first, since it holds the batch's end;
    each copy goes to the host that would finish it soonest, and only if that is sooner than the
    original, so a copy never just doubles the work.
    """
    plan: list[tuple[int, str]] = []
    for candidate in sorted(candidates, key=lambda c: (-c.remaining, c.aid)):
        if len(plan) >= budget:
            break
        usable = [t for t in targets if t.free > 0 and t.host not in candidate.avoid]
        best = min(usable, key=lambda t: t.finish(candidate.size), default=None)
        if best is None or best.finish(candidate.size) >= candidate.remaining:
            continue
        plan.append((candidate.aid, best.host))
        best.free -= 1
        best.load += 1
    return plan


@dataclass(slots=True)
class Slots:
    """A ready host's room: `slots` running attempts plus a queue, `capacity` in all."""

    name: str
    slots: int
    capacity: int
    attempts: set[int] = field(default_factory=set)  # running, queued, or being killed

    @property
    def room(self) -> int:
        return self.capacity - len(self.attempts)

    @property
    def load(self) -> int:
        return len(self.attempts)


@dataclass(frozen=True, slots=True)
class Running:
    """An attempt in flight, not being killed: `started` is None while it waits in its host's
    queue; `alone` if it is its job's only attempt (only those get copies); `avoid` as above."""

    aid: int
    host: str
    started: float | None
    alone: bool
    avoid: frozenset[str]


def plan_speculation(
    spec: Speculation,
    runtimes: Runtimes,
    running: Sequence[Running],
    hosts: Sequence[Slots],
    now: float,
    *,
    usable: Collection[str],
    drained: bool,
    copies: int,
) -> list[tuple[int, str]]:
    """The copies to start now, as `(aid, host)`. `running` is in aid order (each host's queue
    order); `hosts` are the ready hosts, `usable` those not paused; `copies` counts attempts in
    flight beyond one per job. While jobs still wait for a host (not `drained`), only stragglers
    get copies, and copies hold at most `max_copy_fraction` of the slots: queued jobs need them
    too. Once the batch ran dry, any attempt may get a copy in an idle slot."""
    targets_hosts = [h for h in hosts if h.name in usable]
    if runtimes.count < spec.min_samples or not targets_hosts:
        return []
    share = max(1, int(spec.max_copy_fraction * sum(h.slots for h in targets_hosts)))
    budget = sys.maxsize if drained else share - copies
    if budget <= 0:
        return []
    candidates = _candidates(spec, runtimes, running, hosts, now, drained)
    targets = []
    for h in targets_hosts:
        free, slowness = h.slots - h.load if drained else h.room, runtimes.slowness(h.name)
        targets.append(Target(h.name, free, h.load, h.slots, slowness, runtimes.expected(h.name)))
    return plan_copies(candidates, targets, budget)


def _candidates(
    spec: Speculation,
    runtimes: Runtimes,
    running: Sequence[Running],
    hosts: Sequence[Slots],
    now: float,
    drained: bool,
) -> list[Candidate]:
    """Attempts running alone that are stragglers, or, once the batch ran dry, all of them."""
    slots = {h.name: h.slots for h in hosts}
    ahead = {h.name: h.load for h in hosts}  # minus the queued ones: those started
    for run in running:
        if run.started is None:
            ahead[run.host] -= 1
    candidates: list[Candidate] = []
    for run in running:  # in aid order: each host's queue order
        expected = runtimes.expected(run.host)
        if run.started is None:  # waits behind the started ones and those queued before it
            wait = start_wait(ahead[run.host], slots[run.host], expected)
            ahead[run.host] += 1
            remaining, size, eligible = wait + expected, runtimes.mean(), drained
        else:
            elapsed = now - run.started
            remaining, size = runtimes.outlook(run.host, elapsed)
            eligible = drained or elapsed > spec.threshold(runtimes, runtimes.slowness(run.host))
        if eligible and run.alone:
            candidates.append(Candidate(run.aid, remaining, size, run.avoid))
    return candidates


def tail_limit(
    spec: Speculation, runtimes: Runtimes, host: Slots, others: Sequence[Slots]
) -> float:
    """How many more jobs the `others` finish before a very slow `host` would finish one.

    If fewer jobs than that are left, giving `host` one can only delay the batch's end: better
    wait for a fast host. 0.0 when `host` is not very slow (`slow_host_ratio`) or nothing is known.
    """
    if runtimes.count < spec.min_samples or not others:
        return 0.0
    fastest = min(runtimes.slowness(h.name) for h in others)
    if runtimes.slowness(host.name) < spec.slow_host_ratio * fastest:
        return 0.0
    rate = sum(h.slots / max(runtimes.expected(h.name), 1e-9) for h in others)
    return max(0.0, runtimes.expected(host.name) * rate - sum(h.load for h in others))


def due(
    starts: Iterable[tuple[int, str, float]],
    after: Callable[[float], float | None],
    runtimes: Runtimes,
    until: float,
) -> tuple[list[tuple[int, float]], float | None]:
    """Deadlines `started + after(slowness of host)` of attempts `(aid, host, started)` given in
    start order: those at or before `until` as `(aid, seconds allowed)`, and the first after it.

    `after` grows with slowness (timeouts and straggler thresholds do), so `after(floor)` bounds
    every deadline from below, and the scan stops at the first attempt that started too late to
    be due, or sooner than the best deadline found: a few attempts per call, not all in flight.
    """
    found: list[tuple[int, float]] = []
    if (least := after(runtimes.floor)) is None:
        return found, None
    soonest = math.inf
    limits: dict[str, float | None] = {}
    for aid, host, started in starts:
        if started + least > until and started + least >= soonest:
            break
        if host not in limits:
            limits[host] = after(runtimes.slowness(host))
        if (limit := limits[host]) is not None and started + limit <= until:
            found.append((aid, limit))
        elif limit is not None:
            soonest = min(soonest, started + limit)
    return found, soonest if soonest < math.inf else None


def wake_time(
    spec: Speculation,
    runtimes: Runtimes,
    alone: Callable[[], Iterable[tuple[int, str, float]]],
    hosts: Collection[Slots],
    now: float,
    drained: bool,
) -> float | None:
    """When an attempt running alone may next become worth a copy with no event in between:
    when it turns straggler, and (once the batch ran dry, with an idle slot somewhere) when its
    estimated remaining time outgrows that of a copy on the idle slot."""
    if runtimes.count < spec.min_samples:
        return None
    times = [due(alone(), lambda f: spec.threshold(runtimes, f) + 1e-6, runtimes, now)[1]]
    idle = [runtimes.expected(h.name) for h in hosts if h.slots > h.load] if drained else []
    if idle:  # `remaining` grows once an attempt outlasts every finished job
        longest, copy = runtimes.quantile(1.0), min(idle)
        times.append(due(alone(), lambda f: max(longest * f, copy) + 1e-6, runtimes, now)[1])
    return min((t for t in times if t is not None), default=None)


@dataclass(frozen=True, slots=True)
class HostPause:
    """A host gets no new attempts until `until`: log it once, as a warning."""

    host: str
    seconds: float
    until: float
    jobs: tuple[int, ...]
    """The different jobs that failed in a row there."""

    def __str__(self) -> str:
        return (
            f"{self.host}: {len(self.jobs)} different jobs failed in a row while other hosts"
            f" succeeded; no new jobs there for {self.seconds:g} s"
        )


@dataclass(frozen=True, slots=True)
class Pausing:
    """When a host counts as broken: `after` different jobs failed in a row on it while some
    other host succeeded. It then rests `seconds`, doubled on each new pause up to 2**`doublings`
    times: a full disk or a missing tool must not eat the whole batch's retries."""

    after: int = 5
    seconds: float = 60.0
    doublings: int = 4


@dataclass(slots=True)
class HostHealth:
    """One host's recent failures and pauses (bounded: the streak stops at `Pausing.after`)."""

    streak: set[int] = field(default_factory=set)
    since: int = 0  # the cluster's success count when the streak began
    paused_until: float = -math.inf
    pauses: int = 0

    def failed(
        self, host: str, job_id: int, now: float, successes: int, rule: Pausing
    ) -> HostPause | None:
        """Count a failed job; the pause it triggers, if any.

        `successes` is the cluster's success count: a streak pauses the host only if it grew
        meanwhile, since when every host fails every job the jobs are at fault, and pausing hosts
        would only stall the batch. Failures of attempts handed out before a pause tell nothing
        new about the host and are ignored.
        """
        if now < self.paused_until:
            return None
        if not self.streak:
            self.since = successes
        if len(self.streak) < rule.after:
            self.streak.add(job_id)  # a set: one job failing twice counts once
        if len(self.streak) < rule.after or successes == self.since:
            return None
        seconds = rule.seconds * 2 ** min(self.pauses, rule.doublings)
        self.pauses += 1
        self.paused_until = now + seconds
        jobs = tuple(sorted(self.streak))
        self.streak.clear()
        return HostPause(host, seconds, now + seconds, jobs)
