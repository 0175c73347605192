"""anet.core.scheduler: who runs what; room per host, lazy pulls, lost hosts give jobs back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from anet.core.backlog import Backlog
from anet.core.batch import Job
from anet.core.lookahead import SAMPLES, RoundTrips, default_lookahead
from anet.core.readahead import NOT_YET
from anet.core.scheduler import Attempt, Ended, KillReason, Scheduler, Verdict
from anet.core.speculation import Speculation
from anet.errors import UsageError


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


def _steady_state(lookahead: int | None, rtt: float, job: float, rounds: int = 40) -> int:
    """Run 2-slot host `a` whose Started frames arrive `rtt` after each Run; its most in flight."""
    scheduler = Scheduler(Source(), speculate=False)
    scheduler.host_ready("a", 2, lookahead)
    now, most = 0.0, 0
    for _ in range(rounds):
        runs = scheduler.next_runs(now)
        now += rtt
        for run in runs:
            scheduler.attempt_started(run.aid, now)
        most = max(most, scheduler.in_flight)
        for aid in sorted(a.aid for a in runs)[:2]:  # two slots: two jobs end per round
            scheduler.attempt_ended(aid, now=now + job, duration=job)
        now += job
    return most


def _whole_reports(done: bool) -> tuple[list[Verdict], list[int], float]:
    """A 2-slot host with a 50 ms round trip whose attempts end within one report: through
    `attempt_done` (a Done) or `attempt_started` then `attempt_ended`. The verdicts, the host's
    capacity after each round, and the median run time learned."""
    scheduler = Scheduler(Source(), speculate=False)
    scheduler.host_ready("a", 2)
    now, verdicts, capacities = 0.0, [], []
    for _ in range(30):
        runs = scheduler.next_runs(now)
        now += 0.05
        for run in sorted(runs, key=lambda r: r.aid)[:2]:
            started, ended_at = now - 0.02, now
            if done:
                ended = scheduler.attempt_done(run.aid, started, ended_at, ok=True, duration=0.02)
            else:
                scheduler.attempt_started(run.aid, started)
                ended = scheduler.attempt_ended(run.aid, ok=True, now=ended_at, duration=0.02)
            verdicts.append(ended.verdict)
        capacities.append(scheduler._hosts["a"].capacity)
    return verdicts, capacities, scheduler.runtimes.median()


def test_a_whole_report_is_a_start_and_an_end():
    assert _whole_reports(done=True) == _whole_reports(done=False)
    scheduler = Scheduler(Source(), speculate=False)
    scheduler.host_ready("a", 1)
    (run,) = scheduler.next_runs(0.0)[:1]
    scheduler.attempt_done(run.aid, 0.1, 0.2, ok=True, duration=0.1)
    assert run.aid not in scheduler._flights._starts  # never timed as running


def test_the_default_queue_grows_to_hide_a_long_round_trip():
    # 50 ms round trip, 20 ms jobs, 2 slots: Little's law wants 2 x 50 / 20 = 5 queued.
    assert _steady_state(None, rtt=0.05, job=0.02) >= 2 + 5


def test_the_queue_follows_the_typical_job_as_it_drifts_with_the_round_trip_unchanged():
    """A steady 50 ms round trip (measured anew, it re-sizes nothing): while jobs take 1 s, 2
    queued are enough; when they drop to 10 ms, the re-sizing every RETUNE_EVERY successes
    grows the queue toward Little's law's 2 x 50 / 10 = 10."""
    scheduler = Scheduler(Source(), speculate=False)
    scheduler.host_ready("a", 2)
    now, most = 0.0, {}
    for job in [1.0] * 40 + [0.01] * 200:
        runs = scheduler.next_runs(now)
        now += 0.05
        for run in runs:
            scheduler.attempt_started(run.aid, now)
        most[job] = max(most.get(job, 0), scheduler.in_flight)
        for aid in sorted(a.aid for a in runs)[:2]:  # two slots: two jobs end per round
            scheduler.attempt_ended(aid, now=now + job, duration=job)
        now += job
    assert most[1.0] == 2 + default_lookahead(2)
    assert most[0.01] >= 2 + 10


def test_the_default_queue_stays_put_on_a_short_round_trip_and_is_capped():
    assert _steady_state(None, rtt=0.0005, job=0.5) == 2 + default_lookahead(2)
    assert _steady_state(None, rtt=10.0, job=0.001) <= 2 + 8 * 2


def test_an_explicit_lookahead_is_never_changed():
    assert _steady_state(1, rtt=0.05, job=0.02) == 2 + 1


@settings(deadline=None)  # pure logic: a loaded box (or mutmut's stats run) is slow
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
    assert scheduler.attempt_ended(first.aid).attempt == first
    assert scheduler.attempt(first.aid) is None
    assert scheduler.in_flight == 1
    (third,) = scheduler.next_runs()
    assert (third.host, third.job.id, third.number) == ("a", 2, 1)
    assert source.pulled == 3
    assert scheduler.next_runs() == []


def test_ending_an_unknown_or_already_ended_attempt_is_stale():
    scheduler = Scheduler(Source())
    scheduler.host_ready("a", 1, 0)
    (run,) = scheduler.next_runs()
    assert scheduler.attempt_ended(run.aid + 1000) == Ended(Verdict.STALE, None)
    ended = scheduler.attempt_ended(run.aid)  # as called before verdicts: no ok, no now
    assert ended == Ended(Verdict.FINAL, run, ok=True)
    assert (ended.job, ended.number) == (run.job, run.number)  # still reads as the Attempt
    scheduler.job_done(run.job.id)  # harmless
    assert scheduler.attempt_ended(run.aid) == Ended(Verdict.STALE, None)


# -- lost hosts ----------------------------------------------------------------------------------


def test_host_lost_returns_its_attempts_and_they_run_again_first_in_job_order():
    scheduler = Scheduler(Source(20))
    scheduler.host_ready("a", 2, 1)
    scheduler.host_ready("b", 2, 1)
    runs = scheduler.next_runs()
    on_a = sorted((r for r in runs if r.host == "a"), key=lambda r: r.job.id)
    on_b = [r for r in runs if r.host == "b"]
    assert scheduler.attempt_ended(on_a[1].aid).final  # one of a's jobs had finished

    lost = scheduler.host_lost("a")
    assert [r.aid for r in lost] == [on_a[0].aid, on_a[2].aid]
    assert [r.job.id for r in lost] == sorted(r.job.id for r in lost)
    assert scheduler.hosts == ["b"]
    for run in lost:
        assert scheduler.attempt(run.aid) is None
        assert scheduler.attempt_ended(run.aid).verdict is Verdict.STALE  # its late Exit

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
    assert scheduler.attempt_ended(last.aid).attempt == last
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


# -- retries -------------------------------------------------------------------------------------


def test_a_failed_job_is_retried_on_a_host_where_it_did_not_fail():
    scheduler = Scheduler(Source(10))
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("b", 1, 0)
    on_a, on_b = sorted(scheduler.next_runs(0.0), key=lambda r: r.host)
    assert scheduler.attempt_ended(on_a.aid, ok=False, now=1.0) == Ended(Verdict.RETRY, on_a)
    (next_on_a,) = scheduler.next_runs(1.0)
    assert (next_on_a.host, next_on_a.job.id) == ("a", 2)  # job 0 waits for b
    assert scheduler.attempt_ended(on_b.aid, ok=True, now=2.0).final
    (retry,) = scheduler.next_runs(2.0)
    assert (retry.host, retry.job, retry.number) == ("b", on_a.job, 2)


@pytest.mark.parametrize("retries", [0, 1, 2, 5])
def test_after_the_last_retry_the_failure_is_final(retries: int):
    """With one host, which failed the job, the retries run there: no host is better."""
    scheduler = Scheduler(Source(2), retries=retries)
    scheduler.host_ready("a", 1, 0)
    verdicts = []
    for t in range(retries + 1):
        (run,) = scheduler.next_runs(float(t))
        assert (run.job.id, run.number) == (0, t + 1)  # first in line, before job 1
        verdicts.append(scheduler.attempt_ended(run.aid, ok=False, now=t + 0.5))
    assert [v.verdict for v in verdicts] == [Verdict.RETRY] * retries + [Verdict.FINAL]
    assert not verdicts[-1].ok and verdicts[-1].error is None  # the exit status says it all
    (second,) = scheduler.next_runs(9.0)
    assert scheduler.attempt_ended(second.aid, ok=True, now=9.5).final
    assert scheduler.next_runs(9.5) == []
    assert scheduler.finished


# -- lost hosts and the loss cap -----------------------------------------------------------------


def test_a_lost_host_does_not_burn_retries():
    scheduler = Scheduler(Source(1), retries=0, max_losses=9)
    for number in range(1, 5):
        scheduler.host_ready("a", 1, 0)
        (run,) = scheduler.next_runs(float(number))
        assert run.number == number
        assert scheduler.host_lost("a") == [run]
    scheduler.host_ready("a", 1, 0)
    (run,) = scheduler.next_runs(9.0)
    assert scheduler.attempt_ended(run.aid, ok=True, now=10.0) == Ended(Verdict.FINAL, run, ok=True)
    assert scheduler.take_abandoned() == []


def test_a_job_that_kills_every_host_it_runs_on_is_given_up():
    scheduler = Scheduler(Source(1), max_losses=3)
    for name in ("a", "b", "c"):
        scheduler.host_ready(name, 1, 0)
        assert len(scheduler.next_runs(0.0)) == 1
        scheduler.host_lost(name)
    scheduler.host_ready("d", 1, 0)
    assert scheduler.next_runs(1.0) == []
    assert not scheduler.finished  # until the master took the news
    (abandoned,) = scheduler.take_abandoned()
    assert (abandoned.job.id, abandoned.attempts, abandoned.host) == (0, 3, "c")
    assert abandoned.error == "3 hosts were lost while running it (last: c)"
    assert scheduler.take_abandoned() == []
    assert scheduler.finished


# -- any interleaving ends every job exactly once ----------------------------------------------

HOSTS = ("h0", "h1", "h2")


class SchedulerMachine(RuleBasedStateMachine):
    """The model plays the I/O layer while hosts come and go, attempts start, succeed, fail, time
    out and get copies, polite mode holds hosts (their queues are taken back) and kills attempts
    (evicted), and the clock jumps, in any order. After a loss no Exit of that host counts; a
    killed attempt's Exit reports a signal (one killed while queued never started); a paused or
    held host must get no new attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduler: Scheduler
        self.source: Source
        self.now = 0.0
        self.capacity: dict[str, int] = {}  # ready hosts
        self.paused: dict[str, float] = {}  # host -> until
        self.held: set[str] = set()  # hosts polite mode holds
        self.evicted: set[int] = set()  # aids polite mode kills
        self.taken_back: set[int] = set()  # aids taken back from a held host's queue
        self.running: dict[int, Attempt] = {}  # aid -> attempt, as the I/O layer knows it
        self.started: dict[int, float] = {}  # aid -> when
        self.killed: dict[int, KillReason] = {}
        self.stale: list[int] = []  # aids of attempts on lost hosts
        self.aids: set[int] = set()
        self.numbers: Counter[int] = Counter()  # job -> attempts handed out
        self.completed: Counter[int] = Counter()  # job -> final outcomes

    @initialize(
        n=st.integers(0, 25),
        retries=st.integers(0, 2),
        max_losses=st.integers(1, 3),
        timeout=st.sampled_from([None, 3.0, "200%"]),
        speculate=st.booleans(),
        pause_after=st.integers(1, 3),
    )
    def start(self, n: int, speculate: bool, **options) -> None:
        self.source = Source(n)
        rules = Speculation(min_runtime=0.5, min_samples=2) if speculate else False
        self.scheduler = Scheduler(self.source, speculate=rules, **options, pause_for=5.0)

    @rule(name=st.sampled_from(HOSTS), slots=st.integers(1, 3), lookahead=st.integers(0, 2))
    def host_ready(self, name: str, slots: int, lookahead: int) -> None:
        """A new host, one back after a loss, or a ready one announced again with a new size."""
        self.scheduler.host_ready(name, slots, lookahead)
        self.capacity[name] = slots + lookahead

    @rule(name=st.sampled_from(HOSTS))
    def host_lost(self, name: str) -> None:
        lost = self.scheduler.host_lost(name, now=self.now)
        assert {a.aid for a in lost} == {i for i, a in self.running.items() if a.host == name}
        for attempt in lost:
            del self.running[attempt.aid]
            self.killed.pop(attempt.aid, None)
            self.taken_back.discard(attempt.aid)
            self.stale.append(attempt.aid)
        self.capacity.pop(name, None)
        self.held.discard(name)
        self.take_abandoned()

    @rule(name=st.sampled_from(HOSTS), held=st.booleans())
    def host_held(self, name: str, held: bool) -> None:
        """Polite mode holds the host, or no longer does: its queued attempts are taken back."""
        taken = self.scheduler.host_held(name, held)
        queued = {
            aid
            for aid, a in self.running.items()
            if a.host == name and aid not in self.started and aid not in self.killed
        }
        queued -= self.taken_back  # already, their kill not handed out yet
        assert {a.aid for a in taken} == (queued if held and name in self.capacity else set())
        self.taken_back |= queued if held else set()
        if held and name in self.capacity:
            self.held.add(name)
        else:
            self.held.discard(name)

    @precondition(lambda self: set(self.started) - self.evicted)
    @rule(data=st.data())
    def attempt_evicted(self, data: st.DataObject) -> None:
        """Polite mode kills a running attempt (--yield moves it, --memfree-kill)."""
        aid = data.draw(st.sampled_from(sorted(set(self.started) - self.evicted)), label="aid")
        self.scheduler.attempt_evicted(aid, "evicted")
        self.evicted.add(aid)

    @rule(dt=st.sampled_from([0.1, 0.6, 1.0, 2.5, 6.0]), decide=st.booleans())
    def tick(self, dt: float, decide: bool) -> None:
        """Time passes; maybe the master starts what is queued and asks for kills and runs."""
        self.now += dt
        if decide:
            self.start_queued()
            self.due_kills()
            self.next_runs()

    @precondition(lambda self: set(self.running) - set(self.started))
    @rule(data=st.data())
    def attempt_started(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(set(self.running) - set(self.started))), label="aid")
        self.scheduler.attempt_started(aid, self.now)
        self.started[aid] = self.now

    def start_queued(self) -> None:
        for aid in sorted(set(self.running) - set(self.started) - set(self.killed)):
            self.scheduler.attempt_started(aid, self.now)
            self.started[aid] = self.now

    @precondition(lambda self: self.running)
    @rule(data=st.data(), ok=st.booleans())
    def attempt_ended(self, data: st.DataObject, ok: bool) -> None:
        self.end(data.draw(st.sampled_from(sorted(self.running)), label="aid"), ok)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def late_exit_of_a_lost_host(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(self.stale), label="stale aid")
        assert self.scheduler.attempt_ended(aid, now=self.now) == Ended(Verdict.STALE, None)

    @rule()
    def due_kills(self) -> None:
        for kill in self.scheduler.due_kills(self.now):
            aid = kill.attempt.aid
            assert self.running[aid] == kill.attempt and aid not in self.killed
            assert kill.reason is not KillReason.TIMEOUT or aid in self.started
            self.killed[aid] = kill.reason

    @rule()
    def next_runs(self) -> None:
        runs = self.scheduler.next_runs(self.now)
        for attempt in runs:
            assert attempt.host in self.capacity, "attempt given to a host that is not ready"
            assert self.paused.get(attempt.host, -1.0) <= self.now, "attempt on a paused host"
            assert attempt.host not in self.held, "attempt on a held host"
            assert attempt.aid not in self.aids, "aid reused"
            assert self.completed[attempt.job.id] == 0, "a finished job was handed out again"
            self.numbers[attempt.job.id] += 1
            assert attempt.number == self.numbers[attempt.job.id]
            self.aids.add(attempt.aid)
            self.running[attempt.aid] = attempt
        load = Counter(a.host for a in self.running.values())
        for host in {a.host for a in runs}:
            assert load[host] <= self.capacity[host], "host given more than slots + lookahead"

    def end(self, aid: int, ok: bool) -> None:
        attempt = self.running.pop(aid)
        reason = self.killed.pop(aid, None)
        if aid not in self.started and reason is None:
            self.scheduler.attempt_started(aid, self.now)
        ran = self.started.pop(aid, None) is not None or reason is None
        if not ran:  # killed in its host's queue: the dispatcher answers with no Started
            ok = False
        self.evicted.discard(aid)
        self.taken_back.discard(aid)
        # `ok` may hold even for a killed attempt: it exited 0 just before the kill
        ended = self.scheduler.attempt_ended(aid, ok=ok, now=self.now)  # duration: now - start
        assert ended.attempt == attempt
        if ended.excused and not ran and attempt.number == self.numbers[attempt.job.id]:
            self.numbers[attempt.job.id] -= 1  # taken back unstarted: its number is given again
        if ended.verdict is Verdict.STALE:  # a loser, killed or ending before its kill
            assert self.completed[attempt.job.id] == 1
        else:
            assert reason is not KillReason.SUPERSEDED
            assert ended.verdict is Verdict.FINAL or not ok
        if ended.final:
            assert ended.ok == ok
            self.completed[attempt.job.id] += 1
        if ended.paused is not None:
            self.paused[ended.paused.host] = ended.paused.until

    def take_abandoned(self) -> None:
        for abandoned in self.scheduler.take_abandoned():
            assert not any(a.job == abandoned.job for a in self.running.values())
            self.completed[abandoned.job.id] += 1

    @invariant()
    def agrees_with_the_io_layer(self) -> None:
        assert all(a.host in self.capacity for a in self.running.values())
        assert self.scheduler.in_flight == len(self.running)
        assert sorted(self.scheduler.hosts) == sorted(self.capacity)

    @invariant()
    def each_job_ends_once_with_at_most_two_live_attempts_on_distinct_hosts(self) -> None:
        assert all(count == 1 for count in self.completed.values())
        unfinished = [a for a in self.running.values() if not self.completed[a.job.id]]
        assert len({(a.job.id, a.host) for a in unfinished}) == len(unfinished)
        live = Counter(a.job.id for a in unfinished if a.aid not in self.killed)
        assert all(count <= 2 for count in live.values())
        if self.scheduler.finished:
            assert not self.running

    def teardown(self) -> None:
        for name in set(HOSTS) - set(self.capacity):  # all hosts back; h2's jobs take 3 s
            self.host_ready(name, 1, 1)
        for name in sorted(self.held):
            self.host_held(name, False)
        for _ in range(1000):
            self.take_abandoned()
            self.due_kills()
            self.next_runs()
            if self.scheduler.finished:
                break
            self.start_queued()
            self.now += 1.0
            for aid, attempt in sorted(self.running.items()):
                took = 3.0 if attempt.host == "h2" else 1.0
                if aid in self.killed or self.started.get(aid, self.now) <= self.now - took:
                    self.end(aid, ok=True)
        assert self.scheduler.finished
        assert self.completed == Counter(range(self.source.n))
        assert self.source.pulled == self.source.n


SchedulerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,  # pure logic: a loaded box is slow
)
# 300 interleavings in two tests of 150: as many as one test of 300 tried, and each test under
# 10 s when the suite's workers outnumber the cores (one of 300 took 14 s at -n 4 on 2 cores).
test_any_interleaving_completes_every_job_exactly_once = SchedulerMachine.TestCase


class test_any_other_interleaving_completes_every_job_exactly_once(SchedulerMachine.TestCase):
    """A second 150 (examples are drawn afresh for each test)."""


@pytest.mark.parametrize(
    "option", [{"retries": -1}, {"max_losses": 0}, {"pause_after": 0}, {"pause_for": -0.5}]
)
def test_each_option_out_of_its_bounds_is_refused_in_words_and_its_bound_is_taken(option):
    with pytest.raises(UsageError) as refused:
        Scheduler(iter(Source(1)), **option)
    assert str(refused.value) == (
        "need retries >= 0, max_losses >= 1, pause_after >= 1, pause_for >= 0"
    )
    (name,) = option
    bound = {"retries": 0, "max_losses": 1, "pause_after": 1, "pause_for": 0.0}[name]
    Scheduler(iter(Source(1)), **{name: bound})  # the bound itself is fine
    Scheduler(iter(Source(1)), **{name: bound + 1})


