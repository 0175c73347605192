"""A host polite mode holds gives its work back: the jobs waiting in its queue are taken back and
run elsewhere, and a job it kills (--yield moves it, --memfree-kill) spends none of the job's
retries; the time the host was held shows in the summary and in `anet report`.

The scheduler's part is checked on its own (pure, exactly once through every race of a take
back with a start); the whole of it end to end, on the local host (where a fake person sits,
ANET_UTMP) and a real OpenSSH sshd host, by exactly-once results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_ssh import decode, write_batch
from test_engine import engine_for
from test_polite import FakeSeat, read_stderr_until, wait_until

from anet.api import HostState
from anet.core.batch import Job
from anet.core.scheduler import KillReason, Scheduler, Verdict
from anet.errors import HostError
from anet.remote.hostlife import HostPhase
from anet.remote.hosts import parse_spec
from anet.streams.journal import JournalReader
from anet.views.progress import HostRow, Snapshot, Tally, host_state, take_snapshot
from anet.views.stats import held_times
from anet.views.summary import FailedJobs, render_summary
from dispatcher.polite import Evicted, Gate, Polite
from dispatcher.protocol import Exit

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


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
    assert (ended.verdict, ended.ok) == (Verdict.FINAL, False)
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


def test_held_times_are_read_from_the_host_events():
    events = [
        (100.0, "a", "ready", "2"),
        (101.0, "a", "held", "loaded: 5 runnable threads of other processes > --max-load 2"),
        (104.0, "a", "free", None),
        (105.0, "a", "held", "yielding: alice on tty2, idle 3s"),
        (107.0, "a", "lost", "connection closed"),  # a loss ends it too
        (108.0, "b", "held", "low memory: 1 MiB available < --memfree 1.0 GiB"),
    ]
    assert held_times(events, 110.0) == {
        "a": {"loaded": 3.0, "yielding": 2.0},
        "b": {"low memory": 2.0},  # still held at the end of the run
    }


# -- end to end ----------------------------------------------------------------------------------

SLOW_ON_HOST1 = "[ $ANET_HOST = host1 ] && sleep 0.3; echo job-$ANET_JOB_ID on $ANET_HOST"


def anet(tmp_path: Path, seat: FakeSeat, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "anet", "--format", "msgpack", *args],
        cwd=tmp_path, env={**os.environ, "ANET_UTMP": str(seat.utmp)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)


def test_a_yielding_host_gives_its_queue_back_and_its_suspended_job_moves(cluster, tmp_path):
    """The local host (1 slot, 2 more jobs in its queue) gets a person who stays: its queued
    jobs are taken back and its suspended job is moved, all to host1, with --retries 0; every
    job ends once, with its own bytes, and the time the local host was held is in the summary
    and in `anet report`."""
    seat = FakeSeat(tmp_path)
    mark = tmp_path / "started"
    job = f"[ $ANET_HOST = local ] && [ ! -e {mark} ] && touch {mark} && sleep 60; {SLOW_ON_HOST1}"
    batch = write_batch(tmp_path, [job] * 8)
    journal = tmp_path / "journal.sqlite"
    ssh = ("--ssh-config", str(cluster.ssh_config))
    proc = anet(
        tmp_path, seat, *ssh, "--journal", str(journal), "-S", "1/:", "-S", "1/host1",
        "--yield", "--yield-move", "2", "--retries", "0", "--no-speculate", str(batch),
    )  # fmt: skip
    try:
        wait_until(mark.exists, 60, "a job started on the local host")
        seat.types()  # and stays: the local host never runs a job again in this run
        said = read_stderr_until(proc, b"its jobs wait", timeout=30)
    except BaseException:
        finish(proc, 0.1)
        raise
    out, err = finish(proc, 90)
    assert proc.returncode == 0, said + err
    records = {r.id: r for r in decode(out)}
    assert sorted(records) == list(range(8)) and len(decode(out)) == 8
    for job_id, record in records.items():
        assert record.ok and record.stdout == f"job-{job_id} on {record.host}\n".encode()
    assert {r.host for r in records.values()} == {"host1"}  # the local host's queue was taken
    moved = [r for r in records.values() if r.attempts == 2]  # the one that slept: killed
    assert len(moved) == 1 and all(r.attempts == 1 for r in records.values() if r not in moved)
    (total,) = [line for line in err.decode().splitlines() if line.startswith("anet: 8 jobs")]
    assert total.startswith("anet: 8 jobs done, 0 failed, in ") and "; hosts held " in total
    assert total.endswith(" by polite mode")
    status = subprocess.run(
        [sys.executable, "-m", "anet", "status", str(journal)], capture_output=True, timeout=60
    )
    assert b"\nhosts held by polite mode: " in status.stdout
    assert b"\n  local: " in status.stdout and b"s (yielding)\n" in status.stdout
    page = tmp_path / "report.html"
    report = subprocess.run(
        [sys.executable, "-m", "anet", "report", str(journal), "-o", str(page)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    html = page.read_text()
    assert "<th>time held</th>" in html and "held by polite mode" in html
    assert "(yielding)</td>" in html
    with JournalReader.open(journal) as reader:  # the moved job's kill was no failed attempt
        by_host = {row[0]: row[1:3] for row in reader.attempts_by_host()}
    assert by_host["local"] == (1, 0), by_host
    assert "<td>local</td>" in html and "<td>0</td>" in html


def test_the_held_time_shows_in_the_live_views_state():
    host = HostState(parse_spec("node1"))
    host.state = HostPhase.READY
    host.hold("low memory: 1 MiB available < --memfree 1.0 GiB", 10.0)
    host.hold("", 15.0)
    host.hold("yielding: alice on tty2, idle 3s", 20.0)
    (row,) = take_snapshot(Tally(), {"node1": host}, 30.0, 27.0).hosts
    assert host_state(row) == "yielding 12s"  # 5 s short of memory, then 7 s yielding


def held_snapshot(held: float) -> Snapshot:
    rows = (
        HostRow("node1", "ready", 2, 0, 4, 0, 0, 0, 0.5, 0.1, None, held),
        HostRow("node2", "ready", 2, 0, 4, 0, 0, 0, 0.5, 0.1, None, 0.0),
    )
    return Snapshot(10.0, 8, 8, 0, 0, rows)


def test_the_summary_says_the_time_lost_to_polite_mode_only_when_there_was_some():
    lines = render_summary(held_snapshot(65.0), FailedJobs()).splitlines()
    assert (
        lines[0]
        == "anet: 8 jobs done, 0 failed, in 10s (0.8 jobs/s); hosts held 1m05s by polite mode"
    )
    assert lines[1].split()[-1] == "held" and lines[2].split()[-1] == "1m05s"
    assert lines[3].split()[-1] == "-"
    quiet = render_summary(held_snapshot(0.0), FailedJobs()).splitlines()
    assert quiet[0] == "anet: 8 jobs done, 0 failed, in 10s (0.8 jobs/s)"
    assert "held" not in quiet[1]


def test_a_memory_kill_makes_the_gate_look_again_before_the_next_start():
    """A look that let jobs start holds good for RECHECK seconds, but a --memfree-kill within
    them proves memory short: the killed job's rerun must not start on the old look."""
    free = [10 << 20]
    gate = Gate(Polite(memfree_kb=4 << 20, memfree_kill=True), memory=lambda: free[0])
    assert gate.holds(0.0, []) == ""
    free[0] = 1 << 20
    assert gate.starved(0.5).startswith("only 1.0 GiB available")
    assert gate.holds(0.6, []).startswith("low memory: 1.0 GiB available")
