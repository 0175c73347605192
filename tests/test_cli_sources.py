"""`-H slurm` and `-H inventory.yml:GROUP` with the real `anet` command against real sshd hosts:
the allocation's (or the group's) hosts run the batch, each job exactly once.

The fake allocation names the shared cluster's hosts by their ssh config aliases (host1..host4),
as a real one names its nodes: `host[1-4]` is Slurm's hostlist for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster
from test_cli_ssh import decode, run_anet, write_batch

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()


def without_allocation(**extra: str) -> dict[str, str]:
    """This process's environment with no batch system in it, and `extra` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_"))}
    return {**env, **extra}


def test_slurm_allocation_runs_every_job_once_on_its_nodes(cluster: SshdCluster, tmp_path):
    batch = write_batch(tmp_path, [f"echo job-{i}" for i in range(60)])
    env = without_allocation(
        SLURM_JOB_NODELIST="host[1-2],host[3-4]", SLURM_JOB_CPUS_PER_NODE="2(x3),1"
    )
    done = run_anet(cluster, batch, "-H", "slurm", "--format", "msgpack", env=env)
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    assert Counter(r.id for r in records) == Counter(range(60))
    assert all(r.ok and r.stdout == f"job-{r.id}\n".encode() for r in records)
    assert {r.host for r in records} <= set(cluster.names)  # the fast may leave one idle


def test_hosts_check_takes_the_allocation(cluster: SshdCluster):
    env = without_allocation(SLURM_JOB_NODELIST="host[1-2]", SLURM_JOB_CPUS_PER_NODE="3,5")
    argv = [sys.executable, "-m", "anet", "hosts", "check", "--ssh-config", str(cluster.ssh_config)]
    done = subprocess.run(
        [*argv, "-H", "slurm", "--format", "jsonl"],
        capture_output=True, text=True, env=env, timeout=90, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["host"], row["ok"]) for row in rows] == [("host1", True), ("host2", True)]


def test_an_inventory_group_runs_on_its_hosts_only(cluster: SshdCluster, tmp_path: Path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    odd:\n      hosts:\n        host1:\n        host3:\n"
        "    even:\n      hosts:\n        host[2:4:2]:\n"
    )
    batch = write_batch(tmp_path, [f"echo job-{i}" for i in range(20)])
    done = run_anet(
        cluster, batch, "-H", f"{inventory}:odd", "--format", "msgpack", env=without_allocation()
    )
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    assert Counter(r.id for r in records) == Counter(range(20))
    assert {r.host for r in records} <= {"host1", "host3"}  # host1 alone may do them all


def test_slurm_outside_an_allocation_is_one_line(tmp_path: Path):
    batch = write_batch(tmp_path, ["echo hi"])
    argv = [sys.executable, "-m", "anet", "-H", "slurm", str(batch)]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=without_allocation(), timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 255
    line = "anet: -H slurm: not inside a Slurm allocation (SLURM_JOB_NODELIST is not set)"
    assert done.stderr.splitlines() == [line]
    assert f"    {line}\n" in GUIDE  # as the guide shows it


def test_no_hosts_inside_an_allocation_runs_here_and_says_once(tmp_path: Path):
    batch = write_batch(tmp_path, [f"echo job-{i}" for i in range(5)])
    env = without_allocation(SLURM_JOB_NODELIST="node[01-04]")
    argv = [sys.executable, "-m", "anet", "--format", "msgpack", str(batch)]
    done = subprocess.run(argv, capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert {r.host for r in decode(done.stdout)} == {"local"}
    hints = [line for line in done.stderr.decode().splitlines() if "-H slurm" in line]
    assert len(hints) == 1, done.stderr
    assert f"    {hints[0]}\n" in GUIDE  # as the guide shows it
