"""anet.core.speculation and the scheduler's speculative copies: statistics, straggler rules, caps,
and a simulated cluster on a fake clock comparing the batch's end with and without copies."""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anet.core.batch import Job
from anet.core.scheduler import Attempt, Ended, Kill, KillReason, Scheduler, Verdict
from anet.core.speculation import (
    Candidate,
    HostHealth,
    HostPause,
    MedianWindow,
    Pausing,
    Running,
    Runtimes,
    Slots,
    Speculation,
    Target,
    Timeout,
    due,
    plan_copies,
    plan_speculation,
    start_wait,
    tail_limit,
    wake_time,
)
from anet.errors import UsageError


def jobs(n: int) -> list[Job]:
    return [Job(i, b"true") for i in range(n)]


def cluster(n: int, hosts: Sequence[str], **options) -> Scheduler:
    """A batch of n jobs on hosts of one slot and no look-ahead."""
    scheduler = Scheduler(iter(jobs(n)), **options)
    for host in hosts:
        scheduler.host_ready(host, 1, 0)
    return scheduler


def started(scheduler: Scheduler, runs: list[Attempt], now: float) -> list[Attempt]:
    for run in runs:
        scheduler.attempt_started(run.aid, now)
    return runs


def live(scheduler: Scheduler) -> list[Attempt]:
    """Its attempts in flight. (Not by probing aids 0..N: aids count up across the whole
    process, so after enough other tests, probing a fixed range finds none of them.)"""
    return [a for a in map(scheduler.attempt, list(scheduler._flights.runs)) if a is not None]


def learn(scheduler: Scheduler, **durations: float) -> None:
    """What the batch showed so far: three jobs per host, each of the given seconds."""
    for host, duration in durations.items():
        for _ in range(3):
            scheduler.runtimes.observe(host, duration)


# -- the runtime model ---------------------------------------------------------------------------


def test_runtimes_learn_each_hosts_slowness_from_durations():
    runtimes = Runtimes()
    for _ in range(20):
        for host in "abc":
            runtimes.observe(host, 2.0)
        runtimes.observe("slow", 20.0)
    assert runtimes.slowness("a") == pytest.approx(1.0)
    assert runtimes.slowness("slow") == pytest.approx(10.0)
    assert runtimes.slowness("never seen") == 1.0
    assert runtimes.median() == pytest.approx(2.0)  # durations as if run on a normal host
    assert runtimes.quantile(0.9) == pytest.approx(2.0)
    assert runtimes.expected("slow") == pytest.approx(20.0)


def test_runtimes_memory_is_bounded():
    runtimes = Runtimes(window=50, host_window=4)
    for i in range(10_000):
        runtimes.observe(f"h{i % 3}", 1.0 + i % 7)
    assert runtimes.count == 50 and len(runtimes._raw) == 50
    assert all(len(samples) <= 4 for samples in runtimes._ratios.values())


def test_the_cached_statistics_follow_a_batch_that_drifts():
    runtimes = Runtimes()
    assert runtimes.floor == 1.0
    for _ in range(100):
        runtimes.observe("a", 1.0)
    assert runtimes.median() == 1.0
    for _ in range(300):  # the jobs became 5x longer (on the same host: it is not the host)
        runtimes.observe("a", 5.0)
    assert runtimes.quantile(0.9) > 1.0  # not frozen at what the first samples showed


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.floats(0.001, 50.0)), max_size=200))
def test_the_floor_is_always_the_least_slowness_it_caches(observed: list[tuple[str, float]]):
    """observe() updates the floor from the one host that changed, instead of a min over all
    hosts each job: after every sample it must equal that min (with 1.0 for the unmeasured),
    also when the least slow host becomes slower."""
    runtimes = Runtimes(host_window=3)
    for host, duration in observed:
        runtimes.observe(host, duration)
        assert runtimes.floor == min(1.0, *(runtimes.slowness(h) for h in "abcd"))


def test_a_host_that_was_the_floor_and_slows_down_raises_it():
    runtimes = Runtimes(host_window=1)
    for host, duration in (("a", 1.0), ("a", 1.0), ("b", 1.0), ("b", 0.25)):
        runtimes.observe(host, duration)
    assert runtimes.floor == pytest.approx(0.25)  # b is 4x faster than the typical job
    runtimes.observe("b", 1.0)  # b's one-sample window now says 1.0: nobody is below 1.0
    assert runtimes.floor == 1.0


def test_the_outlook_and_mean_are_those_of_the_samples_as_last_sorted():
    """The tail sums behind outlook() are made when it first asks, from the sorted samples of
    that moment, and made again once those are sorted anew: asked between samples, outlook and
    mean always agree with the sorted samples the model holds then."""
    runtimes = Runtimes(window=32)
    for i in range(300):
        runtimes.observe("a", 1.0 + (i * 7919 % 13) / 4)
        if i % 3:
            continue
        values = runtimes._values()  # sorted, as the model last sorted them
        elapsed = values[len(values) // 2] * runtimes.slowness("a")  # half are longer
        outlook, mean = runtimes.outlook("a", elapsed), runtimes.mean()
        tail = values[bisect_right(values, elapsed / runtimes.slowness("a")) :]
        if tail:
            assert outlook[1] == pytest.approx(sum(tail) / len(tail))
        assert mean == pytest.approx(sum(values) / len(values))


def test_a_late_attempt_is_a_big_job_if_such_jobs_were_seen_else_its_hosts_fault():
    runtimes = Runtimes()
    for duration in (1.0, 1.0, 1.0, 1.0, 9.0):
        runtimes.observe("a", duration)
    assert runtimes.slowness("a") == 1.0 and runtimes.mean() == pytest.approx(2.6)
    assert runtimes.outlook("a", 0.5) == pytest.approx((2.1, 2.6))  # any job: the mean
    assert runtimes.outlook("a", 2.0) == pytest.approx((7.0, 9.0))  # one of the big ones
    assert runtimes.outlook("a", 20.0) == pytest.approx((20.0, 2.6))  # unheard of: the host


def test_a_stopped_attempt_is_a_lower_bound_on_its_hosts_slowness():
    runtimes = Runtimes()
    for _ in range(5):
        runtimes.observe("a", 1.0)
    runtimes.at_least("b", 7.0)
    assert runtimes.slowness("b") == pytest.approx(7.0)
    runtimes.at_least("b", 3.0)  # tells nothing new: b is known to be slower
    assert runtimes.slowness("b") == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(30, Timeout(seconds=30.0)), ("2.5", Timeout(seconds=2.5)), ("300%", Timeout(percent=300.0))],
)
def test_timeout_specs(spec: float | str, expected: Timeout):
    assert Timeout.parse(spec) == expected
    assert Timeout.parse(None) is None


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "neither"),
        ("abc", "neither"),
        ("-1", "positive"),
        ("0%", "positive"),
        ("nan", "positive"),
        ("inf", "positive"),
    ],
)
def test_bad_timeout_specs_are_usage_errors(spec: str, why: str):
    words = {"neither": "is neither seconds nor a percentage", "positive": "must be a positive"}
    with pytest.raises(UsageError, match=f"timeout {spec!r} {words[why]}"):
        Timeout.parse(spec)
    assert Timeout.parse("0.5") == Timeout(seconds=0.5)  # under a second is fine


