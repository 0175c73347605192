"""Real faults on real sshd hosts: the batch's output must still be complete and exact.

Each test breaks a host while `anet` runs (kill -9 its dispatcher, SIGSTOP it whole, stop and
restart its sshd) and then checks, with anet's own reader, that every job's result arrived
exactly once and right, and that nothing is left running on any host.
"""

from __future__ import annotations

import io
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster, SshdHost, leftover_processes
from waiting import journal_rows, wait_until

from anet import results
from anet.remote.bootstrap import payload_digest
from dispatcher.__main__ import DRAIN_GRACE

N_JOBS = 48
KEEPALIVE = 3.0
"""--keepalive of the tests that wait for a silent host to be declared lost (the default, 15 s,
would make each of them wait that long): the master must declare it lost within that."""
SLACK = 1.0
"""What the measure may add on a loaded machine: the stderr line is timed when read."""


def start_anet(cluster: SshdCluster, batch: Path, *args: str) -> subprocess.Popen[bytes]:
    hosts = [a for name in cluster.names for a in ("-S", name)]
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *hosts]
    return subprocess.Popen(
        [*argv, "--format", "msgpack", *args, str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


class StderrWatcher:
    """Reads anet's stderr as it comes, so a test can see *when* a line appeared."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[tuple[float, str]] = []
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def wait_for(self, text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if text in line:
                    return when
            time.sleep(0.05)
        raise AssertionError(f"no stderr line with {text!r} in {timeout}s: {self.lines}")

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 120) -> bytes:
        """anet's whole stdout once it exits; stderr stays this watcher's alone to read."""
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=timeout)
        return out

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(line for _, line in self.lines)


def job_batch(tmp_path: Path, seconds: float) -> Path:
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"sleep {seconds}; echo job-{i}\n" for i in range(N_JOBS)))
    return batch


def assert_complete(stdout: bytes) -> list:
    records = list(results.read(io.BytesIO(stdout)))
    assert sorted(r.id for r in records) == list(range(N_JOBS))  # each id exactly once
    for r in records:
        assert r.ok and r.stdout == f"job-{r.id}\n".encode(), r
    return records


def wait_for_jobs(host: SshdHost, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum("sleep" in cmd for _, cmd in host.processes()) < count:
        assert time.monotonic() < deadline, f"{host.name} never ran {count} jobs"
        time.sleep(0.05)


def dispatcher_pid(host: SshdHost) -> int:
    """The host's dispatcher. A job forked an instant ago still shows the dispatcher's command
    line until its exec: asked again, it is gone from the list (seen once in a full run)."""

    def alone() -> list[int]:
        found = [pid for pid, cmd in host.processes() if "python3" in cmd and "zlib" in cmd]
        return found if len(found) == 1 else []

    return wait_until(alone, 10, f"one dispatcher on {host.name}: {host.processes()}")[0]


def test_killed_dispatcher_restarts_over_the_same_connection(make_cluster, tmp_path):
    own = make_cluster(2)
    proc = start_anet(own, job_batch(tmp_path, 0.4))
    watcher = StderrWatcher(proc)
    wait_for_jobs(own["host1"], 1)
    victim = own["host1"]
    os.kill(dispatcher_pid(victim), signal.SIGKILL)
    out = watcher.finish(proc)
    assert proc.returncode == 0, watcher.text()
    records = assert_complete(out)
    assert "host1: " in watcher.text()  # the loss was reported...
    assert {r.host for r in records} == {"host1", "host2"}
    assert victim.accepted_connections() == 1  # ...and the dispatcher restarted in place
    assert leftover_processes(own.hosts, grace=5.0) == {}  # orphans were found and killed


@pytest.mark.slow
def test_frozen_host_is_declared_lost_within_its_keepalive(make_cluster, tmp_path):
    own = make_cluster(2)
    frozen = own["host2"]
    proc = start_anet(own, job_batch(tmp_path, 0.3), "--keepalive", str(KEEPALIVE))
    watcher = StderrWatcher(proc)
    try:
        wait_for_jobs(frozen, 1)
        frozen.freeze()
        froze_at = time.monotonic()
        lost_at = watcher.wait_for("host2: lost", timeout=30)
        out = watcher.finish(proc)
    finally:
        frozen.thaw()
    assert lost_at - froze_at <= KEEPALIVE + SLACK, f"detected after {lost_at - froze_at:.1f}s"
    assert proc.returncode == 0, watcher.text()
    assert_complete(out)
    # The healed host's dispatcher heard nothing from its master for too long: it killed its
    # jobs and left, so nothing is left over.
    assert leftover_processes([frozen], grace=10.0) == {}


def test_host_whose_sshd_restarts_rejoins_and_gets_work(make_cluster, tmp_path):
    own = make_cluster(2)
    flaky = own["host2"]
    batch = tmp_path / "batch.txt"
    gate = tmp_path / "gate"  # jobs wait at it: work is left for host2 however slow its return
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    batch.write_text("".join(f"{wait}; echo job-{i}; date +%s.%N >&2\n" for i in range(N_JOBS)))
    proc = start_anet(own, batch, "-j", "2")
    watcher = StderrWatcher(proc)
    wait_for_jobs(flaky, 1)
    flaky.stop()
    watcher.wait_for("host2: connection lost", timeout=30)  # back once anet saw it go
    flaky.start()
    back_at = time.time()
    watcher.wait_for("host2: back", timeout=60)
    gate.touch()
    out = watcher.finish(proc)
    assert proc.returncode == 0, watcher.text()
    records = assert_complete(out)
    after = [r for r in records if r.host == "host2" and float(r.stderr) > back_at]
    assert after, "host2 never got work after it came back"
    assert "host2: back" in watcher.text()
    assert flaky.accepted_connections() == 2


@pytest.mark.slow
def test_kill_9_of_the_master_then_resume_loses_nothing_and_reruns_no_success(
    make_cluster, tmp_path
):
    own = make_cluster(2)
    batch = job_batch(tmp_path, 0.3)
    journal = tmp_path / "journal.sqlite"
    proc = start_anet(own, batch, "--journal", str(journal))
    assert proc.stdout is not None
    seen = []
    for record in results.read(proc.stdout):
        seen.append(record)
        if len(seen) == 10:
            break
    ids = ",".join(str(r.id) for r in seen)
    wait_until(
        lambda: (
            journal_rows(journal, f"SELECT id FROM results WHERE delivered AND id IN ({ids})")
            == [(r.id,) for r in sorted(seen, key=lambda r: r.id)]
        ),
        30,
        "the 10 results read committed as delivered",
    )
    proc.kill()
    proc.wait()
    # The dispatchers saw their channels close and killed their jobs.
    assert leftover_processes(own.hosts, grace=10.0) == {}

    resumed = start_anet(own, batch, "--journal", str(journal), "--resume", "--only-new")
    new_out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    new_ids = {r.id for r in results.read(io.BytesIO(new_out))}
    assert not new_ids & {r.id for r in seen}, "a job that had succeeded ran again"

    full = start_anet(own, batch, "--journal", str(journal), "--resume")
    out, err = full.communicate(timeout=120)
    assert full.returncode == 0, err
    assert_complete(out)  # earlier and new results together: every job exactly once


def test_a_changed_batch_is_refused_on_resume(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("echo 1\n")
    journal = tmp_path / "journal.sqlite"
    argv = [sys.executable, "-m", "anet", "--journal", str(journal), str(batch)]
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    batch.write_text("echo 2\n")
    again = subprocess.run([*argv[:-1], "--resume", str(batch)], capture_output=True, timeout=60)
    assert again.returncode == 255
    assert b"batch file changed" in again.stderr and b"Traceback" not in again.stderr


def _rss_mb(pid: int) -> float | None:
    """The process's resident memory in MB; None once it has ended (never a 0 that would pass
    any bound)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return None  # gone, or a zombie, which has no VmRSS


@pytest.mark.slow
def test_a_slow_consumer_keeps_master_memory_bounded_and_nothing_deadlocks(make_cluster, tmp_path):
    own = make_cluster(2)
    batch = tmp_path / "batch.txt"
    # Outputs under SPOOL_AT (1 MiB), so the master holds each in memory until it is written:
    # only the result queue's bound keeps them from piling up (bigger ones wait in spool files,
    # and passed with that bound removed). 300 MB in all, read in 6 s.
    size, jobs = 1_000_000, 300
    batch.write_text("".join(f"head -c {size} /dev/zero; echo {i}\n" for i in range(jobs)))
    proc = start_anet(own, batch, "--no-journal")
    assert proc.stdout is not None
    samples: list[float] = []
    received = 0
    for record in results.read(proc.stdout):
        received += 1
        assert record.ok and len(record.stdout) == size + len(f"{record.id}\n")
        time.sleep(0.02)  # about 50 MB/s: far slower than the hosts produce
        if (rss := _rss_mb(proc.pid)) is not None:
            samples.append(rss)
    assert proc.wait(timeout=60) == 0
    assert received == jobs
    # The master cannot end before its last results were read: nearly every read saw it.
    assert len(samples) >= jobs // 2 and min(samples) > 0, samples
    peak = max(samples)
    # Unbounded, finished results alone would reach 300 MB; the result queue holds at most
    # 32 MiB, plus the outputs of the attempts still running and transient copies.
    assert peak < 200, f"master peaked at {peak:.0f} MB"


def test_a_job_that_fails_once_is_retried_on_another_host(make_cluster, tmp_path):
    own = make_cluster(2)
    marks = tmp_path / "marks"
    marks.mkdir()
    batch = tmp_path / "batch.txt"
    batch.write_text(
        "".join(
            f'm={marks}/{i}; if [ -e $m ]; then echo "$(cat $m) $ANET_HOST"; '
            f"else echo $ANET_HOST > $m; sleep 1; exit 1; fi\n"
            for i in range(8)
        )
    )
    # Each first attempt fails only after 1 s, once both hosts are surely up: a retry goes to
    # the same host only when no other host is there to take it.
    proc = start_anet(own, batch, "--no-speculate")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    records = list(results.read(io.BytesIO(out)))
    assert sorted(r.id for r in records) == list(range(8))
    for r in records:
        first, second = r.stdout.decode().split()
        assert r.ok and r.attempts == 2 and first != second, r


def test_a_job_that_always_fails_is_one_final_failure_after_its_retries(make_cluster, tmp_path):
    own = make_cluster(2)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo fine\necho broken >&2; exit 7\n")
    proc = start_anet(own, batch, "--retries", "3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # one failed job
    records = {r.id: r for r in results.read(io.BytesIO(out))}
    assert records[0].ok
    failed = records[1]
    assert not failed.ok and failed.exit_code == 7 and failed.attempts == 4
    assert failed.stderr == b"broken\n"
    hosts = [a for name in own.names for a in ("-S", name)]
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(own.ssh_config), *hosts]
    original = subprocess.run([*argv, "--format", "anet", str(batch)], capture_output=True)
    assert original.returncode == 1
    assert [r.id for r in results.read(io.BytesIO(original.stdout), "anet")] == [0]


def _makespan(own: SshdCluster, batch: Path, *args: str) -> float:
    start = time.monotonic()
    proc = start_anet(own, batch, "-j", "2", *args)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, err
    assert sorted(r.id for r in results.read(io.BytesIO(out))) == list(range(16))
    return elapsed


@pytest.mark.slow
def test_speculation_shortens_the_makespan_when_one_host_is_10x_slower(make_cluster, tmp_path):
    own = make_cluster(2)
    batch = tmp_path / "batch.txt"  # host2 is "10x slower": its jobs take 3 s instead of 0.3 s
    batch.write_text(
        "".join(f'[ "$ANET_HOST" = host2 ] && sleep 3 || sleep 0.3; echo {i}\n' for i in range(16))
    )
    off = _makespan(own, batch, "--no-speculate")
    on = _makespan(own, batch)
    # Ideal: host1 alone, 16 jobs x 0.3 s / 2 slots = 2.4 s; without copies host2's queued jobs
    # hold the batch for rounds of 3 s.
    assert on < 0.75 * off, f"speculation on {on:.1f}s vs off {off:.1f}s"


@pytest.mark.slow
@pytest.mark.root("a partition cuts the host off with iptables", tools=("iptables",))
def test_a_partitioned_host_is_lost_and_the_healed_one_has_nothing_left(make_cluster, tmp_path):
    own = make_cluster(2)
    cut = own["host2"]
    proc = start_anet(own, job_batch(tmp_path, 0.3), "--no-journal", "--keepalive", str(KEEPALIVE))
    watcher = StderrWatcher(proc)
    try:
        wait_for_jobs(cut, 1)
        cut.partition()  # silent both ways: TCP stays open, nothing arrives
        cut_at = time.monotonic()
        lost_at = watcher.wait_for("host2: lost", timeout=30)
        out = watcher.finish(proc)
        # Cut off from its master, the dispatcher gives up by itself and kills its jobs.
        assert leftover_processes([cut], grace=20.0) == {}
    finally:
        cut.heal()
    assert lost_at - cut_at <= KEEPALIVE + SLACK, f"detected after {lost_at - cut_at:.1f}s"
    assert proc.returncode == 0, watcher.text()
    assert_complete(out)


def test_a_job_past_its_timeout_is_killed_retried_then_failed(make_cluster, tmp_path):
    own = make_cluster(1)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo quick\nsleep 300; echo never\n")
    proc = start_anet(own, batch, "--timeout", "1", "--retries", "1", "--no-journal")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    records = {r.id: r for r in results.read(io.BytesIO(out))}
    assert records[0].ok
    slow = records[1]
    assert not slow.ok and slow.attempts == 2 and "timed out" in (slow.error or "")
    assert slow.stdout == b""
    assert leftover_processes(own.hosts, grace=5.0) == {}


def test_a_70_megabyte_result_arrives_intact(make_cluster, tmp_path):
    """Random bytes, so a piece out of place or lost shows; 70 MB is past every threshold that
    keeps output in memory (64 MiB at most: docs/testing.md), so every copy between spool,
    chunks and stdout is on its path. 200 MB (40 s under load) tested no other path."""
    own = make_cluster(1)
    make = "import random,sys; sys.stdout.buffer.write(random.Random(5).randbytes(70_000_000))"
    batch = tmp_path / "batch.txt"
    batch.write_text(f"python3 -c '{make}'\n")
    proc = start_anet(own, batch, "--no-journal")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (record,) = results.read(io.BytesIO(out))
    assert record.stdout == random.Random(5).randbytes(70_000_000)


@pytest.mark.slow
def test_a_master_stopped_longer_than_the_drain_grace_loses_no_output(make_cluster, tmp_path):
    """Ctrl-Z of `anet` while a big job streams: back-pressure pauses the other jobs' pipes on
    the host, and a job that ends meanwhile must still deliver its output once anet goes on."""
    own = make_cluster(1)
    host = own["host1"]
    big, smalls = 100_000_000, 10
    batch = tmp_path / "stop.txt"
    batch.write_text(
        f"head -c 3000000000 /dev/zero | head -c {big}\n"
        + "".join(f"sleep 1.5; echo small{i}\n" for i in range(1, smalls + 1))
    )
    out = tmp_path / "o.bin"
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(own.ssh_config), "-S", "4/host1"]
    argv += ["-q", "--no-journal", "--no-speculate", "--format", "msgpack", str(batch)]
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_for_jobs(host, 3)  # the first small jobs run next to the big one
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while any("sleep 1.5" in cmd for _, cmd in host.processes()):  # they end, paused
            assert time.monotonic() < deadline, host.processes()
            time.sleep(0.05)
        time.sleep(DRAIN_GRACE + 1.5)  # anet stays stopped well past the grace
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with out.open("rb") as stream:
        records = {r.id: r for r in results.read(stream)}
    assert sorted(records) == list(range(smalls + 1))
    assert records[0].ok and records[0].stdout == bytes(big)
    for i in range(1, smalls + 1):
        assert records[i].ok and records[i].stdout == f"small{i}\n".encode(), records[i]


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_dispatcher_cache_is_fetched_again(make_cluster, tmp_path, damage):
    """A job may write anywhere the user can: a damaged cached payload must not break the host
    for ever. The stub checks the file against its hash and asks for a fresh copy."""
    own = make_cluster(1)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo 1\necho 2\n")
    first = start_anet(own, batch, "--no-journal")
    assert first.wait(timeout=60) == 0, first.communicate()[1]
    (cached,) = own["host1"].anet_home.glob("dispatcher-*.zip")
    good = cached.read_bytes()
    if damage == "truncated":
        cached.write_bytes(good[: len(good) // 3])
    else:  # same size, one byte changed in the middle: only the hash can tell
        middle = len(good) // 2
        cached.write_bytes(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :])
    again = start_anet(own, batch, "--no-journal")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert sorted(r.stdout for r in results.read(io.BytesIO(out))) == [b"1\n", b"2\n"]
    assert cached.read_bytes() == good
    assert payload_digest(good) == cached.name[len("dispatcher-") : -len(".zip")]
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700
    assert [p.name for p in cached.parent.glob("dispatcher-*")] == [cached.name]  # no tmp left
