"""Scenario 1: throughput of trivial jobs (`echo ID`) over 4 hosts x 4 slots.

Contenders: anet; local `xargs -P 16` (the physical limit: no network, no Python); GNU parallel
`--sshloginfile`, plain (one ssh login per job) and through OpenSSH ControlMaster; the
parallel-ssh library (one libssh2 channel per job over kept connections, in waves). Targets:
anet >= 0.8x xargs's jobs/s and > 20x plain GNU parallel's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import (
    Bed,
    Sample,
    SshdCluster,
    Table,
    Target,
    anet_argv,
    anet_env,
    gnu_parallel_argv,
    have,
    helper,
    interleave,
    log,
    median,
    timed,
    write_batch,
)  # fmt: skip

NAME = "throughput"
HOSTS, SLOTS = 4, 4


def sizes(bed: Bed) -> list[int]:
    return [2_000, 5_000] if bed.quick else [2_000, 20_000]


def caps(bed: Bed) -> dict[str, int]:
    """Jobs per run for the slow contenders: their rate is flat, so fewer jobs measure it."""
    if bed.quick:
        return {"GNU parallel": 100, "GNU parallel + ControlMaster": 300, "parallel-ssh": 1_000}
    return {"GNU parallel": 1_000, "GNU parallel + ControlMaster": 3_000, "parallel-ssh": 5_000}


def pssh_available() -> bool:
    try:
        import pssh  # noqa: F401
    except ImportError:
        return False
    return True


def run(bed: Bed) -> list[Table]:
    cluster = bed.cluster(HOSTS)
    with bed.control_master(cluster) as cm_config:
        return [_one_size(bed, cluster, cm_config, size) for size in sizes(bed)]


def _one_size(bed: Bed, cluster: SshdCluster, cm_config: Path, size: int) -> Table:
    """Every contender on `size` jobs (or its cap), interleaved."""
    specs = [f"{SLOTS}/{name}" for name in cluster.names]
    slots = HOSTS * SLOTS
    logins = bed.sshlogins(cluster, SLOTS)
    batches: dict[int, str] = {}

    def batch(n: int) -> str:
        if n not in batches:
            path = bed.path(f"echo-{n}.txt")
            batches[n] = str(write_batch(path, (f"echo {i}" for i in range(n))))
        return batches[n]

    cap = {name: min(size, limit) for name, limit in caps(bed).items()}
    xargs = ["xargs", "-P", str(slots), "-I{}", "sh", "-c", "{}"]
    contenders: dict[str, Callable[[], Sample]] = {
        f"xargs -P {slots} (local)": lambda: timed(xargs, stdin=Path(batch(size))),
        "anet": lambda: timed(
            anet_argv(cluster.ssh_config, specs, batch(size)), env=anet_env(bed.root)
        ),
    }
    if have("parallel"):
        contenders["GNU parallel"] = lambda: timed(
            gnu_parallel_argv(cluster.ssh_config, logins, batch(cap["GNU parallel"]))
        )
        contenders["GNU parallel + ControlMaster"] = lambda: timed(
            gnu_parallel_argv(cm_config, logins, batch(cap["GNU parallel + ControlMaster"]))
        )
    else:
        log("GNU parallel not installed (bench/setup installs it): skipped")
    if pssh_available():
        hosts = [host.spec for host in cluster.hosts]
        contenders["parallel-ssh"] = lambda: timed(
            [*helper("pssh_runner"), "--key", str(cluster.client_key),
             "--slots", str(SLOTS), "--batch", batch(cap["parallel-ssh"]), *hosts],
            env=anet_env(bed.root),
        )  # fmt: skip
    else:
        log("parallel-ssh not installed (pip install parallel-ssh): skipped")
    jobs = {name: cap.get(name, size) for name in contenders}
    samples = interleave(contenders, bed.runs, what=f"throughput {size}")
    return _table(size, slots, samples, jobs)


def _table(size: int, slots: int, samples: dict[str, list[Sample]], jobs: dict[str, int]) -> Table:
    rate = {name: jobs[name] / median(runs) for name, runs in samples.items()}
    base = rate[f"xargs -P {slots} (local)"]
    table = Table(
        f"1. Throughput: {size:,} x `echo ID`, {HOSTS} hosts x {SLOTS} slots",
        "Wall time from process start to exit (start-up included). CPU is the contender's own "
        "process tree; for anet that is the master alone (asyncssh is in-process; dispatchers "
        "and jobs run under the sshd listeners). Slow contenders run fewer jobs (`jobs` column): "
        "their per-job cost is flat, so jobs/s compares.",
        ["contender", "jobs", "median wall s", "jobs/s", "vs xargs", "CPU us/job"],
    )
    for name, runs in samples.items():
        cpu_us = median(runs, lambda s: s.cpu) / jobs[name] * 1e6
        table.rows.append(
            [name, f"{jobs[name]:,}", f"{median(runs):.2f}", f"{rate[name]:,.0f}",
             f"{rate[name] / base:.2f}x", f"{cpu_us:,.0f}"]
        )  # fmt: skip
    anet, least = rate["anet"], 0.9 if size >= 20_000 else 0.8  # start-up weighs less there
    table.targets.append(
        Target(f"anet >= {least}x xargs jobs/s ({size:,})", f"{anet / base:.2f}x",
               anet >= least * base)
    )  # fmt: skip
    if "GNU parallel" in rate:
        vs = anet / rate["GNU parallel"]
        table.targets.append(
            Target(f"anet > 20x GNU parallel jobs/s ({size:,})", f"{vs:.1f}x", vs > 20)
        )
        cm = anet / rate["GNU parallel + ControlMaster"]
        table.notes.append(f"anet vs GNU parallel with ControlMaster: {cm:.1f}x.")
    return table
