"""Scenario 9: data through the jobs' stdin: MB/s of `--pipe` vs GNU parallel's, and ssh's.

The same input (100-byte lines, 256 MB quick, 1,000 MB full) from a file on stdin, cut into
10 MiB blocks, each counted by `wc -l` on 2 loopback sshd hosts x 2 slots: through
`anet --pipe`, through `anet --pipe-part -a FILE` (no reader on the master: each job's sender
reads its part), and through `parallel --pipe` (one ssh per block; with a ControlMaster, so
its logins cost little). `ssh host wc -l < FILE` is the ceiling: one stream, no cutting.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from .harness import Bed, Sample, Table, anet_argv, anet_env, have, interleave, rate_table, timed

NAME = "pipe"
HOSTS, SLOTS = 2, 2
BLOCK = "10M"


def run(bed: Bed) -> list[Table]:
    size = (256 if bed.quick else 1000) * 1_000_000
    cluster = bed.cluster(4)
    names = cluster.names[:HOSTS]
    data = bed.path("pipe-input.txt")
    with data.open("wb") as out:
        chunk = (b"x" * 99 + b"\n") * 10_000  # 1 MB
        for _ in range(size // len(chunk)):
            out.write(chunk)
    specs = [f"{SLOTS}/{name}" for name in names]
    anet = anet_argv(cluster.ssh_config, specs, "-q", "--no-journal", "--format", "jsonl")
    contenders: dict[str, Callable[[], Sample]] = {
        "ssh host wc -l < FILE": lambda: timed(cluster.ssh_argv(names[0], "wc -l"), stdin=data),
        "anet --pipe": lambda: timed(
            [*anet, "--pipe", "--block", BLOCK, "wc -l"], stdin=data, env=anet_env(bed.root)
        ),
        "anet --pipe-part -a FILE": lambda: timed(
            [*anet, "--pipe-part", "-a", str(data), "--block", BLOCK, "wc -l"],
            env=anet_env(bed.root),
        ),
    }
    with bed.control_master(cluster) as cm_config:
        if have("parallel"):
            logins = bed.path("pipe-logins")
            logins.write_text("".join(f"{SLOTS}/{name}\n" for name in names))
            contenders["parallel --pipe + ControlMaster"] = lambda: timed(
                ["parallel", "--will-cite", "--pipe", "--block", BLOCK,
                 "--ssh", f"ssh -F {cm_config}", "--sshloginfile", str(logins), "wc -l"],
                stdin=data, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        samples = interleave(contenders, bed.runs, what="pipe")
    table = rate_table(
        f"9. --pipe: {size / 1e6:,.0f} MB in {BLOCK} blocks, `wc -l` on {HOSTS} hosts x {SLOTS}"
        " slots",
        "Wall time from process start to exit; MB = 10^6 bytes; peak RSS of the process tree"
        " that wait4 reports (the master, for anet).",
        samples, size, "ssh host wc -l < FILE",
    )  # fmt: skip
    return [table]
