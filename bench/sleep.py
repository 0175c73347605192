"""Scenario 3: 200 x `sleep 0.2` over 4 hosts x 4 slots; the ideal makespan is 2.5 s.

Scheduling overhead shows here as gaps between a job's end and the next one's start. The target
(<= 1.05x ideal) is judged on the run phase (every host ready to the last result); the CLI's
end-to-end time, start-up included, is given beside it, and local `xargs -P 16` as a yardstick.
"""

from __future__ import annotations

from collections.abc import Callable

from .harness import (
    Bed,
    Sample,
    Table,
    Target,
    anet_argv,
    anet_env,
    interleave,
    median,
    probe,
    ratio,
    timed,
    write_batch,
)  # fmt: skip

NAME = "sleep"
HOSTS, SLOTS = 4, 4
JOBS, SECONDS = 200, 0.2


def run(bed: Bed) -> list[Table]:
    cluster = bed.cluster(HOSTS)
    specs = [f"{SLOTS}/{name}" for name in cluster.names]
    slots = HOSTS * SLOTS
    ideal = -(-JOBS // slots) * SECONDS
    batch = write_batch(bed.path("sleep.txt"), (f"sleep {SECONDS}; echo {i}" for i in range(JOBS)))
    probe_args = ["--ssh-config", str(cluster.ssh_config), "--batch", str(batch)]
    probe_args += [arg for spec in specs for arg in ("-S", spec)]
    xargs = ["xargs", "-P", str(slots), "-I{}", "sh", "-c", "{}"]
    contenders: dict[str, Callable[[], Sample]] = {
        f"xargs -P {slots} (local)": lambda: timed(xargs, stdin=batch),
        "anet CLI (end to end)": lambda: timed(
            anet_argv(cluster.ssh_config, specs, str(batch)), env=anet_env(bed.root)
        ),
        "anet run phase": lambda: probe(probe_args, env=anet_env(bed.root)),
    }
    samples = interleave(contenders, bed.runs, what="sleep")
    table = Table(
        f"3. Sleep batch: {JOBS} x `sleep {SECONDS}` over {HOSTS} hosts x {SLOTS} slots",
        f"Ideal makespan {ideal:.2f} s ({JOBS} / {slots} slots x {SECONDS} s).",
        ["contender", "median makespan s", "vs ideal"],
    )
    for name, runs in samples.items():
        wall = median(runs, lambda s: s.extra.get("run", s.wall))
        table.rows.append([name, f"{wall:.2f}", ratio(wall, ideal)])
    run_phase = median(samples["anet run phase"], lambda s: s.extra["run"])
    whole = median(samples["anet CLI (end to end)"], lambda s: s.wall)
    table.targets += [
        Target("<= 1.05x ideal (run phase)", ratio(run_phase, ideal), run_phase <= 1.05 * ideal),
        Target("<= 1.10x ideal (whole command)", ratio(whole, ideal), whole <= 1.10 * ideal),
    ]
    return [table]
