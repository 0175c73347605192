"""Polite mode's pure part: a held host's queue taken back and run elsewhere, and an attempt
polite mode kills (--yield moves it, --memfree-kill) spending none of the job's retries, in the
scheduler and the engine, on a fake clock. In the mutation check's selection ([tool.mutmut]);
the end-to-end runs, on sshd hosts, are in test_polite_held.py.
"""

from __future__ import annotations

import pytest
from test_engine import engine_for

from anet.core.batch import Job
from anet.core.scheduler import KillReason, Scheduler, Verdict
from anet.errors import HostError
from dispatcher.polite import Evicted
from dispatcher.protocol import Exit


def jobs(n: int) -> list[Job]:
    return [Job(i, f"echo {i}".encode()) for i in range(n)]


# -- the scheduler ------------------------------------------------------------------------------


def test_a_held_hosts_queued_attempts_are_taken_back_and_run_elsewhere_with_no_retry_spent():
    sched = Scheduler(iter(jobs(3)), retries=0, speculate=False)
    sched.host_ready("a", 1, lookahead=2)
    sent = sched.next_runs(0.0)
    assert [(r.job.id, r.host) for r in sent] == [(0, "a"), (1, "a"), (2, "a")]
    sched.attempt_started(sent[0].aid, 0.1)
    taken = sched.host_held("a", True)
    assert [r.job.id for r in taken] == [1, 2]  # the running one stays: it is suspended there
    kills = sched.due_kills(0.2)
    assert [(k.attempt.job.id, k.reason) for k in kills] == [
        (1, KillReason.TAKEN_BACK), (2, KillReason.TAKEN_BACK),
    ]  # fmt: skip
    sched.host_ready("b", 1, lookahead=2)
    assert sched.next_runs(0.3) == []  # nothing moves before the host said it did not start it
    for run in taken:  # the dispatcher's answer to a Kill of a queued attempt: no Started
        ended = sched.attempt_ended(run.aid, ok=False, now=0.4)
        assert (ended.verdict, ended.excused) == (Verdict.RETRY, True)
        assert ended.error == "taken back from a, held by polite mode"
    again = sched.next_runs(0.5)
    assert sorted((r.job.id, r.host, r.number) for r in again) == [(1, "b", 1), (2, "b", 1)]
    assert sched.host_held("a", False) == []
    for run in [sent[0], *again]:
        sched.attempt_started(run.aid, 0.6)
        assert sched.attempt_ended(run.aid, ok=True, now=0.7).verdict is Verdict.FINAL
    assert sched.finished


def test_a_held_host_announced_again_stays_held_and_a_new_dispatcher_holds_nothing():
    """Runs sharing a cluster announce a host again whenever the split of its slots changes:
    that changes its share, not its hold. Its loss ends the hold (a new dispatcher's own)."""
    sched = Scheduler(iter(jobs(4)), speculate=False)
    sched.host_ready("a", 2, lookahead=0)
    sched.host_held("a", True)
    sched.host_ready("a", 1, lookahead=0)
    assert sched.next_runs(0.0) == []
    sched.host_lost("a", now=1.0)
    sched.host_ready("a", 1, lookahead=0)
    assert [r.job.id for r in sched.next_runs(2.0)] == [0]


def test_a_taken_back_attempt_that_started_meanwhile_ends_once():
    """The race: the dispatcher started it before the Kill came. A success stands, once; a
    kill puts the job back in line, no retry spent (retries=0)."""
    sched = Scheduler(iter(jobs(3)), retries=0, speculate=False)
    sched.host_ready("a", 1, lookahead=2)
    sent = sched.next_runs(0.0)
    taken = sched.host_held("a", True)
    assert [r.job.id for r in taken] == [0, 1, 2]
    sched.due_kills(0.1)
    for run in taken:
        sched.attempt_started(run.aid, 0.2)
    assert sched.attempt_ended(sent[0].aid, ok=True, now=0.3).verdict is Verdict.FINAL
    ended = sched.attempt_ended(sent[1].aid, ok=False, now=0.3)  # killed while running
    assert (ended.verdict, ended.excused) == (Verdict.RETRY, True)
    ended = sched.attempt_ended(sent[2].aid, ok=False, now=0.3)
    sched.host_held("a", False)
    again = sched.next_runs(0.4)
    assert sorted((r.job.id, r.number) for r in again) == [(1, 2), (2, 2)]  # they ran once
    for run in again:
        sched.attempt_started(run.aid, 0.5)
        assert sched.attempt_ended(run.aid, ok=True, now=0.6).verdict is Verdict.FINAL
    assert sched.finished