def test_each_hosts_successes_teach_the_scheduler_its_slowness():
    """a, c and d do a job in 1 s (the typical host), b in 3 s: after a few successes each, b
    is 3x slower than the others."""
    scheduler = Scheduler(iter(Source(20)), speculate=False)
    for host in "abcd":
        scheduler.host_ready(host, 1, 0)
    for round in range(4):
        for run in scheduler.next_runs(float(round)):
            duration = 3.0 if run.host == "b" else 1.0
            assert scheduler.attempt_ended(run.aid, now=round + 0.5, duration=duration).final
    assert [scheduler.runtimes.slowness(host) for host in "abcd"] == [1.0, 3.0, 1.0, 1.0]


def test_an_attempt_taken_back_from_a_held_host_then_lost_with_it_runs_again():
    """a runs job 0 and queues job 1; polite mode holds a (job 1 is taken back, its Kill sent),
    then a is lost before job 1's Exit. Job 0, lost with max_losses hosts, is given up; job 1,
    which never ran there, is not: it runs again."""
    scheduler = Scheduler(iter(Source(2)), max_losses=1)
    scheduler.host_ready("a", 1, 1)
    first, queued = scheduler.next_runs(0.0)
    scheduler.attempt_started(first.aid, 0.0)
    assert scheduler.host_held("a", True) == [queued]
    assert sorted(a.job.id for a in scheduler.host_lost("a", now=1.0)) == [0, 1]
    (given_up,) = scheduler.take_abandoned()  # job 0: lost with max_losses hosts
    assert given_up.job.id == 0
    scheduler.host_ready("b", 1, 0)
    (again,) = scheduler.next_runs(2.0)
    assert (again.job.id, again.host) == (1, "b")