def test_plan_copies_takes_the_latest_first_and_only_if_the_copy_ends_sooner():
    assert [start_wait(load, 2, 10.0) for load in range(4)] == [0.0, 0.0, 5.0, 10.0]
    slow = frozenset({"slow"})
    candidates = [Candidate(1, 5.0, 1.0, slow), Candidate(2, 50.0, 1.0, slow)]
    candidates += [Candidate(3, 0.5, 1.0, slow), Candidate(4, 9.0, 10.0, slow)]  # 4: a big job
    targets = [Target("fast", 1, 0, 1, 1.0, 1.0), Target("mid", 1, 0, 1, 3.0, 3.0)]
    assert plan_copies(candidates, targets, budget=10) == [(2, "fast"), (1, "mid")]
    fast = [Target("fast", 2, 0, 1, 1.0, 1.0)]
    assert plan_copies(candidates, fast, budget=1) == [(2, "fast")]
    assert plan_copies(candidates, [Target("slow", 9, 0, 9, 1.0, 1.0)], budget=9) == []


def test_pausing_needs_different_jobs_and_successes_elsewhere():
    health, rule = HostHealth(), Pausing(after=3, seconds=10.0)
    assert health.failed("h", 1, 0.0, 0, rule) is None
    assert health.failed("h", 1, 0.0, 0, rule) is None  # the same job again counts once
    assert health.failed("h", 2, 0.0, 0, rule) is None
    assert health.failed("h", 3, 0.0, 0, rule) is None  # nobody succeeded: the jobs' fault
    pause = health.failed("h", 4, 1.0, 5, rule)  # others succeeded meanwhile
    assert pause is not None and (pause.seconds, pause.until, pause.jobs) == (10.0, 11.0, (1, 2, 3))
    assert "3 different jobs failed in a row" in str(pause)
    assert health.failed("h", 5, 2.0, 9, rule) is None  # handed out before the pause
    assert not health.streak


def test_each_new_pause_doubles_up_to_its_cap_and_counts_failures_from_its_end_on():
    """Pauses of 10 s, then 20 s, then 40 s, and 40 s again (2**2 at most); a failure at the
    very time a pause ends counts toward the next (the host takes jobs again then)."""
    health, rule = HostHealth(), Pausing(after=2, seconds=10.0, doublings=2)
    now, successes, job, pauses = 0.0, 0, 0, []
    for _ in range(4):
        for _ in range(2):  # two different jobs fail, while others succeed elsewhere
            job += 1
            pause = health.failed("h", job, now, successes, rule)
            successes += 1
        assert pause is not None
        pauses.append((pause.seconds, pause.until))
        now = pause.until
    assert pauses == [(10.0, 10.0), (20.0, 30.0), (40.0, 70.0), (40.0, 110.0)]


# -- stragglers in the scheduler -----------------------------------------------------------------


def straggling(**options) -> tuple[Scheduler, dict[str, Attempt]]:
    """Hosts a, b, c and slow, one slot each, no look-ahead. a, b and c finish a job in 1 s;
    at t=1 they take jobs 4, 5, 6; slow's job 3, started at 0, is still running at t=2."""
    scheduler = cluster(100, ["a", "b", "c", "slow"], **options)
    first = {r.host: r for r in started(scheduler, scheduler.next_runs(0.0), 0.0)}
    for host in "abc":
        assert scheduler.attempt_ended(first[host].aid, ok=True, now=1.0, duration=1.0).final
    second = {r.host: r for r in started(scheduler, scheduler.next_runs(1.0), 1.0)}
    assert not any(r.speculative for r in second.values())  # slow's job: 1 s, not late yet
    return scheduler, {"slow": first["slow"], **second}


def test_a_straggler_gets_a_copy_and_jobs_running_normally_do_not():
    scheduler, running = straggling()
    assert scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0).final
    # slow's job has run 2 s > 1.5 x the 90th percentile (1 s); b's and c's jobs only 1 s
    (copy,) = scheduler.next_runs(2.0)
    assert copy.speculative
    assert (copy.job, copy.host, copy.number) == (running["slow"].job, "a", 2)


def test_the_first_finisher_wins_and_the_other_attempt_is_killed_and_stale():
    scheduler, running = straggling()
    scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    ended = scheduler.attempt_ended(copy.aid, ok=True, now=3.0, duration=1.0)
    assert (ended.verdict, ended.ok, ended.attempt) == (Verdict.FINAL, True, copy)
    (kill,) = scheduler.due_kills(3.0)
    assert (kill.attempt, kill.reason) == (running["slow"], KillReason.SUPERSEDED)
    assert scheduler.due_kills(3.0) == []  # each kill is decided once
    assert scheduler.attempt(running["slow"].aid) is not None  # holds its slot until its Exit
    late = scheduler.attempt_ended(running["slow"].aid, ok=False, now=3.1)
    assert late.verdict is Verdict.STALE
    assert scheduler.runtimes.slowness("slow") >= 3.0  # learnt from the loser's 3 s


def test_the_original_may_win_too():
    scheduler, running = straggling()
    scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    assert scheduler.attempt_ended(running["slow"].aid, ok=True, now=2.5).final
    assert [k.attempt for k in scheduler.due_kills(2.5)] == [copy]
    assert scheduler.attempt_ended(copy.aid, ok=True, now=2.6).verdict is Verdict.STALE


def test_no_copy_for_a_job_on_a_known_slow_host_while_it_is_on_its_time():
    scheduler = cluster(100, ["fast", "slow"])
    learn(scheduler, fast=1.0, slow=10.0)
    assert scheduler.runtimes.slowness("slow") == pytest.approx(10.0)
    runs = {r.host: r for r in started(scheduler, scheduler.next_runs(0.0), 0.0)}
    for t in range(1, 15):  # fast ends a job every second; slow's job is on time until 15 s
        scheduler.attempt_ended(runs["fast"].aid, ok=True, now=float(t), duration=1.0)
        (runs["fast"],) = started(scheduler, scheduler.next_runs(float(t)), float(t))
        assert not runs["fast"].speculative
    scheduler.attempt_ended(runs["fast"].aid, ok=True, now=16.0, duration=1.0)
    (copy,) = scheduler.next_runs(16.0)  # 16 s > 1.5 x 1 s x slowness 10: now it straggles
    assert copy.speculative and copy.job == runs["slow"].job


