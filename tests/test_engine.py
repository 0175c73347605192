"""The engine on a fake clock: every path the fault tests take against real sshd (a lost host,
a frozen one, a crashed dispatcher, retries, speculation, timeouts, halt, forged frames), in
milliseconds. `Hosts` is a recording double of the dispatchers: it takes the engine's frames,
runs nothing, and fails the test on any frame it did not expect; the test says when each
attempt starts, prints and ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anet.core.batch import MAX_COMMAND, Job
from anet.core.engine import KILL_GRACE, Actions, Engine, HostStats, RunPolicy
from anet.core.files import JobFiles
from anet.core.record import JobResult, new_result
from anet.core.spool import OutputCap
from anet.errors import HostError
from dispatcher.protocol import STDERR, STDOUT, Done, Exit, Kill, Message, Output, Run, Started


def jobs(n: int) -> list[Job]:
    return [Job(i, b"echo %d" % i) for i in range(n)]


class Hosts:
    """The dispatchers as the engine sees them: what it sent each, attempt by attempt."""

    def __init__(self, engine: Engine, stats: dict[str, HostStats]) -> None:
        self.engine = engine
        self.stats = stats
        self.now = 0.0
        self.runs: dict[str, list[Run]] = {}  # sent, not ended, by host
        self.kills: list[tuple[str, int]] = []
        self.results = []
        self.attempts = []
        self.wakeup: float | None = None

    def ready(self, host: str, slots: int) -> None:
        self.stats.setdefault(host, HostStats())
        self.engine.host_ready(host, slots)
        self.round()

    def lose(self, host: str) -> None:
        self.engine.host_lost(host, self.now)
        self.runs.pop(host, None)
        self.round()

    def round(self) -> Actions:
        self.engine.round(self.now)
        return self.take()

    def take(self) -> Actions:
        actions = self.engine.take()
        for host, frames in actions.frames.items():
            for msg in frames:
                if isinstance(msg, Run):
                    self.runs.setdefault(host, []).append(msg)
                elif isinstance(msg, Kill):
                    assert msg.aid in {r.aid for r in self.runs.get(host, [])}, msg
                    assert msg.grace == KILL_GRACE, msg
                    self.kills.append((host, msg.aid))
                else:
                    raise AssertionError(f"unexpected frame to {host}: {msg}")
        self.results += actions.results
        self.attempts += actions.attempts
        self.wakeup = actions.wakeup
        return actions

    def on(self, host: str, job_id: int) -> Run:
        (run,) = [r for r in self.runs.get(host, []) if r.job == job_id]
        return run

    def say(self, host: str, *msgs: Message) -> None:
        for msg in msgs:
            self.engine.frame(host, msg, self.now)
        self.round()

    def start(self, host: str, job_id: int, slot: int = 1) -> Run:
        run = self.on(host, job_id)
        self.say(host, Started(run.aid, 1000 + run.aid, slot))
        return run

    def finish(self, host: str, job_id: int, out: bytes = b"", code: int = 0) -> None:
        run = self.on(host, job_id)
        self.runs[host].remove(run)
        msgs: list[Message] = [Output(run.aid, STDOUT, out)] if out else []
        self.say(host, *msgs, Exit(run.aid, code, None, 0.5, 0.1, 1000))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.round()


def engine_for(n: int, **policy) -> tuple[Engine, Hosts]:
    stats: dict[str, HostStats] = {}
    engine = Engine(jobs(n), RunPolicy(**policy), stats, wall_offset=1e9)
    return engine, Hosts(engine, stats)


def test_jobs_go_out_in_one_round_per_host_and_results_come_back_once():
    engine, hosts = engine_for(3, speculate=False)
    hosts.ready("h1", 2)
    assert sorted(r.job for r in hosts.runs["h1"]) == [0, 1, 2]  # 2 slots + a look-ahead
    assert all(r.command == b"echo %d" % r.job for r in hosts.runs["h1"])
    assert all(r.env == {} for r in hosts.runs["h1"]) and not engine.files
    for i in range(3):
        hosts.start("h1", i, slot=1 + i % 2)
        hosts.finish("h1", i, b"out %d\n" % i)
    assert [(r.id, r.ok, r.stdout, r.host) for r in hosts.results] == [
        (i, True, b"out %d\n" % i, "h1") for i in range(3)
    ]
    assert engine.finished and hosts.stats["h1"].done == 3 and hosts.stats["h1"].running == 0
    assert [a.start >= 1e9 for a in hosts.attempts] == [True] * 3  # Unix times, by the offset


def test_output_of_both_streams_is_kept_apart_and_in_order():
    _, hosts = engine_for(1, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.start("h1", 0)
    hosts.say("h1", Output(run.aid, STDOUT, b"a"), Output(run.aid, STDERR, b"E"))
    hosts.finish("h1", 0, b"b")
    (result,) = hosts.results
    assert (result.stdout, result.stderr) == (b"ab", b"E")


def test_a_lost_host_loses_no_job_its_attempts_run_again_elsewhere():
    engine, hosts = engine_for(4, speculate=False)
    hosts.ready("h1", 2)
    hosts.start("h1", 0)
    hosts.start("h1", 1, slot=2)
    sent = sorted(r.job for r in hosts.runs["h1"])  # two running, the rest queued there
    hosts.now = 5.0
    hosts.lose("h1")
    assert sorted((a.attempt.job.id, a.code, a.signal) for a in hosts.attempts) == [
        (i, None, None) for i in sent
    ]
    hosts.ready("h2", 4)
    for i in range(4):
        hosts.start("h2", i, slot=1 + i)
        hosts.finish("h2", i)
    assert sorted(r.id for r in hosts.results) == [0, 1, 2, 3]
    assert {r.id: r.attempts for r in hosts.results}[0] == 2
    assert engine.finished


def test_a_crashed_dispatcher_comes_back_and_finishes_the_batch():
    _, hosts = engine_for(2, speculate=False)
    hosts.ready("h1", 1)
    hosts.start("h1", 0)
    hosts.lose("h1")  # the dispatcher died; the connection is fine
    hosts.ready("h1", 1)  # a new one, with nothing of the old
    hosts.start("h1", 0)
    hosts.finish("h1", 0)
    hosts.start("h1", 1)
    hosts.finish("h1", 1)
    assert sorted((r.id, r.attempts) for r in hosts.results) == [(0, 2), (1, 2)]  # both sent


def test_a_job_lost_with_five_hosts_is_given_up_with_a_reason():
    engine, hosts = engine_for(1, speculate=False)
    for n in range(5):
        hosts.ready(f"h{n}", 1)
        if hosts.runs.get(f"h{n}"):
            hosts.start(f"h{n}", 0)
        hosts.lose(f"h{n}")
    (result,) = hosts.results
    error = "5 hosts were lost while running it (last: h4)"
    assert result == JobResult(0, False, None, None, "h4", 5, 0.0, b"", b"", error=error)
    assert engine.finished


def test_a_failed_attempt_is_retried_on_another_host_then_final():
    _, hosts = engine_for(1, speculate=False, retries=1)
    hosts.ready("h1", 1)
    hosts.ready("h2", 1)
    first = "h1" if hosts.runs.get("h1") else "h2"
    other = "h2" if first == "h1" else "h1"
    hosts.start(first, 0)
    hosts.finish(first, 0, code=3)
    assert hosts.results == [] and hosts.stats[first].failed_attempts == 1
    hosts.start(other, 0)
    hosts.finish(other, 0, code=4)
    (result,) = hosts.results
    assert (result.ok, result.exit_code, result.attempts, result.host) == (False, 4, 2, other)


def test_a_job_past_its_timeout_is_killed_and_its_exit_counts_as_a_failure():
    engine, hosts = engine_for(1, speculate=False, retries=0, timeout=10.0)
    hosts.ready("h1", 1)
    run = hosts.start("h1", 0)
    assert hosts.wakeup == pytest.approx(10.0)
    assert engine.take().wakeup == pytest.approx(10.0)  # still due, though nothing new came
    hosts.advance(10.0)
    assert hosts.kills == [("h1", run.aid)]
    hosts.say("h1", Exit(run.aid, None, 15, 10.0, 0.0, 0))
    (result,) = hosts.results
    assert not result.ok and result.error == "timed out after 10 s" and result.signal == 15


def test_a_straggler_gets_a_copy_and_the_first_to_end_wins_the_other_is_killed():
    _, hosts = engine_for(12)
    hosts.ready("fast", 4)
    hosts.ready("slow", 1)
    for _ in range(20):  # the fast host makes the typical job 0.5 s
        for run in list(hosts.runs.get("fast", [])):
            hosts.start("fast", run.job, slot=1 + run.job % 4)
            hosts.finish("fast", run.job)
        straggler = [r for r in hosts.runs.get("slow", [])]
        if straggler and straggler[0].aid not in {a for _, a in hosts.kills}:
            break
    stuck = hosts.runs["slow"][0]
    hosts.start("slow", stuck.job)
    for _ in range(60):  # time passes; the slow host's job does not end
        hosts.advance(1.0)
        if any(r.job == stuck.job for r in hosts.runs.get("fast", [])):
            break
    copy = hosts.on("fast", stuck.job)
    hosts.start("fast", stuck.job)
    hosts.say("slow", Output(stuck.aid, STDOUT, b"late output"))
    hosts.finish("fast", stuck.job, b"copy\n")
    assert ("slow", stuck.aid) in hosts.kills  # the loser is killed
    hosts.finish("slow", stuck.job, b"never seen\n")  # its late Exit is stale
    mine = [r for r in hosts.results if r.id == stuck.job]
    assert [(r.stdout, r.host) for r in mine] == [(b"copy\n", "fast")]
    assert hosts.stats["fast"].spec_won == 1 and hosts.stats["slow"].spec_lost == 0
    assert copy.aid != stuck.aid


def test_draining_starts_nothing_more_and_finishes_once_the_running_end():
    """--halt soon: what runs may finish; what waits in a dispatcher's queue (the look-ahead)
    is not started there later: it is killed, and its job gets no result."""
    engine, hosts = engine_for(10, speculate=False)
    hosts.ready("h1", 2)
    hosts.start("h1", 0)
    queued = [r for r in hosts.runs["h1"] if r.job != 0]
    engine.drain()
    kills = hosts.round().frames["h1"]
    assert sorted(aid for _, aid in hosts.kills) == sorted(r.aid for r in queued)
    assert [kill.queued_only for kill in kills] == [True] * len(queued)  # one started runs on
    hosts.finish("h1", 0)
    assert not engine.finished  # the killed attempts' Exits still come
    for run in queued:
        hosts.say("h1", Exit(run.aid, None, 15, 0.0, 0.0, 0))
        hosts.runs["h1"].remove(run)
    assert engine.finished
    assert [r.id for r in hosts.results] == [0]
    assert hosts.stats["h1"].failed_attempts == 0  # halted, not failed


def test_commands_no_host_can_run_fail_on_the_master_and_are_never_sent():
    stats: dict[str, HostStats] = {}
    batch = [Job(0, b"echo ok"), Job(1, b"x" * (MAX_COMMAND + 1)), Job(2, b"a\0b")]
    engine = Engine(batch, RunPolicy(speculate=False), stats)
    hosts = Hosts(engine, stats)
    hosts.ready("h1", 4)
    assert [r.job for r in hosts.runs["h1"]] == [0]
    failed = {r.id: r for r in hosts.results}
    assert sorted(failed) == [1, 2]
    assert "longer than" in failed[1].error and b"NUL byte" in failed[2].stderr
    for i, why in [(1, failed[1].error), (2, failed[2].error)]:
        said = f"anet: job {i}: {why}\n".encode()
        assert failed[i] == JobResult(i, False, None, None, "", 0, 0.0, b"", said, error=why)
    assert not engine.finished
    hosts.now = 7.0
    hosts.start("h1", 0)
    hosts.finish("h1", 0)
    assert engine.finished
    assert [a.start for a in hosts.attempts] == [7.0]  # no wall offset given: loop time


@pytest.mark.parametrize(
    "forge",
    [
        lambda run, other: Exit(other.aid, 0, None, 0.1, 0.0, 0),  # another host's attempt
        lambda run, other: Output(other.aid, STDOUT, b"forged"),
        lambda run, other: Started(other.aid, 1, 1),
        lambda run, other: Exit(run.aid + 1000, 0, None, 0.1, 0.0, 0),  # a guessed id
        lambda run, other: Started(run.aid, 1, 9),  # a slot it does not have
        lambda run, other: Done(other.aid, 1, 1, 0, None, 0.1, 0.0, 0, b"forged", b""),
        lambda run, other: Done(run.aid, 1, 9, 0, None, 0.1, 0.0, 0, b"", b""),
    ],
)
def test_a_host_speaks_only_of_its_own_attempts(forge):
    engine, hosts = engine_for(8, speculate=False)
    hosts.ready("honest", 1)
    hosts.ready("liar", 1)
    run, other = hosts.runs["liar"][0], hosts.runs["honest"][0]
    forged = forge(run, other)
    with pytest.raises(HostError, match="protocol error") as caught:
        engine.frame("liar", forged, hosts.now)
    assert caught.value.permanent and caught.value.host == "liar"
    assert hosts.results == []
    if forged.aid != run.aid:
        said = (
            f"{type(forged).__name__} about attempt {forged.aid}, which was not sent to this host"
        )
        assert f"{said} or had already ended there" in str(caught.value)
    else:
        assert "Started in slot 9 of 1" in str(caught.value)


@pytest.mark.parametrize("via_dones", [False, True])
def test_a_dones_frame_is_its_records_as_done_frames(via_dones: bool):
    """Engine.dones (a Dones frame's records, without frame()'s dispatch) decides what frame()
    of each record would: the same results; a record about another host's attempt, after
    good ones, is the same protocol error."""
    engine, hosts = engine_for(8, speculate=False)
    hosts.ready("h1", 2)
    hosts.ready("h2", 1)
    mine = hosts.runs["h1"][:2]
    dones = [Done(run.aid, 1, 1, 0, None, 0.1, 0.0, 0, b"out %d" % run.aid, b"") for run in mine]
    if via_dones:
        engine.dones("h1", dones, hosts.now)
    else:
        for done in dones:
            engine.frame("h1", done, hosts.now)
    results = engine.take().results
    assert [(r.id, r.ok, r.stdout) for r in results] == [
        (run.job, True, b"out %d" % run.aid) for run in mine
    ]
    other = hosts.runs["h2"][0]
    forged = Done(other.aid, 1, 1, 0, None, 0.1, 0.0, 0, b"", b"")
    with pytest.raises(HostError, match="which was not sent to this host") as caught:
        if via_dones:
            engine.dones("h1", [forged], hosts.now)
        else:
            engine.frame("h1", forged, hosts.now)
    assert caught.value.permanent and caught.value.host == "h1"


def _trace_of_dones(ends: list[tuple[int, int]], via_dones: bool) -> tuple:
    """Every job of a 2-host run ends by a Done (`ends`: per attempt, its exit code and
    output bytes, past a --max-output cap of 64 at 100); everything the engine decided."""
    cap = OutputCap(64, "--max-output 64")
    engine, hosts = engine_for(12, retries=1, speculate=False, caps=(cap,))
    hosts.ready("h1", 2)
    hosts.ready("h2", 1)
    first = min(run.aid for runs in hosts.runs.values() for run in runs)  # ids are per process
    for code, size in ends:
        hosts.now += 0.25
        for host in ("h1", "h2"):
            if not hosts.runs.get(host):
                continue
            run = hosts.runs[host][0]
            out = b"x" * size
            done = Done(run.aid, 7, 1, code, None, 0.2, 0.0, 0, out, b"e" if code else b"")
            if via_dones:
                engine.dones(host, [done], hosts.now)
            else:
                engine.frame(host, done, hosts.now)
            hosts.runs[host].remove(run)
        engine.round(hosts.now)
        actions = engine.take()  # (a cut attempt's Kill comes after its Done: moot, not sent)
        for host, frames in actions.frames.items():
            hosts.runs.setdefault(host, []).extend(m for m in frames if isinstance(m, Run))
            hosts.kills += [(host, m.aid) for m in frames if isinstance(m, Kill)]
        hosts.results += actions.results
        hosts.attempts += actions.attempts
    runtimes = engine._scheduler.runtimes
    return (
        [dataclasses.astuple(r) for r in hosts.results],
        [
            (a.attempt.aid - first, a.size, a.start, a.runtime, a.code, a.excused)
            for a in hosts.attempts
        ],
        {name: dataclasses.astuple(stats) for name, stats in hosts.stats.items()},
        (runtimes.count, runtimes.median(), runtimes.slowness("h1"), runtimes.slowness("h2")),
        sorted((host, run.aid - first) for host, runs in hosts.runs.items() for run in runs),
        [(host, aid - first) for host, aid in hosts.kills],
    )


@given(
    st.lists(st.tuples(st.sampled_from([0, 0, 0, 1]), st.sampled_from([0, 3, 100])), max_size=24)
)
@settings(max_examples=60, deadline=None)
def test_a_dones_frame_takes_its_successes_as_its_records_one_by_one_would(ends):
    """Engine.dones takes a plain success by a shorter path (`_succeeded`, the scheduler's
    `succeeded`): failures, retries, outputs past a cap and successes mixed, it decides what
    frame() of each record decides, down to the counters, the attempt records and the
    runtime model."""
    assert _trace_of_dones(ends, via_dones=True) == _trace_of_dones(ends, via_dones=False)


def test_a_second_started_or_an_exit_after_the_exit_is_a_protocol_error():
    engine, hosts = engine_for(2, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.start("h1", 0)
    with pytest.raises(HostError, match=f"a second Started for attempt {run.aid}") as caught:
        engine.frame("h1", Started(run.aid, 1, 1), 0.0)
    assert caught.value.host == "h1"
    hosts.finish("h1", 0)
    with pytest.raises(HostError, match="already ended"):
        engine.frame("h1", Exit(run.aid, 0, None, 0.1, 0.0, 0), 0.0)
    assert [r.id for r in hosts.results] == [0]


def test_a_done_is_a_whole_attempt_started_its_duration_ago():
    """Protocol 4's fold: one Done gives the result, the host's counters and the attempt's
    record as Started, Output and Exit would, its start the host's duration before it came."""
    engine, hosts = engine_for(2, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.on("h1", 0)
    hosts.runs["h1"].remove(run)
    hosts.now = 5.0
    hosts.say("h1", Done(run.aid, 77, 1, 0, None, 0.25, 0.1, 1000, b"out", b"err"))
    (result,) = hosts.results
    assert (result.id, result.ok, result.exit_code, result.stdout, result.stderr) == (
        0, True, 0, b"out", b"err",
    )  # fmt: skip
    (attempt,) = hosts.attempts
    assert (attempt.start, attempt.runtime, attempt.size) == (1e9 + 4.75, 0.25, 6)
    assert hosts.stats["h1"].running == 0 and hosts.stats["h1"].ended == 1
    with pytest.raises(HostError, match="already ended"):
        engine.frame("h1", Exit(run.aid, 0, None, 0.1, 0.0, 0), 0.0)


def test_a_done_after_the_attempt_spoke_is_a_protocol_error():
    engine, hosts = engine_for(2, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.start("h1", 0)
    with pytest.raises(HostError, match=f"Done for attempt {run.aid}, which had already spoken"):
        engine.frame("h1", Done(run.aid, 1, 1, 0, None, 0.1, 0.0, 0, b"", b""), 0.0)
    with pytest.raises(HostError) as caught:
        engine.frame("h1", Done(run.aid, 1, 1, 0, None, 0.1, 0.0, 0, b"", b""), 0.0)
    assert caught.value.host == "h1"


@pytest.mark.parametrize(
    ("out", "err", "cut", "size"),
    [
        (b"12345", b"", False, 5),  # at the cap: whole
        (b"", b"12345", False, 5),
        (b"123456", b"", True, 0),  # the cut attempt's size is what it had said before
        (b"123", b"456", True, 3),  # both streams count
    ],
)
def test_a_done_past_an_output_cap_fails_its_job_as_output_frames_would(
    out: bytes, err: bytes, cut: bool, size: int
):
    """A small Done's output goes into its result as it came, but only below every cap: past
    --max-output the job fails with why and no retry, its output dropped, as when the same
    bytes come in Output frames; the Kill it sends finds the attempt ended (moot)."""
    engine, hosts = engine_for(1, speculate=False, caps=(OutputCap(5, "--max-output 5"),))
    hosts.ready("h1", 1)
    run = hosts.on("h1", 0)
    hosts.say("h1", Done(run.aid, 77, 1, 0, None, 0.25, 0.1, 1000, out, err))
    (result,) = hosts.results
    if cut:
        assert (result.ok, result.attempts, result.stdout, result.stderr) == (False, 1, b"", b"")
        assert result.error == "its output passed --max-output 5"
        assert hosts.kills == [("h1", run.aid)]
    else:
        assert (result.ok, result.error, result.stdout, result.stderr) == (True, None, out, err)
        assert hosts.kills == []
    assert [a.size for a in hosts.attempts] == [size]
    assert engine.finished


# -- any interleaving ends every job exactly once -------------------------------------------------

EVENT = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 3)),
    st.tuples(st.just("end"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("lose"), st.integers(0, 3)),
    st.tuples(st.just("ready"), st.integers(0, 3)),
    st.tuples(st.just("time"), st.floats(0.1, 30.0)),
)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 15),
    events=st.lists(EVENT, max_size=120),
    timeout=st.sampled_from([None, 5.0]),
    speculate=st.booleans(),
)
def test_any_interleaving_of_loss_failure_timeout_and_speculation_ends_each_job_once(
    n, events, timeout, speculate
):
    engine, hosts = engine_for(n, timeout=timeout, speculate=speculate, retries=1)
    up: set[str] = set()

    def host_of(i: int) -> str:
        return f"h{i}"

    def running(host: str) -> list[Run]:
        return hosts.runs.get(host, [])

    for event in events:
        kind, *args = event
        if kind == "ready" and host_of(args[0]) not in up:
            up.add(host_of(args[0]))
            hosts.ready(host_of(args[0]), 1 + args[0] % 3)
        elif kind == "lose" and host_of(args[0]) in up:
            up.discard(host_of(args[0]))
            hosts.lose(host_of(args[0]))
        elif kind == "start" and running(host_of(args[0])):
            host = host_of(args[0])
            run = running(host)[0]
            with contextlib.suppress(HostError):  # started already: not said twice for real
                engine.frame(host, Started(run.aid, 1, 1), hosts.now)
            hosts.round()
        elif kind == "end" and running(host_of(args[0])):
            host = host_of(args[0])
            run = running(host).pop(0)
            engine.frame(host, Exit(run.aid, 0 if args[1] else 1, None, 0.2, 0.0, 0), hosts.now)
            hosts.round()
        elif kind == "time":
            hosts.advance(args[0])
    # Then the world settles: one host stays up and every attempt it is given ends well.
    if not up:
        hosts.ready("h0", 2)
        up.add("h0")
    for _ in range(10 * n + 20):
        if engine.finished:
            break
        for host in list(up):
            for run in list(running(host)):
                running(host).remove(run)
                engine.frame(host, Exit(run.aid, 0, None, 0.2, 0.0, 0), hosts.now)
        hosts.advance(1.0)
    assert engine.finished
    counts = Counter(r.id for r in hosts.results)
    assert sorted(counts) == list(range(n)), "a job without a final result"
    assert max(counts.values()) == 1, f"a job with two final results: {counts}"