def test_a_final_failure_that_pauses_its_host_says_so():
    """With no retries, each failure is final; the second different job to fail on a while b
    succeeds pauses a, and that final verdict carries the pause (the engine warns with it)."""
    scheduler = Scheduler(iter(Source(10)), retries=0, pause_after=2, pause_for=10.0)
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("b", 1, 0)
    verdicts = []
    for now in (0.0, 1.0):
        runs = {run.host: run for run in scheduler.next_runs(now)}
        assert scheduler.attempt_ended(runs["b"].aid, ok=True, now=now + 0.5).final
        verdicts.append(scheduler.attempt_ended(runs["a"].aid, ok=False, now=now + 0.5))
    assert [(e.verdict, e.ok) for e in verdicts] == [(Verdict.FINAL, False)] * 2
    assert verdicts[0].paused is None
    pause = verdicts[1].paused
    assert pause is not None and (pause.host, pause.until) == ("a", 11.5)


def test_a_starved_backlog_is_not_drained_and_the_scheduler_looks_again_soon():
    """A stream whose next job has not arrived (readahead.py's NOT_YET) is looked at again
    within a tenth of a second, and only then: a scheduler with nothing to wait for sleeps."""
    source = iter([Job(0, b"a"), NOT_YET, Job(1, b"b")])
    backlog = Backlog(source)
    assert backlog.next_for("h", frozenset({"h"})).job.id == 0
    assert backlog.next_for("h", frozenset({"h"})) is None  # NOT_YET: nothing now
    assert backlog.starved and not backlog.source_done and not backlog.drained
    assert not backlog.fewer_than(1)  # more may come: a slow host's tail must not be decided
    assert backlog.next_for("h", frozenset({"h"})).job.id == 1
    scheduler = Scheduler(iter([NOT_YET, Job(0, b"a")]), retries=0, speculate=False)
    scheduler.host_ready("h", 1, 0)
    assert scheduler.next_runs(10.0) == []
    wake = scheduler.next_wakeup(10.0)
    assert wake is not None and 10.0 < wake <= 10.1
    assert not scheduler.finished
    assert [r.job.id for r in scheduler.next_runs(wake)] == [0]
    assert scheduler.next_wakeup(wake) is None  # job 0 came: nothing to look at again