def test_at_the_end_of_the_batch_idle_slots_copy_what_they_would_finish_first():
    scheduler = cluster(4, ["a", "b", "slow"])
    learn(scheduler, a=1.0)
    first = {r.host: r for r in started(scheduler, scheduler.next_runs(0.0), 0.0)}
    scheduler.attempt_ended(first["a"].aid, ok=True, now=1.0, duration=1.0)
    scheduler.attempt_ended(first["b"].aid, ok=True, now=1.0, duration=1.0)
    (last,) = started(scheduler, scheduler.next_runs(1.0), 1.0)  # job 3; the batch is dry now
    # slow's job has run 1 s, as long as any job: a copy on the idle host would not end sooner
    assert scheduler.next_runs(1.0) == []
    wake = scheduler.next_wakeup(1.0)
    assert wake is not None and 1.0 < wake < 1.01  # from then on, its end is anyone's guess
    (copy,) = scheduler.next_runs(wake)
    assert copy.speculative and copy.job == first["slow"].job
    assert copy.host != last.host  # the idle host
    assert scheduler.next_runs(5.0) == []  # at most two attempts of a job


def test_copies_are_capped_while_jobs_are_still_queued():
    scheduler = cluster(10_000, [f"h{i}" for i in range(10)])
    runs = started(scheduler, scheduler.next_runs(0.0), 0.0)
    for run in runs[:5]:
        scheduler.attempt_ended(run.aid, ok=True, now=1.0, duration=1.0)
    started(scheduler, scheduler.next_runs(1.0), 1.0)
    first = min(run.aid for run in runs)  # aids are unique in the process, not per scheduler
    for run in live(scheduler):
        if run.aid >= first + 10:
            scheduler.attempt_ended(run.aid, ok=True, now=2.0, duration=1.0)
    # five attempts straggle (2 s > 1.5 s); five hosts are free; copies may take 10% of slots
    late = scheduler.next_runs(2.0)
    assert sum(r.speculative for r in late) == 1
    assert len(late) == 5  # the other free hosts take queued jobs
    assert scheduler.next_runs(3.0) == []


def test_at_most_two_live_attempts_per_job_and_never_two_on_one_host():
    scheduler = cluster(6, "abcdefgh")
    learn(scheduler, a=1.0)
    started(scheduler, scheduler.next_runs(0.0), 0.0)
    for t in range(1, 30):  # nothing ends: every attempt straggles, and six hosts are idle
        started(scheduler, scheduler.next_runs(float(t)), float(t))
        attempts = live(scheduler)
        assert max(Counter(a.job.id for a in attempts).values()) <= 2
        assert len({(a.job.id, a.host) for a in attempts}) == len(attempts)
    assert len(live(scheduler)) == 8  # two copies, one per idle host


@pytest.mark.parametrize(
    ("n", "hosts"), [(3, ["fast1", "fast2"]), (1000, ["fast1", "fast2", "slow"])]
)
def test_a_very_slow_host_sits_out_a_tail_that_the_others_finish_sooner(n: int, hosts: list[str]):
    scheduler = cluster(n, ["fast1", "fast2", "slow"])
    learn(scheduler, fast1=1.0, slow=10.0)
    runs = scheduler.next_runs(0.0)
    assert sorted(r.host for r in runs) == hosts  # with 3 jobs, slow would need 10 s for job 2
    if n == 3:
        scheduler.attempt_ended(runs[0].aid, ok=True, now=1.0, duration=1.0)
        assert [(r.job.id, r.host) for r in scheduler.next_runs(1.0)] == [(2, runs[0].host)]


def test_no_copies_when_speculation_is_off():
    scheduler = cluster(2, ["a", "b"], speculate=False)
    learn(scheduler, a=1.0)
    started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert scheduler.next_runs(1000.0) == []
    assert scheduler.next_wakeup(1000.0) is None


# -- timeouts ------------------------------------------------------------------------------------


def test_an_absolute_timeout_counts_from_the_real_start_and_is_a_retried_failure():
    scheduler = cluster(10, "ab", timeout=5, retries=1)
    on_a, on_b = sorted(scheduler.next_runs(0.0), key=lambda r: r.host)
    scheduler.attempt_started(on_a.aid, 3.0)  # handed out at 0, queued on the host until 3
    assert scheduler.due_kills(7.9) == []
    assert scheduler.next_wakeup(7.9) == 8.0
    assert scheduler.due_kills(8.0) == [Kill(on_a, KillReason.TIMEOUT)]
    assert scheduler.due_kills(9.0) == []
    ended = scheduler.attempt_ended(on_a.aid, ok=False, now=8.1)  # killed by a signal
    assert ended == Ended(Verdict.RETRY, on_a, error="timed out after 5 s")
    assert scheduler.attempt_ended(on_b.aid, ok=True, now=8.2).final
    (retry,) = [r for r in scheduler.next_runs(8.2) if r.job == on_a.job]
    assert retry.host == "b"  # where it did not fail
    scheduler.attempt_started(retry.aid, 8.2)
    assert [k.attempt for k in scheduler.due_kills(13.2)] == [retry]
    last = scheduler.attempt_ended(retry.aid, ok=False, now=13.3)
    assert last == Ended(Verdict.FINAL, retry, ok=False, error="timed out after 5 s")


def test_an_attempt_that_exits_0_as_its_timeout_kill_comes_has_succeeded():
    scheduler = cluster(1, "a", timeout=5)
    (run,) = started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert len(scheduler.due_kills(5.0)) == 1
    assert scheduler.attempt_ended(run.aid, ok=True, now=5.01) == Ended(Verdict.FINAL, run, ok=True)


def test_a_percentage_timeout_waits_for_three_successes_then_scales_the_median():
    scheduler = Scheduler(iter(jobs(100)), timeout="300%", speculate=False)
    scheduler.host_ready("a", 4, 0)
    runs = started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert scheduler.due_kills(1000.0) == []  # nothing to take a median of yet
    for run in runs[:3]:
        assert scheduler.attempt_ended(run.aid, ok=True, now=1000.0, duration=2.0).final
    assert [k.attempt for k in scheduler.due_kills(1000.0)] == [runs[3]]  # 1000 s > 3 x 2 s
    started(scheduler, scheduler.next_runs(1000.0), 1000.0)
    assert scheduler.due_kills(1005.9) == []
    assert len(scheduler.due_kills(1006.0)) == 3