def test_an_evicted_attempt_spends_no_retry_but_a_job_evicted_too_often_fails():
    sched = Scheduler(iter(jobs(1)), retries=0, max_losses=3, speculate=False)
    sched.host_ready("a", 1, lookahead=0)
    for number in (1, 2, 3):
        (run,) = sched.next_runs(float(number))
        assert run.number == number
        sched.attempt_started(run.aid, number + 0.1)
        sched.attempt_evicted(run.aid, "suspended 900s for a person at the machine")
        ended = sched.attempt_ended(run.aid, ok=False, now=number + 0.2)
    assert (ended.verdict, ended.ok, ended.excused) == (Verdict.FINAL, False, True)
    assert ended.error == (
        "killed 3 times by polite mode (last: suspended 900s for a person at the machine)"
    )
    assert sched.next_runs(4.0) == [] and sched.finished


# -- the engine ---------------------------------------------------------------------------------


def test_the_engine_takes_a_held_hosts_queue_back_leaving_no_trace_of_it():
    _, hosts = engine_for(3, retries=0, speculate=False)
    hosts.ready("h1", 1)  # its slot and 2 queued
    hosts.start("h1", 0)
    hosts.engine.host_held("h1", True)
    hosts.round()
    taken = [
        (host, run.job) for host, aid in hosts.kills for run in hosts.runs[host] if run.aid == aid
    ]
    assert taken == [("h1", 1), ("h1", 2)]
    for job_id in (1, 2):  # the dispatcher's answer to a Kill of a queued attempt: no Started
        run = hosts.on("h1", job_id)
        hosts.runs["h1"].remove(run)
        hosts.say("h1", Exit(run.aid, None, 15, 0.0, 0.0, 0))
    hosts.ready("h2", 1)
    for job_id in (1, 2):
        hosts.start("h2", job_id)
        hosts.finish("h2", job_id, b"%d\n" % job_id)
    hosts.finish("h1", 0, b"0\n")
    assert sorted((r.id, r.host, r.attempts, r.stdout) for r in hosts.results) == [
        (0, "h1", 1, b"0\n"), (1, "h2", 1, b"1\n"), (2, "h2", 1, b"2\n"),
    ]  # fmt: skip
    assert sorted((a.attempt.job.id, a.attempt.host) for a in hosts.attempts) == [
        (0, "h1"), (1, "h2"), (2, "h2"),
    ]  # fmt: skip  # the taken-back attempts never ran: no record of them
    assert hosts.stats["h1"].failed_attempts == 0 and hosts.engine.finished


def test_the_engine_runs_an_evicted_job_again_without_a_retry_and_counts_no_failure():
    _, hosts = engine_for(1, retries=0, speculate=False)
    hosts.ready("h1", 1)
    run = hosts.start("h1", 0)
    hosts.runs["h1"].remove(run)
    why = "suspended 901s for a person at the machine (alice on tty2, idle 3s)"
    hosts.say("h1", Evicted(run.aid, why), Exit(run.aid, None, 9, 901.0, 0.1, 0))
    assert hosts.results == [] and hosts.stats["h1"].failed_attempts == 0
    (end,) = hosts.attempts  # the journal's record of it: killed, excused, no failure
    assert (end.signal, end.excused) == (9, True)
    hosts.start("h1", 0)
    hosts.finish("h1", 0, b"done\n")
    assert [(r.id, r.ok, r.attempts, r.stdout) for r in hosts.results] == [(0, True, 2, b"done\n")]


def test_an_evicted_frame_about_another_hosts_attempt_is_a_protocol_error():
    _, hosts = engine_for(2, speculate=False)
    hosts.ready("honest", 1)
    hosts.ready("liar", 1)
    other = hosts.runs["honest"][0]
    with pytest.raises(HostError, match="protocol error"):
        hosts.engine.frame("liar", Evicted(other.aid, "forged"), hosts.now)
