"""Polite mode (dispatcher/polite.py): jobs that leave a shared machine to its people.

Each option is checked end to end with the real `anet` command, on the local transport and on a
real OpenSSH sshd host, by what the jobs themselves see (their niceness), and by exactly-once
results.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster

from anet import results
from anet.core.record import JobResult

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

NICENESS = "cat /proc/$$/stat; sleep 0.2 & cat /proc/$!/stat; wait"
"""A job that prints its shell's /proc stat line and that of a child it forked."""


def run_anet(
    *args: str, cluster: SshdCluster | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    ssh = ("--ssh-config", str(cluster.ssh_config)) if cluster else ()
    return subprocess.run(
        [*prefix, sys.executable, "-m", "anet", *ssh, "--format", "msgpack", *args],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def write_batch(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "batch.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def decode(stdout: bytes) -> list[JobResult]:
    return list(results.read(io.BytesIO(stdout)))


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