def test_a_timed_out_attempt_whose_host_is_lost_is_a_failure():
    scheduler = cluster(1, "a", timeout=5, retries=0)
    started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert len(scheduler.due_kills(5.0)) == 1
    scheduler.host_lost("a")
    (abandoned,) = scheduler.take_abandoned()
    assert abandoned.error == "timed out after 5 s, then its host was lost"


# -- broken hosts --------------------------------------------------------------------------------


class Pair:
    """Hosts a and b, one slot each: b always succeeds, a succeeds or fails as told."""

    def __init__(self, **options) -> None:
        self.scheduler = cluster(1000, "ab", **options)
        self.on = {r.host: r for r in self.scheduler.next_runs(0.0)}

    def step(self, t: float, *, a_ok: bool) -> Ended | None:
        """End b's attempt, then a's (if a has one), then refill the free hosts."""
        assert self.scheduler.attempt_ended(self.on.pop("b").aid, ok=True, now=t).final
        on_a = self.on.pop("a", None)
        ended = self.scheduler.attempt_ended(on_a.aid, ok=a_ok, now=t) if on_a else None
        self.on.update((r.host, r) for r in self.scheduler.next_runs(t))
        return ended


def test_a_host_failing_different_jobs_in_a_row_is_paused_then_doubly():
    pair = Pair(pause_after=3, pause_for=60.0)
    ended = [pair.step(t, a_ok=False) for t in (1.0, 2.0, 3.0)]
    assert [e.paused if e else "no attempt" for e in ended[:2]] == [None, None]
    pause = ended[2].paused if ended[2] else None
    assert pause is not None
    assert (pause.host, pause.seconds, pause.until, len(set(pause.jobs))) == ("a", 60.0, 63.0, 3)
    assert set(pair.on) == {"b"}  # a got nothing new
    assert pair.step(62.9, a_ok=False) is None and set(pair.on) == {"b"}
    assert pair.step(63.0, a_ok=False) is None and set(pair.on) == {"a", "b"}  # back at work
    again = [pair.step(t, a_ok=False) for t in (64.0, 65.0, 66.0)][-1]
    assert again is not None and again.paused is not None
    assert again.paused.seconds == 120.0  # paused again: twice as long


def test_a_success_resets_the_failure_streak():
    pair = Pair(pause_after=3)
    for t in range(1, 30):
        ended = pair.step(float(t), a_ok=t % 3 == 0)  # two failures, then a success
        assert ended is not None and ended.paused is None


def test_no_host_is_paused_when_every_host_fails_every_job():
    scheduler = cluster(100, ["a", "b"], pause_after=2)
    runs = scheduler.next_runs(0.0)
    for t in range(1, 20):
        for run in runs:
            assert scheduler.attempt_ended(run.aid, ok=False, now=float(t)).paused is None
        runs = scheduler.next_runs(float(t))
        assert {r.host for r in runs} == {"a", "b"}


# -- a simulated cluster -------------------------------------------------------------------------


@dataclass
class SimHost:
    """An end machine as the dispatcher runs it: `slots` at once, the rest queued in order."""

    slots: int
    slowness: float
    running: set[int] = field(default_factory=set)
    queue: deque[Attempt] = field(default_factory=deque)


class Simulation:
    """The master's loop over a fake clock: an event queue of attempt ends, plus the wake-ups
    the scheduler asks for. A job's duration on a host is its size times the host's slowness."""

    def __init__(self, slowness: Sequence[float], sizes: Sequence[float], slots: int, **options):
        self.scheduler = Scheduler(iter(jobs(len(sizes))), **options)
        self.hosts = {f"h{i}": SimHost(slots, s) for i, s in enumerate(slowness)}
        for name, host in self.hosts.items():
            self.scheduler.host_ready(name, host.slots)
        self.sizes = sizes
        self.now = 0.0
        self.events: list[tuple[float, int]] = []
        self.killed: set[int] = set()
        self.finals: Counter[int] = Counter()
        self.copies = 0
        self.makespan = 0.0

    def run(self) -> Simulation:
        self.decide()
        while not self.scheduler.finished:
            wake = self.scheduler.next_wakeup(self.now)
            self.now = min(self.events[0][0] if self.events else math.inf, wake or math.inf)
            assert self.now < math.inf, "the run is stuck"
            while self.events and self.events[0][0] <= self.now:
                _, aid = heapq.heappop(self.events)
                if aid not in self.killed:
                    self.end(aid, ok=True)
            self.decide()
        assert self.finals == Counter(range(len(self.sizes)))
        return self

    def decide(self) -> None:
        while True:
            kills = self.scheduler.due_kills(self.now)
            for kill in kills:  # the dispatcher kills and reports the Exit at once
                host = self.hosts[kill.attempt.host]
                if kill.attempt.aid in host.running:
                    self.killed.add(kill.attempt.aid)
                else:
                    host.queue.remove(kill.attempt)
                self.end(kill.attempt.aid, ok=False)
            runs = self.scheduler.next_runs(self.now)
            for attempt in runs:
                self.copies += attempt.speculative
                self.hosts[attempt.host].queue.append(attempt)
                self.start_queued(attempt.host)
            if not kills and not runs:
                return

    def start_queued(self, name: str) -> None:
        host = self.hosts[name]
        while len(host.running) < host.slots and host.queue:
            attempt = host.queue.popleft()
            host.running.add(attempt.aid)
            self.scheduler.attempt_started(attempt.aid, self.now)
            end = self.now + self.sizes[attempt.job.id] * host.slowness
            heapq.heappush(self.events, (end, attempt.aid))

    def end(self, aid: int, *, ok: bool) -> None:
        attempt = self.scheduler.attempt(aid)
        assert attempt is not None
        self.hosts[attempt.host].running.discard(aid)
        ended = self.scheduler.attempt_ended(aid, ok=ok, now=self.now)
        if ended.final:
            self.finals[attempt.job.id] += 1
            self.makespan = self.now
        self.start_queued(attempt.host)


def ideal(slowness: Sequence[float], n: int, slots: int) -> float:
    """The least T by which `n` unit jobs can be done (each host works from time 0)."""
    ends = sorted(k * s for s in slowness for k in range(1, n + 1))
    return next(t for t in ends if sum(slots * math.floor(t / s + 1e-9) for s in slowness) >= n)


