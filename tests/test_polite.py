"""Polite mode (dispatcher/polite.py): jobs that leave a shared machine to its people.

Each option is checked end to end with the real `anet` command, on the local transport and on a
real OpenSSH sshd host, by what the jobs themselves see (their niceness), and by exactly-once
results.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster
from test_cli_ssh import decode, write_batch

from anet.api import HostState
from anet.remote.hostlife import HostPhase
from anet.remote.hosts import parse_spec
from anet.views.progress import Tally, take_snapshot
from dispatcher.polite import (
    NO_LIMIT,
    RECHECK,
    Gate,
    Polite,
    mem_available_kb,
    own_runnable,
    runnable_threads,
)
from dispatcher.presence import RECORD, USER_PROCESS, person_at

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

NICENESS = "cat /proc/$$/stat; sleep 0.2 & cat /proc/$!/stat; wait"
"""A job that prints its shell's /proc stat line and that of a child it forked."""


def run_anet(
    *args: str, cluster: SshdCluster | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    ssh = ("--ssh-config", str(cluster.ssh_config)) if cluster else ()
    return subprocess.run(
        [*prefix, sys.executable, "-m", "anet", *ssh, "--format", "msgpack", "--no-journal", *args],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def niceness(stat_lines: bytes) -> list[int]:
    """Field 19 of each /proc/PID/stat line (after the name in parentheses)."""
    return [int(line.rpartition(b")")[2].split()[16]) for line in stat_lines.splitlines()]


def nice_of_jobs(done: subprocess.CompletedProcess[bytes], jobs: int) -> set[int]:
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    assert sorted(r.id for r in records) == list(range(jobs))
    return {n for r in records for n in niceness(r.stdout)}


@pytest.mark.parametrize("host", [":", "host1"])
def test_nice_runs_every_job_and_its_children_at_that_niceness(cluster, tmp_path, host):
    batch = write_batch(tmp_path, [NICENESS] * 4)
    done = run_anet("-S", f"2/{host}", "--nice", "7", str(batch), cluster=cluster)
    assert nice_of_jobs(done, 4) == {7}


def test_without_nice_jobs_keep_the_dispatchers_niceness(cluster, tmp_path):
    batch = write_batch(tmp_path, [NICENESS] * 2)
    done = run_anet("-S", "host1", str(batch), cluster=cluster)
    assert nice_of_jobs(done, 2) == {os.getpriority(os.PRIO_PROCESS, 0)}


def test_nice_never_lowers_a_niceness_already_higher(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    batch = write_batch(tmp_path, [NICENESS] * 2)
    done = run_anet("-S", ":", "--nice", "3", str(batch), prefix=("nice", "-n", "12"))
    assert nice_of_jobs(done, 2) == {min(base + 12, 19)}


def test_nice_out_of_range_is_one_line(tmp_path):
    batch = write_batch(tmp_path, ["true"])
    done = run_anet("-S", ":", "--nice", "20", str(batch))
    assert done.returncode != 0
    assert b"Traceback" not in done.stderr
    assert b"--nice" in done.stderr and b"20" in done.stderr


# -- --max-load ---------------------------------------------------------------------------------


def test_the_gate_holds_while_others_load_passes_the_limit():
    load = [5]
    seen: list[set[int]] = []

    def fake(groups: set[int]) -> int:
        seen.append(groups)
        return load[0]

    gate = Gate(Polite(max_load=4), load=fake)
    assert gate.holds(0.0, [11, 12]).startswith("loaded: 5 runnable threads")
    assert seen == [{11, 12}]  # the jobs' groups are what the count leaves out
    load[0] = 4  # at the limit: not above it
    assert gate.holds(0.5, []) == ""
    load[0] = 9
    assert gate.holds(0.5 + RECHECK / 2, []) == ""  # a "may start" holds good a while...
    assert gate.holds(0.5 + RECHECK, []).startswith("loaded: 9")  # ...then is looked at again
    assert len(seen) == 3


def test_without_a_limit_the_gate_never_looks():
    def never(groups: set[int]) -> int:
        raise AssertionError("looked at the load")

    assert Gate(Polite(max_load=NO_LIMIT), load=never).holds(0.0, [1]) == ""


def test_the_live_view_shows_a_held_host_as_loaded():
    held, free = HostState(parse_spec("node1")), HostState(parse_spec("node2"))
    for host in (held, free):
        host.state = HostPhase.READY
    held.held = "loaded: 5 runnable threads of other processes > --max-load 4"
    snap = take_snapshot(Tally(), {"node1": held, "node2": free}, 1.0, 1.0)
    assert [row.state for row in snap.hosts] == ["loaded", "ready"]


@contextmanager
def busy_loops(n: int, own_group: bool = False) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`n` processes spinning on a CPU, outside anet; killed (by pid) when the block ends.

    At niceness 19: a spinning loop counts as runnable all the same (the load anet sees), but
    takes the CPU only when nothing else wants it, so it does not slow anet's own start or
    the tests beside it (6 or more loops on 2 cores did, by seconds)."""
    spin = "import os; os.nice(19)\nwhile 1: pass"
    loops = [
        subprocess.Popen([sys.executable, "-c", spin], start_new_session=own_group)
        for _ in range(n)
    ]
    try:
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def test_own_runnable_counts_the_threads_of_the_given_groups_only():
    with busy_loops(2, own_group=True) as loops:
        groups = {loops[0].pid}
        deadline = time.monotonic() + 10
        while own_runnable(groups) != 1:  # a spinning loop is on the run queue: R
            assert time.monotonic() < deadline, "the busy loop never counted as runnable"
        assert own_runnable({1 << 30}) == 0  # no such group
    assert runnable_threads() >= 1  # the reader itself runs


def noise(samples: int = 10) -> int:
    """The most threads of other processes seen runnable here in a second (other tests)."""
    most = 0
    for _ in range(samples):
        most = max(most, runnable_threads() - 1)
        time.sleep(0.1)
    return most


def read_stderr_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """What the process wrote on stderr, up to a line holding `needle`."""
    assert proc.stderr is not None
    got, deadline = b"", time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"never said {needle!r}; stderr: {got!r}"
        if select.select([proc.stderr], [], [], left)[0]:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"anet ended without saying {needle!r}; stderr: {got!r}"
            got += chunk
    return got


def test_max_load_holds_jobs_while_other_processes_load_an_sshd_host(cluster, tmp_path):
    limit = noise() + 4
    batch = write_batch(tmp_path, [f"echo job-{i}" for i in range(6)])
    ssh = ("--ssh-config", str(cluster.ssh_config))
    argv = [sys.executable, "-m", "anet", *ssh, "--format", "msgpack", "--no-journal"]
    with busy_loops(limit + 2):  # more than the limit, whatever else runs
        anet = subprocess.Popen(
            [*argv, "-S", "2/host1", "--max-load", str(limit), str(batch)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            said = read_stderr_until(anet, b"its jobs wait", timeout=60)
            assert b"host1: loaded: " in said and f"> --max-load {limit}".encode() in said
            time.sleep(2 * RECHECK)  # held over several looks: still nothing ran
            assert anet.poll() is None
        except BaseException:
            anet.send_signal(signal.SIGINT)
            anet.communicate(timeout=30)
            raise
    out, err = anet.communicate(timeout=90)  # the loops are gone: the jobs start
    assert anet.returncode == 0, err
    records = decode(out)
    assert sorted(r.id for r in records) == list(range(6))
    assert all(r.stdout == f"job-{r.id}\n".encode() for r in records)


# -- --memfree --------------------------------------------------------------------------------


def test_the_gate_holds_while_memory_is_short_and_says_so_first():
    free = [512 * 1024]
    gate = Gate(Polite(max_load=0, memfree_kb=1 << 20), load=lambda _: 7, memory=lambda: free[0])
    assert gate.holds(0.0, []) == "low memory: 512 MiB available < --memfree 1.0 GiB"
    free[0] = 1 << 20
    assert gate.holds(1.0, []).startswith("loaded: 7")  # enough memory: the load is next
    free[0] = -1  # unknown (no MemAvailable): memory holds nothing
    assert not Gate(Polite(memfree_kb=1 << 20), memory=lambda: free[0]).holds(0.0, [])


def test_mem_available_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    1234567 kB\n")
    assert mem_available_kb(str(meminfo)) == 1234567
    meminfo.write_text("MemTotal:       24000000 kB\n")  # a kernel older than 3.14
    assert mem_available_kb(str(meminfo)) == -1
    assert mem_available_kb() > 0


def test_memfree_above_the_hosts_memory_waits_and_says_so_once(cluster, tmp_path):
    batch = write_batch(tmp_path, ["echo never"] * 3)
    ssh = ("--ssh-config", str(cluster.ssh_config))
    anet = subprocess.Popen(
        [sys.executable, "-m", "anet", *ssh, "--format", "msgpack", "--no-journal",
         "-S", "host1", "--memfree", "100T", str(batch)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        said = read_stderr_until(anet, b"its jobs wait", timeout=60)
        time.sleep(2 * RECHECK)  # looked at again, still short: nothing ran, nothing more said
        assert anet.poll() is None
    finally:
        anet.send_signal(signal.SIGINT)
        out, err = anet.communicate(timeout=30)
    assert b"host1: low memory: " in said and b"< --memfree 102400.0 GiB" in said
    assert (said + err).count(b"low memory") == 1
    assert anet.returncode == 130
    assert decode(out) == []


def test_memfree_takes_sizes_and_refuses_other_words_in_one_line(tmp_path):
    batch = write_batch(tmp_path, ["echo ran"])
    done = run_anet("-S", ":", "--memfree", "1K", str(batch))
    assert [r.stdout for r in decode(done.stdout)] == [b"ran\n"]
    done = run_anet("-S", ":", "--memfree", "lots", str(batch))
    assert done.returncode == 255
    assert done.stderr.strip().splitlines() == [
        b"anet: --memfree takes a size such as 512M or 2G, not 'lots'"
    ]


# -- --memfree-kill ---------------------------------------------------------------------------

WAIT_FOR_GO = (
    "touch started-$ANET_JOB_ID; while [ ! -e go ]; do sleep 0.05; done; echo job-$ANET_JOB_ID"
)


def test_memfree_kill_kills_the_youngest_job_which_then_runs_again(tmp_path):
    """MemAvailable comes from a file the test writes (ANET_MEMINFO): plenty, then under half
    of --memfree (the youngest job is killed, its retry held), then plenty again. The kill is
    no fault of the job's: with --retries 0 it still runs again; the JSON summary has the
    time the host was held."""
    meminfo = tmp_path / "meminfo"

    def available(gib: int) -> None:
        meminfo.write_text(f"MemAvailable: {gib << 20} kB\n")

    available(10)
    batch = write_batch(tmp_path, [WAIT_FOR_GO] * 2)
    anet = subprocess.Popen(
        [sys.executable, "-m", "anet", "--format", "msgpack", "--no-journal", "-S", "2/:",
         "--retries", "0", "--log-json", "--memfree", "4G", "--memfree-kill", str(batch)],
        cwd=tmp_path, env={**os.environ, "ANET_MEMINFO": str(meminfo)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"started-{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and anet.poll() is None, "the jobs never started"
            time.sleep(0.05)
        (tmp_path / "started-1").unlink()
        available(1)  # under half of 4G: job 1, the younger, goes; its retry waits
        said = read_stderr_until(anet, b"its jobs wait", timeout=60)
        assert not (tmp_path / "started-1").exists()  # held: not started again
        (tmp_path / "go").touch()
        available(10)
        out, err = anet.communicate(timeout=60)
    finally:
        if anet.poll() is None:
            anet.kill()
            anet.communicate()
    assert b"local: low memory: 1.0 GiB available < --memfree 4.0 GiB" in said
    assert anet.returncode == 0, said + err
    records = {r.id: r for r in decode(out)}
    assert sorted(records) == [0, 1]
    assert (records[0].attempts, records[1].attempts) == (1, 2)
    assert [records[i].stdout for i in (0, 1)] == [b"job-0\n", b"job-1\n"]
    (summary,) = [json.loads(line) for line in err.splitlines() if b'"summary"' in line]
    assert [host["held"] > 0 for host in summary["hosts"]] == [True]  # its time lost


def test_memfree_kill_without_memfree_is_one_line(tmp_path):
    done = run_anet("-S", ":", "--memfree-kill", str(write_batch(tmp_path, ["true"])))
    assert done.returncode == 255
    assert done.stderr.strip().splitlines() == [
        b"anet: --memfree-kill needs --memfree SIZE: it kills under half of SIZE"
    ]


# -- --yield ----------------------------------------------------------------------------------


class FakeSeat:
    """A person's local session in a utmp file of the test's own (ANET_UTMP), whose terminal
    is a file beside it: touching it is the person typing."""

    def __init__(self, folder: Path) -> None:
        self.utmp = folder / "utmp"
        self.tty = folder / "tty9"
        self.tty.touch()
        self.away()
        record = RECORD.pack(
            USER_PROCESS, os.getpid(), b"tty9", b"9", b"alice", b"", 0, 0, 0, 0, 0, 0, 0, 0, 0, b""
        )
        self.utmp.write_bytes(record)

    def types(self) -> None:
        os.utime(self.tty, (time.time(), time.time()))

    def away(self) -> None:
        os.utime(self.tty, (time.time() - 3600, time.time() - 3600))


def test_a_person_at_the_machine_is_found_in_utmp(tmp_path, monkeypatch):
    seat = FakeSeat(tmp_path)
    monkeypatch.setenv("ANET_UTMP", str(seat.utmp))
    assert person_at(300, time.time()) == ""
    seat.types()
    assert person_at(300, time.time()) == "alice on tty9, idle 0s"


def ticks(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened in {timeout}s: {what}"
        time.sleep(0.05)


def start_anet(tmp_path: Path, seat: FakeSeat, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "anet", "--format", "msgpack", "--no-journal", "--yield", *args],
        cwd=tmp_path, env={**os.environ, "ANET_UTMP": str(seat.utmp)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


COUNTER = (
    "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo $i >> ticks; sleep 0.05; done; echo counted"
)


def test_yield_suspends_the_jobs_while_a_person_types_and_resumes_them(tmp_path):
    seat = FakeSeat(tmp_path)
    batch = write_batch(tmp_path, [COUNTER, "echo second"])
    anet = start_anet(tmp_path, seat, "-S", "1/:", str(batch))
    try:
        wait_until(lambda: ticks(tmp_path / "ticks") > 0, 60, "the job counts")
        seat.types()
        said = read_stderr_until(anet, b"its jobs wait", timeout=30)  # job 2 is held
        stopped = ticks(tmp_path / "ticks")
        time.sleep(4 * 0.05 + RECHECK)  # a running counter would tick 4 times and more
        assert ticks(tmp_path / "ticks") == stopped < 100
        seat.away()
        out, err = anet.communicate(timeout=60)
    finally:
        if anet.poll() is None:
            anet.kill()
            anet.communicate()
    assert b"local: yielding: alice on tty9, idle " in said and said.endswith(b"s: its jobs wait\n")
    assert anet.returncode == 0, said + err
    records = decode(out)
    assert [(r.id, r.attempts, r.stdout) for r in sorted(records, key=lambda r: r.id)] == [
        (0, 1, b"counted\n"), (1, 1, b"second\n"),
    ]  # fmt: skip
    assert ticks(tmp_path / "ticks") == 100  # resumed where it stopped: nothing counted twice


def test_yield_moves_a_job_suspended_too_long_to_another_host(cluster, tmp_path):
    """The local host has a person (ANET_UTMP reaches only its dispatcher); host1 is a real
    sshd host with nobody at it, where the job killed after --yield-move runs again."""
    seat = FakeSeat(tmp_path)
    mark = tmp_path / "started"
    job = (
        "[ $ANET_HOST = host1 ] && sleep 1;"  # slow there: the local host surely gets a job
        f" [ $ANET_HOST = local ] && [ ! -e {mark} ] && touch {mark} && sleep 60;"
        " echo on $ANET_HOST"
    )
    batch = write_batch(tmp_path, [job] * 6)
    ssh = ("--ssh-config", str(cluster.ssh_config))
    anet = start_anet(
        tmp_path,
        seat,
        *ssh,
        "-S",
        "1/:",
        "-S",
        "1/host1",
        "--no-speculate",
        "--yield-move",
        "1",
        str(batch),
    )
    try:
        wait_until(mark.exists, 60, "a job started on the local host")
        seat.types()
        said = read_stderr_until(anet, b"its jobs wait", timeout=30)
        time.sleep(1 + 3 * RECHECK)  # suspended past --yield-move: killed, rerun on host1
        seat.away()  # the jobs queued on the local host may start there now
        out, err = anet.communicate(timeout=120)
    finally:
        if anet.poll() is None:
            anet.kill()
            anet.communicate()
    assert anet.returncode == 0, said + err
    records = decode(out)
    assert sorted(r.id for r in records) == list(range(6))
    moved = [r for r in records if r.attempts == 2]  # the one that slept: killed, then rerun
    assert len(moved) == 1 and (moved[0].host, moved[0].stdout) == ("host1", b"on host1\n")