def test_after_abort_idle_hosts_start_nothing_though_jobs_are_left():
    source = Source(10)
    scheduler = Scheduler(source, speculate=False)
    scheduler.host_ready("h", 1, 0)
    (run,) = scheduler.next_runs(0.0)
    scheduler.attempt_started(run.aid, 0.0)
    scheduler.abort()
    assert [(k.attempt, k.reason) for k in scheduler.due_kills(1.0)] == [(run, KillReason.HALTED)]
    assert scheduler.attempt_ended(run.aid, ok=False, now=1.0).verdict is Verdict.STALE
    scheduler.host_ready("other", 4, 0)
    assert scheduler.next_runs(2.0) == [] and scheduler.in_flight == 0
    assert not scheduler.has_pending and source.pulled == 1  # the batch is closed, not read


def test_a_host_lost_after_abort_gives_up_nothing():
    """The halted job gets no result: losing its host is no loss that could give it up."""
    scheduler = Scheduler(Source(10), max_losses=1, speculate=False)
    scheduler.host_ready("h", 1, 0)
    (run,) = scheduler.next_runs(0.0)
    scheduler.attempt_started(run.aid, 0.0)
    scheduler.abort()
    assert scheduler.host_lost("h", now=1.0) == [run]
    assert scheduler.take_abandoned() == []