ONE_SLOW = [1.0] * 7 + [10.0]


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_speculation_ends_a_batch_with_a_slow_host_near_the_ideal(slots: int):
    """100 equal jobs of 1 s on 8 hosts, one of them 10x slower, default look-ahead."""
    on = Simulation(ONE_SLOW, [1.0] * 100, slots).run()
    off = Simulation(ONE_SLOW, [1.0] * 100, slots, speculate=False).run()
    best = ideal(ONE_SLOW, 100, slots)
    assert on.makespan <= best * 1.1
    assert off.makespan >= on.makespan * 1.3
    assert on.copies <= 10  # a handful of copies, not a doubled batch


def test_speculation_does_nothing_on_equal_hosts():
    on = Simulation([1.0] * 8, [1.0] * 100, 2).run()
    assert on.copies == 0
    assert on.makespan == ideal([1.0] * 8, 100, 2)


@pytest.mark.parametrize(("hosts", "mean_ratio"), [([1.0] * 8, 1.03), (ONE_SLOW, 0.7)])
def test_heavy_tailed_jobs_gain_from_copies_with_a_slow_host_and_lose_nothing_without(
    hosts: list[float], mean_ratio: float
):
    """Copies cannot help when jobs, not hosts, are slow: averaged over batches, they must not
    hurt then. (One batch may end a little earlier or later: with heavy tails, its end hangs on
    when the biggest job happens to start.)"""
    ratios = []
    for seed in range(8):
        sizes = [random.Random(seed * 1000 + i).lognormvariate(0, 1) for i in range(200)]
        on = Simulation(hosts, sizes, 2).run()
        off = Simulation(hosts, sizes, 2, speculate=False).run()
        ratios.append(on.makespan / off.makespan)
        assert on.copies <= 0.15 * len(sizes)
    assert sum(ratios) / len(ratios) <= mean_ratio
    assert max(ratios) <= 1.15


# -- found by the mutation check (scripts/mutation) --------------------------------------------


def test_a_failed_copy_while_the_original_runs_is_a_retry_that_waits_for_the_original():
    scheduler, running = straggling()
    scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    ended = scheduler.attempt_ended(copy.aid, ok=False, now=2.5)
    assert ended == Ended(Verdict.RETRY, copy, ok=False, error=None, paused=None)
    assert scheduler.attempt_ended(running["slow"].aid, ok=True, now=3.0).final


def test_a_percentage_timeout_scales_with_the_median_and_the_hosts_slowness():
    runtimes = Runtimes()
    for host, seconds in [("a", 1.0), ("b", 2.0), ("c", 10.0)]:
        runtimes.observe(host, seconds)
    median = runtimes.median()
    assert median == runtimes.quantile(0.5) < runtimes.quantile(1.0)  # not the longest job
    timeout = Timeout(percent=300.0, floor=0.0)
    assert timeout.limit(runtimes, 1.0) == pytest.approx(3 * median)
    assert timeout.limit(runtimes, 2.5) == pytest.approx(7.5 * median)  # slow is not hung


def test_a_timeout_then_a_lost_host_burns_a_retry_and_the_job_avoids_that_host():
    scheduler = cluster(1, ["a"], timeout=5, retries=1, speculate=False)
    (first,) = started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert len(scheduler.due_kills(5.0)) == 1
    assert scheduler.host_lost("a", now=5.0) == [first]
    assert scheduler.take_abandoned() == []  # one failure, one retry left: it runs again
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("b", 1, 0)
    (second,) = started(scheduler, scheduler.next_runs(6.0), 6.0)
    assert (second.host, second.number) == ("b", 2)  # not where it failed
    assert len(scheduler.due_kills(11.0)) == 1
    scheduler.host_lost("b", now=11.0)
    (abandoned,) = scheduler.take_abandoned()
    assert (abandoned.attempts, abandoned.host) == (2, "b")
    assert abandoned.error == "timed out after 5 s, then its host was lost"


def test_a_timeout_teaches_that_its_host_is_slow_and_a_plain_failure_does_not():
    """A host whose attempts only time out never finishes a job to be measured by: the time it
    was given is a lower bound on its slowness. A job that fails after a while says nothing
    about its host's speed."""
    timed = cluster(10, "ab", timeout=5, speculate=False)
    learn(timed, a=1.0)  # a typical job takes 1 s
    on_b = next(r for r in timed.next_runs(0.0) if r.host == "b")
    timed.attempt_started(on_b.aid, 1.0)
    assert [k.attempt for k in timed.due_kills(6.0)] == [on_b]
    timed.attempt_ended(on_b.aid, ok=False, now=6.5)
    assert timed.runtimes.slowness("b") == pytest.approx(5.5)  # ran 5.5 s, and unfinished

    failed = cluster(10, "ab", speculate=False)
    learn(failed, a=1.0)
    on_b = next(r for r in started(failed, failed.next_runs(0.0), 0.0) if r.host == "b")
    assert failed.attempt_ended(on_b.aid, ok=False, now=9.0).verdict is Verdict.RETRY
    assert failed.runtimes.slowness("b") == 1.0


def test_a_timed_out_original_whose_copy_runs_on_is_a_retry_that_says_why():
    scheduler, running = straggling(timeout=10)
    scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    assert [k.attempt for k in scheduler.due_kills(10.0)] == [running["slow"]]
    ended = scheduler.attempt_ended(running["slow"].aid, ok=False, now=10.1)
    assert ended == Ended(Verdict.RETRY, running["slow"], error="timed out after 10 s")
    assert scheduler.attempt_ended(copy.aid, ok=True, now=10.2).final


def test_a_failed_copy_that_pauses_its_host_says_so():
    scheduler, running = straggling(pause_after=2)
    # a fails job 4; b succeeds meanwhile, so a's next failure of another job pauses it
    assert scheduler.attempt_ended(running["a"].aid, ok=False, now=1.5).paused is None
    assert scheduler.attempt_ended(running["b"].aid, ok=True, now=2.0, duration=1.0).final
    copy = next(r for r in started(scheduler, scheduler.next_runs(2.0), 2.0) if r.speculative)
    assert (copy.host, copy.job) == ("a", running["slow"].job)
    ended = scheduler.attempt_ended(copy.aid, ok=False, now=2.5)
    assert ended.verdict is Verdict.RETRY  # the original still runs
    assert ended.paused == HostPause("a", 60.0, 62.5, (3, 4))


