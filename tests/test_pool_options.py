"""`anet BATCH` through a pool of real sshd hosts takes what a standalone run takes: --joblog,
--results, the end summary, --priority, a command with `:::` sources, --max-output; compared
with `--no-pool` on the same hosts. And the pool's hosts after `pool add`/`drain` outlive it."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_shared_runs as shared
from test_pool import alive, batch, cli, kill_9_after, pool_pid, records, stop_pool
from waiting import wait_until

from anet.streams.joblog import HEADER


@dataclass
class SshdPool:
    """A pool up on two sshd hosts, and the options that name the same hosts standalone."""

    cluster: object
    ssh: list[str]
    hosts: list[str]
    pid: int


@pytest.fixture
def sshd_pool(make_cluster) -> Iterator[SshdPool]:
    from sshd_hosts import leftover_processes

    own = make_cluster(2)
    ssh = ["--ssh-config", str(own.ssh_config)]
    hosts = [arg for name in own.names for arg in ("-S", f"2/{name}")]
    up = cli("up", *ssh, *hosts)
    assert up.returncode == 0, up.stderr
    pid = pool_pid()
    try:
        yield SshdPool(own, ssh, hosts, pid)
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")
    assert leftover_processes(own.hosts, grace=10.0) == {}


def _joblog(path: Path) -> list[tuple[str, ...]]:
    """The joblog's lines without their times (Starttime, JobRuntime), sorted."""
    text = path.read_text()
    assert text.startswith(HEADER)
    rows = [line.split("\t") for line in text[len(HEADER) :].splitlines()]
    return sorted((r[0], r[5], r[6], r[7], r[8]) for r in rows)


def _results(root: Path) -> dict[str, tuple[bytes, bytes, dict]]:
    found = {}
    for job in root.iterdir():
        meta = json.loads((job / "meta.json").read_text())
        kept = {
            k: meta[k]
            for k in (
                "id",
                "ok",
                "exit",
                "signal",
                "attempts",
                "error",
                "stdout_bytes",
                "stderr_bytes",
            )
        }
        found[job.name] = ((job / "stdout").read_bytes(), (job / "stderr").read_bytes(), kept)
    return found


def test_joblog_results_and_the_summary_through_a_pool_as_standalone(sshd_pool, tmp_path):
    path = batch(
        tmp_path, [f"echo job {i}; echo e{i} >&2; exit $(({i} % 7 == 6))" for i in range(30)]
    )
    mine, theirs = tmp_path / "pooled", tmp_path / "alone"
    mine.mkdir(), theirs.mkdir()
    options = ["-k", "--retries", "0", "--no-speculate"]  # speculation would vary the joblogs
    pooled = cli(
        *options, "--joblog", str(mine / "log.tsv"), "--results", str(mine / "r"), str(path)
    )
    alone = cli(
        "--no-pool", *sshd_pool.ssh, *sshd_pool.hosts, *options,
        "--joblog", str(theirs / "log.tsv"), "--results", str(theirs / "r"), str(path),
    )  # fmt: skip
    assert pooled.returncode == alone.returncode == 4, pooled.stderr
    assert pooled.stdout == alone.stdout and len(pooled.stdout) > 30 * 8
    assert "1  done" in cli("ls").stdout.decode()  # it was the pool's run, not a standalone one
    assert _joblog(mine / "log.tsv") == _joblog(theirs / "log.tsv")
    assert len(_joblog(mine / "log.tsv")) == 30
    assert _results(mine / "r") == _results(theirs / "r")
    said, alone_said = pooled.stderr.decode(), alone.stderr.decode()
    for text in (said, alone_said):
        assert "anet: 30 jobs done, 4 failed, in " in text
        assert "failed jobs (4):\n" in text  # in the order they came: it varies
        assert all(f"\n  job {i}: e{i}\n" in text for i in (6, 13, 20, 27))
        assert "\njoblog: " in text and "\nresults: " in text
        assert text.rstrip().endswith("4 of 30 jobs failed")
    table = said.split("\n  host ", 1)[1].splitlines()  # the header, then one line a host
    assert table[0].split()[:4] == ["state", "slots", "jobs", "jobs/min"]
    done = {row.split()[0]: int(row.split()[3]) for row in table[1:3]}
    assert set(done) == set(sshd_pool.cluster.names) and sum(done.values()) == 30
    assert all(row.split()[-1] == "-" for row in table[1:3])  # speculation: not counted per run
    assert "journal: " in said  # the pool's journal of the run
    quiet = cli("-q", str(path))
    assert quiet.stderr.decode().strip() == "anet: 4 of 30 jobs failed"