def test_draining_kills_only_the_queued_attempts_and_says_so():
    """--halt soon: the Kill of a queued attempt is DRAINED (the dispatcher drops it from its
    queue, one that started meanwhile runs on), never HALTED; a started one gets none."""
    scheduler = Scheduler(Source(10), speculate=False)
    scheduler.host_ready("h", 1, 2)
    started, *queued = scheduler.next_runs(0.0)
    scheduler.attempt_started(started.aid, 0.0)
    scheduler.abort(started_too=False)
    kills = scheduler.due_kills(1.0)
    assert [(k.attempt, k.reason) for k in kills] == [(r, KillReason.DRAINED) for r in queued]


@pytest.mark.parametrize("whole", [True, False], ids=["done", "started-then-exit"])
def test_a_drained_attempt_the_host_had_started_gives_its_success(whole):
    """--halt soon's Kill reached a queued attempt after the host started it: it ran to its
    end, so its success stands, whether the host says so in one Done or a Started and an Exit
    (a Done used to have to set the start itself, else the end read as "taken from its
    queue": STALE, the result dropped)."""
    scheduler = Scheduler(Source(10), speculate=False)
    scheduler.host_ready("h", 1, 2)
    started, late, _ = scheduler.next_runs(0.0)
    scheduler.attempt_started(started.aid, 0.0)
    scheduler.abort(started_too=False)
    assert KillReason.DRAINED in {k.reason for k in scheduler.due_kills(1.0)}
    if whole:
        ended = scheduler.attempt_done(late.aid, 1.0, 1.5, ok=True, duration=0.5)
    else:
        scheduler.attempt_started(late.aid, 1.0)
        ended = scheduler.attempt_ended(late.aid, ok=True, now=1.5, duration=0.5)
    assert (ended.verdict, ended.ok) == (Verdict.FINAL, True)