def test_abort_kills_every_attempt_and_the_run_ends_with_no_result_for_them():
    engine, hosts = engine_for(10, speculate=False)
    hosts.ready("h1", 2)
    hosts.start("h1", 0)
    hosts.finish("h1", 0)
    sent = list(hosts.runs["h1"])
    engine.abort()
    kills = hosts.round().frames["h1"]
    assert sorted(aid for _, aid in hosts.kills) == sorted(r.aid for r in sent)
    assert [kill.queued_only for kill in kills] == [False] * len(sent)  # started or not
    assert not engine.finished
    for run in sent:
        hosts.say("h1", Exit(run.aid, None, 15, 0.1, 0.0, 0))
    assert engine.finished and [r.id for r in hosts.results] == [0]
    killed = [a for a in hosts.attempts if a.attempt.aid in {run.aid for run in sent}]
    assert len(killed) == len(sent) and all(a.excused for a in killed)  # the halt's, not theirs
    assert hosts.stats["h1"].failed_attempts == 0
    hosts.advance(60.0)  # nothing more is ever sent
    assert all(r.aid in {run.aid for run in sent} for r in hosts.runs["h1"])


# -- exactly once under speculation: every order of the two attempts' ends -------------------------


def _a_straggler_and_its_copy(n: int = 12) -> tuple[Engine, Hosts, Run, Run]:
    """A run where one job runs on host b long past the typical 0.5 s, every other job has
    ended, and a copy of it was sent to host a; both are started. Fails unless speculation
    happened: nothing here depends on chance. (On the way, an idle slot copies a job still
    queued on the other host, and that copy is killed: `hosts.kills` is cleared after.)"""
    engine, hosts = engine_for(n, retries=0)
    hosts.ready("a", 2)
    hosts.ready("b", 2)
    stuck = hosts.runs["b"][0]
    hosts.start("b", stuck.job)
    while others := [(h, r) for h, runs in hosts.runs.items() for r in runs if r is not stuck]:
        for host, run in others:  # each in 0.5 s, in the slot the straggler leaves free
            hosts.start(host, run.job, slot=2)
            hosts.finish(host, run.job)
    assert len(hosts.results) == n - 1
    for _ in range(60):  # time passes; the straggler does not end
        if hosts.runs.get("a"):
            break
        hosts.advance(1.0)
    (copy,) = hosts.runs["a"]
    assert copy.job == stuck.job and copy.aid != stuck.aid
    hosts.start("a", copy.job)
    hosts.kills.clear()
    return engine, hosts, stuck, copy


