"""Scenario 6: 64 sshd hosts: time until every one is ready, and throughput 64 vs 4 hosts.

Both runs have 64 slots (64 x 1 and 4 x 16), so the difference is the cost of hosts, not of
slots. Target: all 64 ready within 3 s of starting the master (issue 15; it was 5 s).
"""

from __future__ import annotations

from collections.abc import Callable

from .harness import Bed, Sample, Table, Target, interleave, median, probe, write_batch

NAME = "scale"
BIG, SMALL, SLOTS = 64, 4, 64


def run(bed: Bed) -> list[Table]:
    size = 2_000 if bed.quick else 10_000
    batch = write_batch(bed.path(f"echo-{size}.txt"), (f"echo {i}" for i in range(size)))
    big, small = bed.cluster(BIG), bed.cluster(SMALL)

    def args(cluster: object, slots: int) -> list[str]:
        out = ["--ssh-config", str(cluster.ssh_config), "--batch", str(batch)]  # type: ignore[attr-defined]
        return out + [a for n in cluster.names for a in ("-S", f"{slots}/{n}")]  # type: ignore[attr-defined]

    contenders: dict[str, Callable[[], Sample]] = {
        f"{BIG} hosts x {SLOTS // BIG}": lambda: probe(args(big, SLOTS // BIG)),
        f"{SMALL} hosts x {SLOTS // SMALL}": lambda: probe(args(small, SLOTS // SMALL)),
    }
    try:
        samples = interleave(contenders, bed.runs, what="scale")
    finally:
        bed.close_cluster(BIG)
    table = Table(
        f"6. Scale: {BIG} sshd hosts vs {SMALL}, {SLOTS} slots either way, {size:,} x `echo ID`",
        "`ready` = from process start until every host's dispatcher said Hello; jobs/s over "
        "the run phase.",
        ["hosts", "ready s", "run s", "jobs/s", "master CPU us/job"],
    )
    rates = {}
    for name, runs in samples.items():
        ready, run_s = (
            median(runs, lambda s: s.extra["connect"]),
            median(runs, lambda s: s.extra["run"]),
        )
        rates[name] = size / run_s
        cpu = median(runs, lambda s: s.cpu) / size * 1e6
        table.rows.append(
            [name, f"{ready:.2f}", f"{run_s:.2f}", f"{rates[name]:,.0f}", f"{cpu:.0f}"]
        )
    ready = median(samples[f"{BIG} hosts x {SLOTS // BIG}"], lambda s: s.extra["connect"])
    table.targets.append(Target(f"{BIG} hosts ready <= 3 s", f"{ready:.2f} s", ready <= 3.0))
    big_rate, small_rate = (
        rates[f"{BIG} hosts x {SLOTS // BIG}"],
        rates[f"{SMALL} hosts x {SLOTS // SMALL}"],
    )
    table.notes.append(f"Throughput {BIG} vs {SMALL} hosts: {big_rate / small_rate:.2f}x.")
    return [table]
