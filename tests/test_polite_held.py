"""A host polite mode holds gives its work back: the jobs waiting in its queue are taken back and
run elsewhere, and a job it kills (--yield moves it, --memfree-kill) spends none of the job's
retries; the time the host was held shows in the summary and in `anet report`.

The scheduler's and the engine's part is checked on its own in test_polite_core.py (pure,
exactly once through every race of a take back with a start); here, the whole of it end to end,
on the local host (where a fake person sits, ANET_UTMP) and a real OpenSSH sshd host, by
exactly-once results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_ssh import decode, write_batch
from test_polite import FakeSeat, read_stderr_until, wait_until

from anet.api import HostState
from anet.remote.hostlife import HostPhase
from anet.remote.hosts import parse_spec
from anet.streams.journalreader import JournalReader
from anet.views.progress import HostRow, Snapshot, Tally, host_state, take_snapshot
from anet.views.stats import held_times
from anet.views.summary import FailedJobs, render_summary
from dispatcher.polite import Gate, Polite

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


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