def _spans(marks: Path, run: str) -> list[tuple[float, float]]:
    """(start, end) of each job of `run`, as the jobs wrote them."""
    return [tuple(map(float, file.read_text().split())) for file in marks.glob(f"{run}.*")]


def _busy(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Slot-seconds the jobs spent between `start` and `end`."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)


def test_a_run_of_priority_3_holds_three_of_four_slots_beside_one_of_priority_1(
    sshd_pool, tmp_path
):
    """Four slots (two hosts of two), two runs: the first, priority 1, holds them all until the
    second comes with priority 3; from then on the second holds about 3 (an equal share would
    be 2) while the first has jobs waiting all along."""
    marks = tmp_path / "marks"
    marks.mkdir()
    now = "python3 -c 'import time; print(time.time())'"

    def jobs(run: str, count: int) -> Path:
        mark = f"{marks}/{run}"
        lines = [f"s=$({now}); sleep 0.4; echo $s $({now}) > {mark}.{i}" for i in range(count)]
        (tmp_path / run).mkdir()
        return batch(tmp_path / run, lines)

    low = cli("submit", str(jobs("low", 200)))  # under way until cancelled, at the end
    wait_until(lambda: any(marks.iterdir()), timeout=30, what="the first run's jobs to start")
    high = cli("--priority", "3", "--format", "msgpack", str(jobs("high", 12)))
    assert high.returncode == 0, high.stderr
    assert len(records(high.stdout)) == 12
    assert "2  done" in cli("ls").stdout.decode()
    assert "1  running" in cli("ls").stdout.decode()  # the first run was under way throughout
    high_spans, low_spans = _spans(marks, "high"), _spans(marks, "low")
    start, end = min(a for a, _ in high_spans), max(b for _, b in high_spans)
    high_time, low_time = _busy(high_spans, start, end), _busy(low_spans, start, end)
    # 3 of 4 slots are the second run's; each run's jobs queued on a host (to hide its round
    # trip) may take a slot of the other's as it frees, so the split is near 3:1, not exact
    assert 0.65 < high_time / (high_time + low_time) < 0.92, (high_time, low_time)
    assert any(start < a < end for a, _ in low_spans)  # the first run was not starved
    assert cli("cancel", low.stdout.decode().strip()).returncode == 0


@pytest.mark.slow
def test_pool_add_then_drain_moves_a_run_to_the_new_host_and_loses_no_job(make_cluster, tmp_path):
    """A pool of host1 runs a batch; host2 is added (it takes jobs), then host1 is drained: its
    long job runs to its end there (not killed, not run again), it gets nothing new, then its
    dispatcher is gone while the pool goes on with host2. Every job ends once, ok."""
    from sshd_hosts import leftover_processes

    own = make_cluster(2)
    ssh = ["--ssh-config", str(own.ssh_config)]
    assert cli("up", *ssh, "-S", "2/host1").returncode == 0
    pid = pool_pid()
    try:
        marker = tmp_path / "long-started"
        lines = [f"touch {marker}; sleep 3; echo long"]
        lines += [f"sleep 0.1; echo {i}" for i in range(1, 80)]
        run_id = cli("submit", str(batch(tmp_path, lines))).stdout.decode().strip()
        wait_until(marker.exists, timeout=30, what="the long job to start on host1")
        added = cli("pool", "add", "2/host2")
        assert added.returncode == 0, added.stderr
        assert added.stdout.decode().split()[6:9] == ["host2", "ready", "2"]
        drained = cli("pool", "drain", "host1")
        assert drained.returncode == 0 and drained.stderr == b"host1: drained\n", drained.stderr
        assert leftover_processes([own["host1"]], grace=10.0) == {}  # its dispatcher is gone
        hosts = cli("pool").stdout.decode().splitlines()
        assert [line.split()[0] for line in hosts[1:-1]] == ["host2"]
        attached = cli("attach", "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert sorted(got) == list(range(80)) and all(r.ok for r in got.values())
        assert (got[0].host, got[0].attempts, got[0].stdout) == ("host1", 1, b"long\n")
        assert {r.host for r in got.values()} == {"host1", "host2"}
        again = cli("--format", "msgpack", str(batch(tmp_path, ["echo after"])))
        assert records(again.stdout)[0].host == "host2"  # the pool goes on without host1
        refused = cli("pool", "drain", "host1")
        assert refused.returncode == 255
        assert refused.stderr == b"anet: host1 is not in the pool\n"
        twice = cli("pool", "add", "host2")
        assert twice.returncode == 255 and twice.stderr == b"anet: host2 is in the pool already\n"
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")
    assert leftover_processes(own.hosts, grace=10.0) == {}


def test_a_pool_runs_summary_counts_polite_modes_kills_as_no_failed_attempt():
    """As a standalone run's summary, `anet status` and `anet report` count them."""
    from anet.pool.run import HostTally
    from anet.streams.journal import AttemptRecord

    tally = HostTally()
    for code, sig, excused in ((1, None, False), (None, 9, True), (0, None, False)):
        tally.attempt(AttemptRecord(0, 1, "h1", 1.0e9, 2.0, code, sig, 0, excused))
    assert (tally.ended, tally.failed_attempts) == (3, 1)


def _same_outcome(pooled, alone, failed: int, total: int) -> None:
    """Both commands wrote the same bytes, exited alike, summed up the same counts and named
    the same journal."""
    assert pooled.returncode == alone.returncode == failed, pooled.stderr
    assert pooled.stdout == alone.stdout and pooled.stdout
    journals = []
    for said in (pooled.stderr.decode(), alone.stderr.decode()):
        assert f"anet: {total} jobs done, {failed} failed, in " in said, said
        last = f"{failed} of {total} jobs failed" if failed else "sqlite"
        assert said.rstrip().endswith(last), said
        journals += [line for line in said.splitlines() if line.startswith("journal: ")]
    assert len(journals) == 2 and journals[0] == journals[1], journals


def test_a_command_with_sources_is_a_pools_run_with_the_standalone_bytes_and_journal(
    sshd_pool, tmp_path
):
    """GNU parallel's command line (`:::`, `::::`, `-a`) goes through the pool: the same bytes,
    status and summary as `--no-pool`, and the journal a standalone run keeps (a standalone
    `--resume` takes the pool's run up, and finds nothing changed)."""
    numbers = tmp_path / "numbers"
    numbers.write_text("".join(f"{i}\n" for i in range(10)))
    alone_hosts = ["--no-pool", *sshd_pool.ssh, *sshd_pool.hosts]
    options = ["-k", "--retries", "0", "--no-speculate"]
    line = ["echo {1} {2}; exit $(( {2} % 4 == 3 ))", ":::", "a", "b", "::::", str(numbers)]
    pooled = cli(*options, *line, cwd=tmp_path)
    assert "1  done" in cli("ls").stdout.decode()  # the pool's run, not a standalone one
    alone = cli(*alone_hosts, *options, *line, cwd=tmp_path)
    _same_outcome(pooled, alone, failed=4, total=20)
    resumed = cli(*alone_hosts, *options, "--resume", "--only-new", *line, cwd=tmp_path)
    assert resumed.returncode == 4, resumed.stderr  # the journal's: only the failed ran again
    pooled = cli(*options, "-a", str(numbers), "echo x{}", cwd=tmp_path)
    alone = cli(*alone_hosts, *options, "-a", str(numbers), "echo x{}", cwd=tmp_path)
    _same_outcome(pooled, alone, failed=0, total=10)
    assert "2  done" in cli("ls").stdout.decode()


def test_max_output_kills_a_pools_job_as_it_kills_a_standalone_one(sshd_pool, tmp_path):
    path = batch(tmp_path, ["head -c 5000 /dev/zero | tr '\\0' x", "echo small"])
    options = ["-k", "--max-output", "1K", "--format", "msgpack"]
    pooled = cli(*options, str(path))
    assert "1  done" in cli("ls").stdout.decode()
    alone = cli("--no-pool", *sshd_pool.ssh, *sshd_pool.hosts, *options, str(path))
    assert pooled.returncode == alone.returncode == 1, pooled.stderr
    ours, theirs = records(pooled.stdout), records(alone.stdout)
    assert ours[0].error == theirs[0].error and "--max-output 1K" in ours[0].error, ours[0].error
    assert (ours[0].ok, ours[0].attempts) == (theirs[0].ok, theirs[0].attempts) == (False, 1)
    assert (ours[1].ok, ours[1].stdout) == (theirs[1].ok, theirs[1].stdout) == (True, b"small\n")


def test_hosts_added_and_drained_stay_so_after_down_and_after_a_kill_9(make_cluster, tmp_path):
    """The pool's hosts are what `anet up` gave, plus those `pool add` added, less those
    `pool drain` let go: the next `anet up` of that name (after `anet down`, or a pool
    killed with -9) starts with them."""
    from sshd_hosts import leftover_processes

    own = make_cluster(3)
    up = ["up", "--ssh-config", str(own.ssh_config), "-S", "host1"]

    def hosts() -> list[str]:
        return [line.split()[0] for line in cli("pool").stdout.decode().splitlines()[1:-1]]

    assert cli(*up).returncode == 0
    try:
        assert cli("pool", "add", "2/host2", "host3").returncode == 0
        assert cli("pool", "drain", "host3").returncode == 0
        assert hosts() == ["host1", "host2"]
        stop_pool(pool_pid())
        assert cli(*up).returncode == 0
        assert hosts() == ["host1", "host2"]
        assert cli("pool", "drain", "host1").returncode == 0
        pid = pool_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to die")
        again = cli(*up)
        assert again.returncode == 0, again.stderr
        assert b"1 of 1 hosts ready" in again.stderr
        assert hosts() == ["host2"]
        got = records(cli("--format", "msgpack", str(batch(tmp_path, ["echo hi"]))).stdout)
        assert got[0].host == "host2"
    finally:
        cli("down")
    assert leftover_processes(own.hosts, grace=10.0) == {}


def test_a_pool_of_sshd_hosts_killed_with_9_mid_run_is_restored_and_every_result_comes_once(
    make_cluster, tmp_path
):
    """`kill -9` of the daemon while its run is under way on two sshd hosts: the dead pool's
    remote jobs end with their dispatchers (whose master went), the next `anet up` of that name
    resumes the run from its journal, an attach gets every result once, and no job whose result
    had been delivered runs again."""
    from sshd_hosts import leftover_processes

    own = make_cluster(2)
    up = ["up", "--ssh-config", str(own.ssh_config), "--keepalive", "3"]
    up += [arg for name in own.names for arg in ("-S", f"2/{name}")]
    assert cli(*up).returncode == 0
    pid = pool_pid()
    ran = tmp_path / "ran"  # each job appends its id once it has done its work
    path = batch(tmp_path, [f"sleep 0.2; echo {i} >> {ran}; echo out{i}" for i in range(60)])
    run_id = cli("submit", str(path)).stdout.decode().strip()
    before = kill_9_after(run_id, 10, pid)
    assert leftover_processes(own.hosts, grace=30.0) == {}  # the dead pool's jobs: killed
    again = cli(*up)
    assert again.returncode == 0, again.stderr
    new = pool_pid()
    try:
        attached = cli("attach", "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert {i: r.stdout for i, r in got.items()} == {i: b"out%d\n" % i for i in range(60)}
        assert {r.host for r in got.values()} <= set(own.names)
        runs = ran.read_text().split()
        assert all(runs.count(str(i)) == 1 for i in before), "a delivered job ran again"
        assert len(set(runs)) == 60
    finally:
        stop_pool(new)
    assert leftover_processes(own.hosts, grace=10.0) == {}


def test_two_runs_through_a_pool_of_four_sshd_hosts_split_the_slots_within_one_job(
    cluster, tmp_path
):
    """Two runs submitted to a pool of the four shared sshd hosts (8 slots): while both run,
    each holds half the slots, give or take a job (the job-seconds each got in that window)."""
    from sshd_hosts import leftover_processes

    hosts = [arg for name in cluster.names for arg in ("-S", f"2/{name}")]
    assert cli("up", "--ssh-config", str(cluster.ssh_config), *hosts).returncode == 0
    pid = pool_pid()
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        ids, gate = [], tmp_path / "gate"  # no job starts its work before both runs are in
        wait = f"while [ ! -e {gate} ]; do sleep 0.05; done; "
        for run in "ab":
            (tmp_path / run).mkdir()
            lines = [wait + shared._stamped(marks, f"{run}.{i:03}") for i in range(80)]
            ids.append(cli("submit", str(batch(tmp_path / run, lines))).stdout.decode().strip())
        gate.touch()
        assert [cli("wait", run_id).returncode for run_id in ids] == [0, 0]
    finally:
        stop_pool(pid)
    assert leftover_processes(cluster.hosts, grace=10.0) == {}
    a_spans, b_spans = shared._spans(marks, "a"), shared._spans(marks, "b")
    assert len(a_spans) == len(b_spans) == 80
    start = max(min(s for s, _ in a_spans), min(s for s, _ in b_spans))
    end = min(max(e for _, e in a_spans), max(e for _, e in b_spans))
    assert end - start > 1.0, "the runs hardly overlapped"
    share_a, share_b = shared._busy(a_spans, start, end), shared._busy(b_spans, start, end)
    slots = 8 * (end - start)
    assert abs(share_a - share_b) <= 0.25 * slots, (share_a, share_b, slots)  # 1 job in 4 slots
