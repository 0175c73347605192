"""anet.scheduler: who runs what; room per host, lazy pulls, lost hosts give their jobs back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from anet.batch import Job
from anet.scheduler import Attempt, Scheduler, default_lookahead


class Source:
    """A job iterator that counts how many jobs were pulled from it."""

    def __init__(self, n: int | None = None) -> None:
        self.n = n
        self.pulled = 0

    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        if self.n is not None and self.pulled >= self.n:
            raise StopIteration
        job = Job(self.pulled, b"echo %d" % self.pulled)
        self.pulled += 1
        return job


def per_host(runs: list[Attempt]) -> Counter[str]:
    return Counter(run.host for run in runs)


# -- room per host -------------------------------------------------------------------------------


@pytest.mark.parametrize(("slots", "lookahead"), [(1, 0), (1, 3), (2, 2), (4, 1), (16, 5)])
def test_a_host_gets_slots_plus_lookahead_attempts_at_most(slots: int, lookahead: int):
    scheduler = Scheduler(Source())
    scheduler.host_ready("a", slots, lookahead)
    assert len(scheduler.next_runs()) == slots + lookahead
    assert scheduler.next_runs() == []
    assert scheduler.in_flight == slots + lookahead


@pytest.mark.parametrize("slots", [1, 2, 3, 8, 64])
def test_default_lookahead(slots: int):
    scheduler = Scheduler(Source())
    scheduler.host_ready("a", slots)
    assert len(scheduler.next_runs()) == slots + default_lookahead(slots)
    assert default_lookahead(slots) >= 2  # enough to hide one round trip


@given(
    st.integers(1, 8),
    st.integers(0, 8),
    st.integers(0, 80),
    st.integers(2, 4),
)
def test_work_spreads_evenly_at_start(slots: int, lookahead: int, jobs: int, hosts: int):
    scheduler = Scheduler(Source(jobs))
    for i in range(hosts):
        scheduler.host_ready(f"h{i}", slots, lookahead)
    runs = scheduler.next_runs()
    assert len(runs) == min(jobs, hosts * (slots + lookahead))
    counts = [per_host(runs)[f"h{i}"] for i in range(hosts)]
    assert max(counts) - min(counts) <= 1


def test_two_hosts_get_alternate_jobs():
    scheduler = Scheduler(Source(4))
    scheduler.host_ready("a", 2, 2)
    scheduler.host_ready("b", 2, 2)
    runs = scheduler.next_runs()
    assert per_host(runs) == {"a": 2, "b": 2}
    assert sorted(run.job.id for run in runs) == [0, 1, 2, 3]


# -- lazy pulls ----------------------------------------------------------------------------------


def test_no_job_is_pulled_without_a_host():
    source = Source()
    scheduler = Scheduler(source)
    assert scheduler.next_runs() == []
    assert scheduler.has_pending
    assert source.pulled == 0


def test_jobs_are_pulled_only_as_room_allows():
    source = Source()
    scheduler = Scheduler(source)
    scheduler.host_ready("a", 2, 1)
    scheduler.host_ready("b", 1, 1)
    assert len(scheduler.next_runs()) == 5
    assert source.pulled == 5
    assert scheduler.next_runs() == []
    assert source.pulled == 5


def test_attempt_ended_frees_room_and_next_runs_refills():
    source = Source()
    scheduler = Scheduler(source)
    scheduler.host_ready("a", 1, 1)
    first, _second = scheduler.next_runs()
    assert scheduler.attempt_ended(first.aid) == first
    assert scheduler.attempt(first.aid) is None
    assert scheduler.in_flight == 1
    (third,) = scheduler.next_runs()
    assert (third.host, third.job.id, third.number) == ("a", 2, 1)
    assert source.pulled == 3
    assert scheduler.next_runs() == []


def test_ending_an_unknown_or_already_ended_attempt_returns_none():
    scheduler = Scheduler(Source())
    scheduler.host_ready("a", 1, 0)
    (run,) = scheduler.next_runs()
    assert scheduler.attempt_ended(run.aid + 1000) is None
    assert scheduler.attempt_ended(run.aid) == run
    assert scheduler.attempt_ended(run.aid) is None


# -- lost hosts ----------------------------------------------------------------------------------


def test_host_lost_returns_its_attempts_and_they_run_again_first_in_job_order():
    scheduler = Scheduler(Source(20))
    scheduler.host_ready("a", 2, 1)
    scheduler.host_ready("b", 2, 1)
    runs = scheduler.next_runs()
    on_a = sorted((r for r in runs if r.host == "a"), key=lambda r: r.job.id)
    on_b = [r for r in runs if r.host == "b"]
    assert scheduler.attempt_ended(on_a[1].aid) is not None  # one of a's jobs had finished

    lost = scheduler.host_lost("a")
    assert [r.aid for r in lost] == [on_a[0].aid, on_a[2].aid]
    assert [r.job.id for r in lost] == sorted(r.job.id for r in lost)
    assert scheduler.hosts == ["b"]
    for run in lost:
        assert scheduler.attempt(run.aid) is None
        assert scheduler.attempt_ended(run.aid) is None  # its late Exit is ignored

    for run in on_b:
        scheduler.attempt_ended(run.aid)
    again = scheduler.next_runs()
    assert [r.job.id for r in again[:2]] == [r.job.id for r in lost]
    assert [r.number for r in again[:2]] == [2, 2]
    assert all(r.host == "b" for r in again)
    assert {r.aid for r in again}.isdisjoint(r.aid for r in runs)
    assert [r.job.id for r in again[2:]] == [6]  # then the batch goes on where it was
    assert all(r.number == 1 for r in again[2:])


def test_lost_jobs_wait_for_a_host_and_keep_the_run_unfinished():
    scheduler = Scheduler(Source(2))
    scheduler.host_ready("a", 2, 2)
    runs = scheduler.next_runs()
    assert len(runs) == 2
    assert len(scheduler.host_lost("a")) == 2
    assert scheduler.in_flight == 0
    assert scheduler.has_pending
    assert not scheduler.finished
    assert scheduler.next_runs() == []
    scheduler.host_ready("a", 1, 0)  # back again, e.g. after a reconnect
    (rerun,) = scheduler.next_runs()
    assert (rerun.job.id, rerun.number) == (0, 2)


def test_lost_attempt_numbers_keep_counting_across_losses():
    scheduler = Scheduler(Source(1))
    for expected in (1, 2, 3):
        scheduler.host_ready("a", 1, 0)
        (run,) = scheduler.next_runs()
        assert (run.job.id, run.number) == (0, expected)
        assert scheduler.host_lost("a") == [run]


def test_losing_an_unknown_host_returns_nothing():
    scheduler = Scheduler(Source(3))
    assert scheduler.host_lost("ghost") == []
    scheduler.host_ready("a", 1, 0)
    scheduler.next_runs()
    assert scheduler.host_lost("a") != []
    assert scheduler.host_lost("a") == []


def test_host_ready_again_keeps_the_hosts_attempts():
    """A known host announced again must not forget (orphan) the attempts it already runs."""
    scheduler = Scheduler(Source(10))
    scheduler.host_ready("a", 1, 1)
    first = scheduler.next_runs()
    scheduler.host_ready("a", 1, 1)  # a reconnect announced before the loss was
    assert scheduler.next_runs() == []
    assert {r.aid for r in scheduler.host_lost("a")} == {r.aid for r in first}


def test_host_ready_again_with_more_slots_adds_only_the_difference():
    scheduler = Scheduler(Source(20))
    scheduler.host_ready("a", 1, 1)
    assert len(scheduler.next_runs()) == 2
    scheduler.host_ready("a", 3, 1)
    assert len(scheduler.next_runs()) == 2
    assert scheduler.in_flight == 4


# -- the end -------------------------------------------------------------------------------------


def test_finished_only_when_source_exhausted_and_every_attempt_ended():
    scheduler = Scheduler(Source(3))
    assert not scheduler.finished
    scheduler.host_ready("a", 2, 0)
    first = scheduler.next_runs()
    assert not scheduler.finished  # a job is still in the source
    for run in first:
        scheduler.attempt_ended(run.aid)
    assert not scheduler.finished
    (last,) = scheduler.next_runs()
    assert not scheduler.finished  # source is dry but the last attempt runs
    assert scheduler.attempt_ended(last.aid) == last
    scheduler.next_runs()
    assert scheduler.finished
    assert not scheduler.has_pending


def test_empty_source_finishes_once_a_host_asked_for_work():
    scheduler = Scheduler(Source(0))
    scheduler.host_ready("a", 1)
    assert scheduler.next_runs() == []
    assert scheduler.finished


def test_aids_are_unique():
    scheduler = Scheduler(Source(200))
    seen: set[int] = set()
    scheduler.host_ready("a", 3, 2)
    scheduler.host_ready("b", 2, 1)
    for step in range(100):
        for run in scheduler.next_runs():
            assert run.aid not in seen
            seen.add(run.aid)
        if step % 7 == 3:  # lost jobs run again under new aids
            scheduler.host_lost("a")
            scheduler.host_ready("a", 3, 2)
        scheduler.attempt_ended(max(seen))
    assert len(seen) > 100


# -- any interleaving ends every job exactly once ----------------------------------------------

HOSTS = ("h0", "h1", "h2")


class SchedulerMachine(RuleBasedStateMachine):
    """Hosts come and go, attempts end, decisions are asked for, in any order. The model plays
    the I/O layer: it ends only attempts that are running, and after a loss no Exit arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduler: Scheduler
        self.source: Source
        self.capacity: dict[str, int] = {}  # ready hosts
        self.running: dict[int, Attempt] = {}  # aid -> attempt, as the I/O layer knows it
        self.stale: list[int] = []  # aids of attempts on lost hosts
        self.aids: set[int] = set()
        self.tries: Counter[int] = Counter()
        self.completed: Counter[int] = Counter()

    @initialize(n=st.integers(0, 25))
    def start(self, n: int) -> None:
        self.source = Source(n)
        self.scheduler = Scheduler(self.source)

    @rule(name=st.sampled_from(HOSTS), slots=st.integers(1, 3), lookahead=st.integers(0, 2))
    def host_ready(self, name: str, slots: int, lookahead: int) -> None:
        """A new host, one back after a loss, or a ready one announced again with a new size."""
        self.scheduler.host_ready(name, slots, lookahead)
        self.capacity[name] = slots + lookahead

    @rule(name=st.sampled_from(HOSTS))
    def host_lost(self, name: str) -> None:
        lost = self.scheduler.host_lost(name)
        expected = {aid for aid, a in self.running.items() if a.host == name}
        assert {a.aid for a in lost} == expected
        assert [a.job.id for a in lost] == sorted(a.job.id for a in lost)
        for attempt in lost:
            del self.running[attempt.aid]
            self.stale.append(attempt.aid)
        self.capacity.pop(name, None)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def attempt_ended_ok(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.running)), label="aid")
        self.end(aid)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def late_exit_of_a_lost_host(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(self.stale), label="stale aid")
        assert self.scheduler.attempt_ended(aid) is None

    @rule()
    def next_runs(self) -> None:
        runs = self.scheduler.next_runs()
        for attempt in runs:
            assert attempt.host in self.capacity, "attempt given to a host that is not ready"
            assert attempt.aid not in self.aids, "aid reused"
            assert self.completed[attempt.job.id] == 0, "a finished job was handed out again"
            self.tries[attempt.job.id] += 1
            assert attempt.number == self.tries[attempt.job.id]
            self.aids.add(attempt.aid)
            self.running[attempt.aid] = attempt
        load = Counter(a.host for a in self.running.values())
        for host in {a.host for a in runs}:
            assert load[host] <= self.capacity[host], "host given more than slots + lookahead"

    def end(self, aid: int) -> None:
        attempt = self.scheduler.attempt_ended(aid)
        assert attempt is not None
        assert attempt == self.running.pop(aid)
        self.scheduler.job_done(attempt.job.id)
        self.completed[attempt.job.id] += 1

    @invariant()
    def agrees_with_the_io_layer(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        assert all(a.host in self.capacity for a in self.running.values())
        assert self.scheduler.in_flight == len(self.running)
        assert sorted(self.scheduler.hosts) == sorted(self.capacity)

    @invariant()
    def one_attempt_per_job_and_no_second_completion(self) -> None:
        jobs = Counter(a.job.id for a in self.running.values())
        assert all(count == 1 for count in jobs.values())
        assert all(count == 1 for count in self.completed.values())
        if hasattr(self, "scheduler") and self.scheduler.finished:
            assert not self.running

    def teardown(self) -> None:
        if not hasattr(self, "scheduler"):
            return
        if not self.capacity:
            self.host_ready("h0", 1, 1)
        for _ in range(10 * self.source.n + 10):
            self.next_runs()
            if self.scheduler.finished:
                break
            for aid in sorted(self.running):
                self.end(aid)
        assert self.scheduler.finished
        assert self.completed == Counter(range(self.source.n))
        assert self.source.pulled == self.source.n


SchedulerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
test_any_interleaving_completes_every_job_exactly_once = SchedulerMachine.TestCase