def _end(hosts: Hosts, host: str, run: Run, code: int, out: bytes) -> None:
    """The attempt prints `out` and exits with `code`, with no scheduling round in between."""
    hosts.runs[host].remove(run)
    hosts.engine.frame(host, Output(run.aid, STDOUT, out), hosts.now)
    hosts.engine.frame(host, Exit(run.aid, code, None, 9.0, 0.1, 1000), hosts.now)


@pytest.mark.parametrize("loser_code", [0, 1, None], ids=["loser-ok", "loser-fails", "loser-lost"])
@pytest.mark.parametrize("copy_wins", [True, False], ids=["copy-wins", "original-wins"])
@pytest.mark.parametrize("same_burst", [False, True], ids=["after-the-kill", "same-burst"])
def test_of_a_job_and_its_copy_only_the_first_to_end_well_is_delivered(
    copy_wins, loser_code, same_burst
):
    """Whichever attempt ends well first gives the job's one result; the other is killed, and
    what it says later (its output, its Exit, ok or failed, or its host's loss) is dropped,
    even when its Exit came in the same burst as the winner's, before the kill went out."""
    engine, hosts, stuck, copy = _a_straggler_and_its_copy()
    (winner, w_host), (loser, l_host) = [(copy, "a"), (stuck, "b")][:: 1 if copy_wins else -1]
    _end(hosts, w_host, winner, 0, b"winner\n")
    if loser_code is not None and same_burst:
        _end(hosts, l_host, loser, loser_code, b"loser\n")
    hosts.round()
    if loser_code is None:
        hosts.lose(l_host)
    elif not same_burst:
        assert hosts.kills == [(l_host, loser.aid)]
        _end(hosts, l_host, loser, loser_code, b"loser\n")
        hosts.round()
    hosts.advance(60.0)  # nothing is owed: no attempt of the job starts again
    mine = [r for r in hosts.results if r.id == stuck.job]
    assert [(r.ok, r.stdout, r.host) for r in mine] == [(True, b"winner\n", w_host)]
    assert sorted(r.id for r in hosts.results) == list(range(12))
    assert not any(r.job == stuck.job for runs in hosts.runs.values() for r in runs)
    assert engine.finished
    assert hosts.stats[l_host].failed_attempts == 0  # a loser is not a failure of its host
    assert (hosts.stats["a"].spec_won, hosts.stats["a"].spec_lost) == (
        (1, 0) if copy_wins else (0, 0 if loser_code is None else 1)
    )
    (lost,) = [a for a in hosts.attempts if a.attempt.aid == loser.aid]
    if loser_code is not None and not same_burst:  # said after its kill: not even kept
        assert (lost.size, lost.code) == (0, loser_code)
    if loser_code is not None:  # the joblog, the journal and a pool's summary: no failure
        assert lost.excused