def test_next_wakeup_is_after_the_now_it_is_given():
    scheduler = cluster(10, "ab", timeout=5, speculate=False)
    on_a, on_b = sorted(scheduler.next_runs(0.0), key=lambda r: r.host)
    scheduler.attempt_started(on_a.aid, 0.0)
    scheduler.attempt_started(on_b.aid, 3.0)
    assert scheduler.next_wakeup(6.0) == 8.0  # a's timeout (at 5) is due already, b's is next


def test_no_wakeup_for_a_pause_that_ends_now():
    """A wake-up at `now` would have the master's loop spin without waiting."""
    pair = Pair(pause_after=3, pause_for=60.0)
    pause = [pair.step(t, a_ok=False) for t in (1.0, 2.0, 3.0)][-1]
    assert pause is not None and pause.paused is not None and pause.paused.until == 63.0
    assert pair.scheduler.next_wakeup(3.0) == 63.0
    assert pair.scheduler.next_wakeup(63.0) is None


def test_no_wakeup_for_attempts_that_have_a_copy_already():
    """The copy (started at 2 s) would straggle at 3.5 s, but a job gets one copy at most: the
    next time something may deserve one is when b's and c's jobs (started at 2.5 s) straggle."""
    scheduler, running = straggling()
    scheduler.attempt_ended(running["a"].aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    assert copy.speculative and copy.job == running["slow"].job
    for host in "bc":
        scheduler.attempt_ended(running[host].aid, ok=True, now=2.5, duration=1.0)
    assert len(started(scheduler, scheduler.next_runs(2.5), 2.5)) == 2
    assert scheduler.next_wakeup(2.5) == pytest.approx(4.0)  # 2.5 + 1.5 x 1 s


def test_a_superseded_loser_is_judged_by_its_jobs_size_and_its_lost_hosts_jobs_run_again():
    """slow runs jobs 0 and 2; a copy of job 0 wins elsewhere, sooner than a typical job; then
    slow is lost: job 2 runs again, though the lost attempt before it in job order was moot."""
    scheduler = Scheduler(iter(jobs(100)))
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("slow", 2, 0)
    learn(scheduler, a=1.0)
    runs = started(scheduler, scheduler.next_runs(0.0), 0.0)
    assert sorted((r.host, r.job.id) for r in runs) == [("a", 1), ("slow", 0), ("slow", 2)]
    on_a = next(r for r in runs if r.host == "a")
    scheduler.attempt_ended(on_a.aid, ok=True, now=2.0, duration=1.0)
    (copy,) = started(scheduler, scheduler.next_runs(2.0), 2.0)
    assert (copy.job.id, copy.host) == (0, "a")
    assert scheduler.attempt_ended(copy.aid, ok=True, now=2.5, duration=0.5).final
    # the loser ran 2.5 s on a job the copy did in 0.5 s (a small one): slow is 5x slower
    assert scheduler.runtimes.slowness("slow") == pytest.approx(5.0)
    assert len(scheduler.host_lost("slow", now=2.5)) == 2
    (again,) = scheduler.next_runs(2.5)
    assert (again.job.id, again.number) == (2, 2)


def test_a_loser_is_judged_by_the_size_its_winner_showed_on_a_host_of_its_own_speed():
    """The winner's host, f, is twice as fast as the typical host: its copy of job 0 done in
    0.25 s shows a job of 0.5 typical seconds, so the loser, 2.25 s on it, is 4.5x slower.
    (Judged by the winner's raw 0.25 s, slow would look 9x slower; by 0.25 x 0.5, 18x; by the
    start time added to the clock instead of taken from it, 8.5x.)"""
    scheduler = Scheduler(iter(jobs(100)))
    scheduler.host_ready("f", 1, 0)
    scheduler.host_ready("slow", 2, 0)
    learn(scheduler, a=1.0, f=0.5)
    assert scheduler.runtimes.slowness("f") == 0.5
    runs = started(scheduler, scheduler.next_runs(1.0), 1.0)
    assert sorted((r.host, r.job.id) for r in runs) == [("f", 1), ("slow", 0), ("slow", 2)]
    on_f = next(r for r in runs if r.host == "f")
    scheduler.attempt_ended(on_f.aid, ok=True, now=3.0, duration=0.5)
    (copy,) = started(scheduler, scheduler.next_runs(3.0), 3.0)
    assert (copy.job.id, copy.host, copy.speculative) == (0, "f", True)
    assert scheduler.attempt_ended(copy.aid, ok=True, now=3.25, duration=0.25).final
    assert scheduler.runtimes.slowness("slow") == pytest.approx(4.5)


def test_the_round_that_finds_the_batch_dry_copies_into_the_idle_slot_at_once():
    """a (3x slower) runs job 0, b does jobs 1 and 2 in 0.5 s each. The round in which b finds
    no job left plans a copy of job 0 on b in that same round, not in the next one (which may
    be seconds away: nothing else wakes the master before a's job ends)."""
    scheduler = Scheduler(iter(jobs(3)))
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("b", 1, 0)
    learn(scheduler, b=1.0)
    scheduler.runtimes.observe("a", 3.0)
    runs = {r.host: r for r in started(scheduler, scheduler.next_runs(0.0), 0.0)}
    assert {host: run.job.id for host, run in runs.items()} == {"a": 0, "b": 1}
    scheduler.attempt_ended(runs["b"].aid, ok=True, now=0.5, duration=0.5)
    (last,) = started(scheduler, scheduler.next_runs(0.5), 0.5)
    assert (last.job.id, last.host) == (2, "b")
    scheduler.attempt_ended(last.aid, ok=True, now=1.0, duration=0.5)
    (copy,) = scheduler.next_runs(1.0)
    assert (copy.job.id, copy.host, copy.speculative) == (0, "b", True)


def test_wake_time_is_when_a_lone_attempt_turns_straggler_or_outruns_a_copy_on_an_idle_slot():
    """Three 1 s jobs seen on a: an attempt started there at 10 s straggles just after 11.5 s
    (1.5 x 1 s). Once the batch ran dry, a copy on an idle slot is worth it as soon as the
    attempt outlasts every finished job and a copy there: 11 s on b, 13 s on a 3x slower host.
    """
    runtimes = Runtimes()
    for _ in range(3):  # exactly min_samples: enough to trust
        runtimes.observe("a", 1.0)
    spec = Speculation()
    running = [(1, "a", 10.0)]
    busy, idle = Slots("a", 1, 1, {1}), Slots("b", 1, 1)

    def wake(hosts: list[Slots], drained: bool, rules: Speculation = spec) -> float | None:
        return wake_time(rules, runtimes, lambda: running, hosts, 10.0, drained)

    straggles = wake([busy, idle], drained=False)
    assert straggles is not None and 11.5 < straggles == pytest.approx(11.5)  # after, not at
    assert wake([busy], drained=True) == straggles  # no idle slot: nothing earlier
    assert wake([busy, idle], drained=True) == pytest.approx(11.0)
    for _ in range(2):
        runtimes.observe("slow", 3.0)  # a host 3x slower: a copy there takes 3 s
    late = Speculation(min_runtime=10.0)  # (so that straggling comes later still)
    assert wake([busy, Slots("slow", 1, 1)], drained=True, rules=late) == pytest.approx(13.0)
    # on the slow host itself, an attempt outlasts every finished job only after 3 x 1 s
    running[:] = [(1, "slow", 10.0)]
    assert wake([Slots("slow", 1, 1, {1}), idle], drained=True) == pytest.approx(13.0)


def test_a_host_sits_out_the_tail_from_4x_the_fastest_for_the_jobs_the_others_do_meanwhile():
    """Typical jobs of 1 s; fast takes 2 s a job, slow 8 s (4x fast: very slow), mid 6 s."""
    runtimes = Runtimes()
    for _ in range(3):
        runtimes.observe("ref", 1.0)
    for host, seconds in [("fast", 2.0), ("slow", 8.0), ("mid", 6.0)]:
        runtimes.observe(host, seconds)
    assert [runtimes.slowness(h) for h in ("fast", "slow", "mid")] == [2.0, 8.0, 6.0]
    spec, fast, slow = Speculation(), Slots("fast", 1, 1), Slots("slow", 1, 1)
    # while slow runs one job (8 s), fast's slot ends 8 / 2 = 4 jobs
    assert tail_limit(spec, runtimes, slow, [fast]) == pytest.approx(4.0)
    fast.attempts.add(1)  # one of them is already running there
    assert tail_limit(spec, runtimes, slow, [fast]) == pytest.approx(3.0)
    fast.attempts.update(range(2, 9))  # more queued there than it ends meanwhile
    assert tail_limit(spec, runtimes, slow, [fast]) == 0.0
    assert tail_limit(spec, runtimes, Slots("mid", 1, 1), [fast]) == 0.0  # 3x: takes its share
    runtimes.observe("quick", 0.5)  # jobs under a second: the rate is not capped at 1 a second
    quick = runtimes.expected("quick")
    assert quick < 1.0
    limit = tail_limit(spec, runtimes, slow, [Slots("quick", 1, 1)])
    assert limit == pytest.approx(runtimes.expected("slow") / quick)


def test_no_tail_to_sit_out_before_min_samples_without_others_or_under_4x_the_fastest():
    """Two typical jobs of 1 s and one of 8 s on slow: from the third sample (min_samples) on,
    slow sits out the last 8 jobs an unmeasured host would do meanwhile; not before it, not
    with no other host to do them, and not beside a host 3x faster only (fast is 2x, mid 6x
    the typical host: mid is slow, not very slow)."""
    spec, runtimes = Speculation(), Runtimes()
    slow = Slots("slow", 1, 1)
    for host, seconds in [("ref", 1.0), ("ref", 1.0)]:
        runtimes.observe(host, seconds)
        assert tail_limit(spec, runtimes, slow, [Slots("ref", 1, 1)]) == 0.0  # too few yet
    runtimes.observe("slow", 8.0)
    assert tail_limit(spec, runtimes, slow, [Slots("new", 1, 1)]) == pytest.approx(8.0)
    assert tail_limit(spec, runtimes, slow, []) == 0.0
    for host, seconds in [("ref", 1.0)] * 4 + [("fast", 2.0), ("mid", 6.0)]:
        runtimes.observe(host, seconds)  # (enough typical jobs to keep the median at 1 s)
    assert (runtimes.slowness("fast"), runtimes.slowness("mid")) == (2.0, 6.0)
    assert tail_limit(spec, runtimes, Slots("mid", 1, 1), [Slots("fast", 1, 1)]) == 0.0


def test_a_stopped_attempt_adds_a_sample_only_if_its_host_looks_slower_for_its_jobs_size():
    runtimes = Runtimes()
    runtimes.at_least("b", 6.0, size=2.0)
    assert runtimes.slowness("b") == 3.0
    assert runtimes.floor == 1.0  # the unmeasured hosts count as 1.0: none is faster yet
    runtimes.at_least("b", 2.0, size=2.0)  # no slower than known: no sample
    runtimes.at_least("b", 6.0, size=2.0)  # as slow as known: no sample either
    runtimes.at_least("b", 18.0, size=2.0)
    assert runtimes.slowness("b") == 6.0  # the median of 3 and 9: two samples, not more


def test_the_straggler_threshold_and_the_outlook_scale_with_the_jobs_and_the_host():
    runtimes = Runtimes()
    for _ in range(3):
        runtimes.observe("a", 2.0)
    assert Speculation().threshold(runtimes, 1.0) == 3.0  # 1.5 x 2 s
    runtimes = Runtimes()
    for seconds in (1.0, 1.0, 1.0, 1.0, 9.0):
        runtimes.observe("a", seconds)
    runtimes.observe("b", 2.0)  # b is 2x slower
    assert runtimes.slowness("b") == 2.0
    # 1 s on b is 0.5 s of a typical host: any job could be that far along, the mean says
    mean = runtimes.mean()
    assert runtimes.outlook("b", 1.0) == pytest.approx((mean * 2 - 1.0, mean))


def _plan(runtimes: Runtimes, hosts: list[Slots], *, drained: bool, running=None) -> list:
    """The copies planned at 10 s; by default for one attempt on a started at 0 s."""
    if running is None:
        running = [Running(1, "a", 0.0, True, frozenset({"a"}))]
    usable = {h.name for h in hosts}
    return plan_speculation(
        Speculation(), runtimes, running, hosts, 10.0, usable=usable, drained=drained, copies=0
    )


def test_plan_speculation_room_samples_cap_and_the_targets_speed():
    def seen(n: int = 3) -> Runtimes:
        runtimes = Runtimes()
        for _ in range(n):
            runtimes.observe("a", 1.0)
        return runtimes

    a = Slots("a", 1, 1, {1})
    queued = Slots("b", 1, 3, {7})  # b's slot is busy, its queue has room
    assert _plan(seen(), [a, queued], drained=False) == [(1, "b")]  # behind b's job: 2 s < 10
    assert _plan(seen(), [a, queued], drained=True) == []  # once dry, copies take idle slots only
    assert _plan(seen(2), [a, Slots("b", 1, 1)], drained=True) == []  # too few samples
    slow_b = seen()
    slow_b.observe("b", 20.0)  # a copy on b would take 20 s: later than the original's 10 s more
    assert _plan(slow_b, [a, Slots("b", 1, 1)], drained=True) == []
    # 20 slots: copies may take 10% of them, 2, while jobs still wait
    hosts = [Slots(f"h{i}", 1, 1) for i in range(20)]
    running = []
    for i in range(3):
        hosts[i].attempts.add(100 + i)
        running.append(Running(100 + i, f"h{i}", 0.0, True, frozenset({f"h{i}"})))
    assert len(_plan(seen(), hosts, drained=False, running=running)) == 2


def test_once_dry_a_queued_attempt_is_copied_if_its_wait_and_run_outlast_a_copy():
    """slow (4 s a job, one slot) runs attempt 1 and queues 2 and 3: 2 starts in 4 s and ends
    in 8 s, 3 ends in 12 s. Once the batch ran dry, an idle host of 5 s a job copies 3 (5 s
    is sooner than 12 s); one of 14 s copies neither (were 3's wait counted as 2 in line
    behind 2 rather than one more, it would end in 16 s and be copied there)."""
    runtimes = Runtimes()
    for _ in range(3):
        runtimes.observe("a", 1.0)
    for host, seconds in [("slow", 4.0), ("m5", 5.0), ("m14", 14.0)]:
        runtimes.observe(host, seconds)
    avoid = frozenset({"slow"})
    running = [
        Running(1, "slow", 9.0, False, avoid),
        Running(2, "slow", None, True, avoid),
        Running(3, "slow", None, True, avoid),
    ]
    slow = Slots("slow", 1, 3, {1, 2, 3})
    assert _plan(runtimes, [slow, Slots("m5", 1, 1)], drained=True, running=running) == [(3, "m5")]
    assert _plan(runtimes, [slow, Slots("m14", 1, 1)], drained=True, running=running) == []


def test_a_copy_queued_behind_a_slow_hosts_job_waits_that_hosts_time_for_a_job():
    """a's attempt, 10 s along, is expected to need 10 s more. On b, busy with a job and with
    room in its queue, a copy waits for b's job, then runs: 2 x 4 s = 8 s for a host 4x
    slower, worth it; 12 s for one 6x slower, not (were the wait a typical host's job, 1 s,
    it would be 7 s)."""
    for slowness, plan in [(4.0, [(1, "b")]), (6.0, [])]:
        runtimes = Runtimes()
        for _ in range(3):
            runtimes.observe("a", 1.0)
        runtimes.observe("b", slowness)
        hosts = [Slots("a", 1, 1, {1}), Slots("b", 1, 3, {7})]
        assert _plan(runtimes, hosts, drained=False) == plan


def test_a_straggler_is_an_attempt_past_the_threshold_of_its_own_host():
    runtimes = Runtimes()
    for _ in range(3):
        runtimes.observe("a", 1.0)
    runtimes.observe("slow", 3.0)  # 3x slower: its threshold is 4.5 s, a's 1.5 s
    idle = Slots("b", 1, 1)

    def copies(host: str, started: float) -> list:
        running = [Running(1, host, started, True, frozenset({host}))]
        return _plan(runtimes, [Slots(host, 1, 1, {1}), idle], drained=False, running=running)

    assert copies("a", 8.5) == []  # 1.5 s: at the threshold, not past it
    assert copies("a", 8.4) == [(1, "b")]
    assert copies("slow", 6.0) == []  # 4 s on a 3x slower host: on time
    assert start_wait(1, 1, 10.0) == 10.0  # one slot: the next in line waits a whole job


def test_each_copy_planned_on_a_host_fills_it_and_delays_the_next():
    none: frozenset[str] = frozenset()
    two = Target("t", 2, 0, 2, 1.0, 1.0)
    plan = plan_copies([Candidate(1, 10.0, 1.0, none), Candidate(2, 9.0, 1.0, none)], [two], 5)
    assert plan == [(1, "t"), (2, "t")]
    # one slot, busy: the first copy ends at 2 s (1 s wait), a second would wait behind it: 3 s
    busy = Target("t", 2, 1, 1, 1.0, 1.0)
    plan = plan_copies([Candidate(1, 10.0, 1.0, none), Candidate(2, 2.5, 1.0, none)], [busy], 5)
    assert plan == [(1, "t")]  # 3 s is later than candidate 2's 2.5 s
    busy = Target("t", 2, 1, 1, 1.0, 1.0)  # (plan_copies updated the last one)
    plan = plan_copies([Candidate(1, 10.0, 1.0, none), Candidate(2, 3.5, 1.0, none)], [busy], 5)
    assert plan == [(1, "t"), (2, "t")]  # 3 s is sooner than 3.5 s


def test_quantiles_by_nearest_rank_and_zero_without_samples():
    runtimes = Runtimes()
    assert (runtimes.quantile(0.9), runtimes.median(), runtimes.mean()) == (0.0, 0.0, 0.0)
    for seconds in (1.0, 3.0, 1.0):
        runtimes.observe("a", seconds)
    values = sorted(runtimes._norm)  # as if on a host of slowness 1: three distinct ranks
    assert values[0] < values[1]
    ranks = [runtimes.quantile(q) for q in (0.0, 0.33, 0.34, 1.0)]
    assert ranks == [values[0], values[0], values[1], values[2]]


def test_due_scales_each_deadline_by_its_hosts_slowness_and_says_none_when_none_is_ahead():
    runtimes = Runtimes()
    runtimes.at_least("slow", 3.0)  # no typical job yet: 3 s for nothing known says nothing
    runtimes.at_least("slow", 6.0, size=2.0)  # 3x slower

    def after(slowness: float) -> float:
        return 2.0 * slowness

    starts = [(1, "fast", 0.0), (2, "slow", 0.0)]
    assert due(starts, after, runtimes, 5.0) == ([(1, 2.0)], 6.0)  # slow's deadline: 6 s
    assert due(starts, after, runtimes, 6.0) == ([(1, 2.0), (2, 6.0)], None)
    assert due([], after, runtimes, 6.0) == ([], None)


def test_a_median_window_gives_the_exact_median_of_its_last_samples():
    """A host's slowness is the median of its last samples, kept sorted as they come and go
    (no sort per success): after each sample, the median of exactly the last `size`, odd or
    even in number, duplicates and the leaving of the least or the greatest included."""
    window = MedianWindow(4)
    samples = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 0.5, 8.0, 9.0, 7.0, 9.0]
    for count, sample in enumerate(samples, 1):
        assert window.add(sample) == median(samples[max(0, count - 4) : count])
        assert len(window) == min(count, 4)
