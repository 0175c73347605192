"""Scenario 8: one job writing a lot to stdout: MB/s through anet vs a bare `ssh host cmd`.

The same command (`head -c N /dev/zero`) on the same loopback sshd host: through anet (the
output crosses the dispatcher, the msgpack frames and asyncssh; past 1 MiB the master spools
it to disk as it arrives and has the kernel copy it out from there, sendfile) and through the
OpenSSH client straight to /dev/null, the pipe's limit. anet runs with --no-journal, and with
a journal (which keeps the spool's file as its copy of the output: a hard link, nothing
copied): the peak RSS column is the master's memory bound, whatever the job prints. The bare
asyncssh session (sshfloor.py) is the floor under anet's master: what asyncssh alone costs for
those bytes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from .harness import Bed, Sample, Table, anet_argv, anet_env, interleave, rate_table, timed

NAME = "bigout"


def run(bed: Bed) -> list[Table]:
    size = (256 if bed.quick else 1000) * 1_000_000
    cluster = bed.cluster(4)
    host = cluster.names[0]
    command = f"head -c {size} /dev/zero"
    batch = bed.path("bigout.txt")
    batch.write_text(command + "\n")
    journal = bed.path("bigout.sqlite")
    contenders: dict[str, Callable[[], Sample]] = {
        "ssh host cmd > /dev/null": lambda: timed(cluster.ssh_argv(host, command)),
        "asyncssh session alone": lambda: timed(
            [sys.executable, "-m", "bench.sshfloor", str(cluster.ssh_config), host, command],
            env=anet_env(bed.root),
            stdout=subprocess.DEVNULL,
        ),
        "anet (ssh host)": lambda: timed(
            anet_argv(cluster.ssh_config, [f"1/{host}"], "--no-journal", str(batch)),
            env=anet_env(bed.root),
            stdout=subprocess.DEVNULL,
        ),
        "anet (ssh host), journal": lambda: timed(
            anet_argv(cluster.ssh_config, [f"1/{host}"], "--journal", str(journal), str(batch)),
            env=anet_env(bed.root),
            stdout=subprocess.DEVNULL,
        ),
    }
    samples = interleave(contenders, bed.runs, what="bigout")
    table = rate_table(
        f"8. Big output: one job writing {size / 1e6:,.0f} MB to stdout, one loopback sshd host",
        "Wall time from process start to exit; MB = 10^6 bytes.",
        samples, size, "ssh host cmd > /dev/null",
    )  # fmt: skip
    return [table]
