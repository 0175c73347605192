"""Scenario 5: 8 hosts x 1 slot, one 10x slower; 100 equal jobs; speculation on vs off.

The slow machine is played by host8: its jobs sleep 10x longer (the job tests `$ANET_HOST`,
which the dispatcher sets). The optimal schedule is the best split of the jobs over the hosts'
speeds, with nothing for start-up, so the target (<= 1.07x optimal) is judged on the run
phase (every host ready to the last result); the end-to-end time is given beside it.
"""

from __future__ import annotations

from collections.abc import Callable

from .harness import Bed, Sample, Table, Target, interleave, median, probe, ratio, write_batch

NAME = "heterogeneous"
HOSTS, JOBS, SLOWDOWN = 8, 100, 10


def optimal(jobs: int, hosts: int, seconds: float) -> float:
    """Smallest makespan: the slow host takes k jobs only if it ends no later than the others."""
    best = float("inf")
    for slow_jobs in range(jobs + 1):
        fast = -(-(jobs - slow_jobs) // (hosts - 1)) * seconds
        best = min(best, max(fast, slow_jobs * seconds * SLOWDOWN))
    return best


def run(bed: Bed) -> list[Table]:
    seconds = 0.2 if bed.quick else 0.5
    cluster = bed.cluster(HOSTS)
    slow = cluster.names[-1]
    batch = write_batch(
        bed.path(f"hetero-{seconds}.txt"),
        (
            f'if [ "$ANET_HOST" = {slow} ]; then sleep {seconds * SLOWDOWN}; '
            f"else sleep {seconds}; fi; echo {i}"
            for i in range(JOBS)
        ),
    )
    args = ["--ssh-config", str(cluster.ssh_config), "--batch", str(batch)]
    args += [arg for name in cluster.names for arg in ("-S", f"1/{name}")]
    contenders: dict[str, Callable[[], Sample]] = {
        "speculation on": lambda: probe(args),
        "speculation off": lambda: probe([*args, "--no-speculate"]),
    }
    samples = interleave(contenders, bed.runs, what="heterogeneous")
    best = optimal(JOBS, HOSTS, seconds)
    table = Table(
        f"5. Heterogeneous hosts: {JOBS} x {seconds} s jobs, {HOSTS} hosts x 1 slot, "
        f"{slow} {SLOWDOWN}x slower",
        f"Optimal schedule {best:.2f} s (nothing on the slow host).",
        ["anet", "run phase s", "vs optimal", "end to end s", "vs optimal"],
    )
    for name, runs in samples.items():
        run_s, total = median(runs, lambda s: s.extra["run"]), median(runs)
        table.rows.append([name, f"{run_s:.2f}", ratio(run_s, best), f"{total:.2f}",
                           ratio(total, best)])  # fmt: skip
        if any(s.extra["jobs"] != JOBS or s.extra["failed"] for s in runs):
            table.notes.append(f"{name}: a run lost or failed jobs!")
    on = median(samples["speculation on"], lambda s: s.extra["run"])
    table.targets.append(
        Target("<= 1.07x optimal (speculation on, run phase)", ratio(on, best), on <= 1.07 * best)
    )
    return [table]