def test_an_attempt_being_killed_when_the_run_aborts_ends_stale():
    """A timed-out attempt's Kill is on its way when --halt now comes: its Exit then gives its
    job no result and no retry (as every other attempt's), and no second Kill is sent."""
    scheduler = Scheduler(Source(2), retries=1, timeout=5.0, speculate=False)
    scheduler.host_ready("h", 1, 0)
    (run,) = scheduler.next_runs(0.0)
    scheduler.attempt_started(run.aid, 0.0)
    assert [k.reason for k in scheduler.due_kills(6.0)] == [KillReason.TIMEOUT]
    scheduler.abort()
    assert scheduler.due_kills(6.1) == []
    assert scheduler.attempt_ended(run.aid, ok=False, now=6.2).verdict is Verdict.STALE
    assert scheduler.next_runs(7.0) == [] and scheduler.in_flight == 0


def test_a_round_trip_measured_by_a_start_resizes_the_queue_at_once():
    """Known 20 ms jobs, then a first Started 50 ms after its Run: the queue grows then, not
    only after the next successes (Little's law: 2 slots x 50 / 20 = 5 queued)."""
    scheduler = Scheduler(Source(), speculate=False)
    scheduler.host_ready("a", 2)
    for _ in range(3):
        scheduler.runtimes.observe("a", 0.02)
    runs = scheduler.next_runs(0.0)
    assert len(runs) == 2 + default_lookahead(2)
    scheduler.attempt_started(runs[0].aid, 0.05)
    assert len(scheduler.next_runs(0.05)) == 3