def test_attempts_are_recorded_and_counted_on_their_host():
    """Each ended attempt becomes an AttemptEnd (the journal's attempts table, --joblog) and
    moves its host's counters; a lost one is recorded with no code and no signal."""
    _, hosts = engine_for(3, speculate=False, retries=1)
    hosts.ready("h1", 2)
    hosts.now = 10.0
    ok, killed = hosts.start("h1", 0), hosts.start("h1", 1, slot=2)
    assert hosts.stats["h1"].running == 2
    hosts.now = 11.0
    hosts.say("h1", Output(ok.aid, STDOUT, b"ab"), Output(ok.aid, STDERR, b"c"))
    hosts.say("h1", Exit(ok.aid, 0, None, 0.5, 0.1, 1000))
    hosts.say("h1", Exit(killed.aid, None, 9, 1.5, 0.1, 1000))
    hosts.runs["h1"] = [r for r in hosts.runs["h1"] if r.aid not in (ok.aid, killed.aid)]
    (result,) = hosts.results
    assert result == JobResult(0, True, 0, None, "h1", 1, 0.5, b"ab", b"c")
    start = 1e9 + 10.0
    assert [
        (a.attempt.aid, a.size, a.start, a.runtime, a.code, a.signal) for a in hosts.attempts
    ] == [
        (ok.aid, 3, start, 0.5, 0, None),
        (killed.aid, 0, start, 1.5, None, 9),
    ]
    stats = hosts.stats["h1"]
    assert (stats.running, stats.ended, stats.done, stats.failed_attempts) == (0, 2, 1, 1)
    assert stats.busy_time == 2.0 and stats.mean_time == 1.0
    # The host is lost while job 2 runs there, 3 s after it started: recorded as lost.
    queued = hosts.start("h1", 2)
    hosts.say("h1", Output(queued.aid, STDOUT, b"xyz"))
    hosts.now = 14.0
    hosts.lose("h1")
    lost = {a.attempt.aid: a for a in hosts.attempts[2:]}
    assert (lost[queued.aid].size, lost[queued.aid].start, lost[queued.aid].runtime) == (
        3,
        1e9 + 11,
        3.0,
    )
    assert all((a.code, a.signal) == (None, None) for a in lost.values())
    (retry,) = [a for a in lost.values() if a.attempt.job.id == 1]  # sent at 11, never started
    assert (retry.size, retry.start, retry.runtime) == (0, 1e9 + 11, 3.0)
    assert hosts.stats["h1"].running == 0