def test_the_defaults_two_retries_and_a_pause_of_60_s_after_5_different_failures():
    """The scheduler's own defaults, for a caller that sets none: a job runs 3 times at most; a
    host that fails 5 different jobs in a row while another succeeds gets none for 60 s."""
    scheduler = Scheduler(Source(1), speculate=False)
    scheduler.host_ready("a", 1, 0)
    verdicts = []
    for t in range(3):
        (run,) = scheduler.next_runs(float(t))
        verdicts.append(scheduler.attempt_ended(run.aid, ok=False, now=t + 0.5).verdict)
    assert verdicts == [Verdict.RETRY, Verdict.RETRY, Verdict.FINAL]

    scheduler = Scheduler(Source(100), speculate=False)
    scheduler.host_ready("a", 1, 0)
    scheduler.host_ready("b", 1, 0)
    on = {r.host: r for r in scheduler.next_runs(0.0)}
    pauses = []
    for t in range(1, 6):  # b succeeds each second, a fails a new job each second
        scheduler.attempt_ended(on.pop("b").aid, ok=True, now=float(t))
        pauses.append(scheduler.attempt_ended(on.pop("a").aid, ok=False, now=float(t)).paused)
        on.update((r.host, r) for r in scheduler.next_runs(float(t)))
    assert pauses[:4] == [None] * 4
    assert pauses[4] is not None and (pauses[4].seconds, pauses[4].until) == (60.0, 65.0)


def test_a_round_trip_names_its_host_only_when_it_changes_the_estimate():
    """Re-sizing a host's queue follows its round-trip estimate, the least recent sample: a
    sample that leaves it as it was (most of them) asks for no re-sizing; one below it, or
    the least one leaving the window, does."""
    trips = RoundTrips()
    changed = []
    delays = [0.05, 0.07, 0.05, 0.03, *[0.04] * (SAMPLES - 1), 0.04]
    for aid, delay in enumerate(delays):
        trips.sent(aid, "a", 10.0)
        changed.append(trips.started(aid, 10.0 + delay) == "a")
    # the first sample, then 0.03; the last 0.04 pushes 0.03 out of the window: 0.04 now
    assert changed == [True, False, False, True, *[False] * (SAMPLES - 1), True]
    assert trips.estimate("a") == pytest.approx(0.04)
    assert trips.started(99, 11.0) is None  # never sent: no sample