def test_a_hosts_counters_add_up_over_its_attempts():
    _, hosts = engine_for(2, speculate=False, retries=1)
    hosts.ready("h1", 1)
    for _ in range(2):  # job 0 fails twice on the only host
        hosts.start("h1", 0)
        hosts.finish("h1", 0, code=1)
    stats = hosts.stats["h1"]
    assert (stats.failed_attempts, stats.ended, stats.busy_time, stats.done) == (2, 2, 1.0, 1)


def test_without_speculation_a_straggler_gets_no_copy():
    engine, hosts = engine_for(12, speculate=False)
    hosts.ready("a", 2)
    hosts.ready("b", 2)
    stuck = hosts.runs["b"][0]
    hosts.start("b", stuck.job)
    while others := [(h, r) for h, runs in hosts.runs.items() for r in runs if r is not stuck]:
        for host, run in others:
            hosts.start(host, run.job, slot=2)
            hosts.finish(host, run.job)
    hosts.advance(600.0)  # with speculation, a copy went out after a few seconds
    assert hosts.runs.get("a") == [] and hosts.runs["b"] == [stuck] and not engine.finished


def test_the_engine_owns_an_attempt_from_its_run_frame_to_its_exit():
    engine, hosts = engine_for(1, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.on("h1", 0)
    assert engine.frame("h1", Started(run.aid, 1000, 1), 0.0) is False  # no Kill to send
    assert engine.owns(run.aid) and not engine.owns(run.aid + 1000)
    hosts.finish("h1", 0)
    assert not engine.owns(run.aid)


@pytest.mark.parametrize("with_files", [0, 1, 2])
def test_a_run_with_a_job_with_files_says_so_before_its_first_round(with_files: int):
    """drive.py sends a Place before the Runs of a batch whose jobs have files: the engine
    knows it from the jobs it read, whichever job of them has some."""
    batch = [Job(i, b"true", files=JobFiles() if i == with_files else None) for i in range(2)]
    engine = Engine(batch, RunPolicy(speculate=False), {})
    engine.host_ready("h1", 2)
    engine.round(0.0)
    assert engine.files is (with_files < 2)


def test_a_host_lost_before_it_was_ready_for_this_run_changes_nothing():
    """The cluster tells every run of a host's loss (api.py's host_gone), also a run it was
    never dealt to: nothing of this run's was there."""
    _, hosts = engine_for(2, speculate=False)
    hosts.ready("h1", 1)
    hosts.stats["h2"] = HostStats()
    hosts.lose("h2")
    assert hosts.attempts == [] and sorted(r.job for r in hosts.runs["h1"]) == [0, 1]
    hosts.start("h1", 0)  # h1's slot is still known: its Started is no protocol error
    hosts.finish("h1", 0)
    assert [r.id for r in hosts.results] == [0]


def test_an_attempts_job_and_input_are_found_by_its_id_while_it_is_in_flight():
    """drive.py streams an attempt's input and places its files by the attempt's id; a host
    given, the attempt must be that host's."""
    stats: dict[str, HostStats] = {}
    batch = [Job(0, b"cat", stdin=b"input\n"), Job(1, b"true")]
    engine = Engine(batch, RunPolicy(speculate=False), stats)
    hosts = Hosts(engine, stats)
    hosts.ready("h1", 2)
    cat, true = hosts.on("h1", 0), hosts.on("h1", 1)
    assert (cat.stdin, true.stdin) == (True, False)  # the Run says whether input comes
    assert (engine.stdin(cat.aid), engine.stdin(true.aid)) == (b"input\n", None)
    assert engine.job(cat.aid) == engine.job(cat.aid, "h1") == batch[0]
    assert engine.job(cat.aid, "h2") is None  # another host's question: not its attempt
    assert engine.stdin(99) is engine.job(99) is engine.job(99, "h1") is None
    hosts.start("h1", 0)
    hosts.finish("h1", 0)
    assert engine.stdin(cat.aid) is engine.job(cat.aid) is None  # ended: forgotten


def test_a_percentage_timeout_is_of_the_durations_hosts_measured_not_the_masters_clock():
    """The master sees each job end 10 s after it started (a slow network); the hosts measured
    0.5 s. "300%" is then 1.5 s: a job running 2 s is killed."""
    _, hosts = engine_for(5, speculate=False, retries=0, timeout="300%")
    hosts.ready("h1", 1)
    for job in range(3):
        hosts.start("h1", job)
        hosts.now += 10.0
        hosts.finish("h1", job)  # Exit says duration 0.5
    run = hosts.start("h1", 3)
    hosts.advance(2.0)
    assert hosts.kills == [("h1", run.aid)]


# -- a share of the host's slots (runs sharing a cluster) --------------------------------------


def test_a_share_of_none_sends_nothing_and_a_share_bounds_what_is_sent():
    engine, hosts = engine_for(20, speculate=False)
    hosts.stats["h1"] = HostStats()
    engine.host_ready("h1", 4, share=0)
    hosts.round()
    assert "h1" not in hosts.runs  # not even a queued one: another run holds every slot
    engine.host_ready("h1", 4, share=2)
    hosts.round()
    assert len(hosts.runs["h1"]) == 4  # its 2 slots, plus a look-ahead of 2


def test_a_job_started_in_any_of_the_hosts_slots_is_this_runs_whatever_its_share():
    engine, hosts = engine_for(2, speculate=False)
    hosts.stats["h1"] = HostStats()
    engine.host_ready("h1", 4, share=1)
    hosts.round()
    hosts.start("h1", 0, slot=4)  # the dispatcher's slot 4: the other runs' jobs hold 1 to 3
    hosts.finish("h1", 0, b"x")
    assert [(r.id, r.stdout) for r in hosts.results] == [(0, b"x")]


def test_a_smaller_share_lets_the_attempts_in_flight_finish_and_sends_no_more_until_room():
    engine, hosts = engine_for(20, speculate=False)
    hosts.ready("h1", 4)
    assert len(hosts.runs["h1"]) == 8
    engine.host_ready("h1", 4, share=1)  # a second run came: 1 slot + 2 queued are this one's
    for job in range(8):
        hosts.start("h1", job, slot=1 + job % 4)
        hosts.finish("h1", job)
        assert len(hosts.runs["h1"]) == max(7 - job, 3), job  # refilled to 3 only
    assert hosts.kills == []  # nothing in flight was stopped for the new split


def test_a_done_past_a_stdout_only_cap_by_its_stderr_keeps_each_stream_apart():
    """A cap on stdout alone (what an output format can carry) lets a Done's stderr pass it:
    its output goes the long way (past the quick bound), each stream where it belongs."""
    cap = OutputCap(5, "the format's limit", stdout_only=True)
    _, hosts = engine_for(1, speculate=False, caps=(cap,))
    hosts.ready("h1", 1)
    run = hosts.on("h1", 0)
    hosts.say("h1", Done(run.aid, 77, 1, 0, None, 0.25, 0.1, 1000, b"123", b"4567"))
    (result,) = hosts.results
    assert (result.ok, result.stdout, result.stderr, result.error) == (True, b"123", b"4567", None)
    assert [a.size for a in hosts.attempts] == [7] and hosts.kills == []


def test_new_result_is_the_dataclass_constructor_of_a_result():
    """The engine makes its results with new_result (the slots set directly, not the frozen
    dataclass's `__init__`): its parameters must be the dataclass's fields, in order, and
    what it makes a JobResult like any other: equal, hashed alike, frozen."""
    names = [f.name for f in dataclasses.fields(JobResult)]
    assert list(inspect.signature(new_result).parameters) == names
    values = (7, False, 3, None, "node1", 2, 0.25, b"out", b"err", "why")
    made, plain = new_result(*values), JobResult(*values)
    assert type(made) is JobResult and made == plain and hash(made) == hash(plain)
    assert [getattr(made, name) for name in names] == list(values)
    assert new_result(*values[:-1]).error is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ok = True  # type: ignore[misc]
