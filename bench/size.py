"""Scenario 7: a 1,000,000-line batch on the local host: bounded memory, steady throughput.

The master reads the batch lazily, so its peak RSS must not grow with the batch (target
<= 200 MB) and its rate must stay within 10% of a 20,000-job run's. The local host (`16/:`)
runs the dispatcher as the master's child, over pipes; peak RSS is wait4's, the largest of the
master and the processes it waited for (the dispatcher, a fraction of the master's size).
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
    timed,
    write_batch,
)

NAME = "size"
SLOTS = 16


def run(bed: Bed) -> list[Table]:
    big, small = (50_000, 10_000) if bed.quick else (1_000_000, 20_000)
    batches = {
        n: write_batch(bed.path(f"echo-{n}.txt"), (f"echo {i}" for i in range(n)))
        for n in (big, small)
    }
    env = anet_env(bed.root)

    def one(n: int) -> Sample:
        return timed(anet_argv(None, [f"{SLOTS}/:"], str(batches[n])), env=env)

    runs = {f"{small:,} jobs": lambda: one(small)}
    samples = interleave(runs, bed.runs, what="size small")
    contenders: dict[str, Callable[[], Sample]] = {f"{big:,} jobs": lambda: one(big)}
    samples.update(interleave(contenders, 1, what="size big"))
    table = Table(
        f"7. Size: a {big:,}-line batch on the local host ({SLOTS} slots) vs {small:,} lines",
        f"`anet run -S {SLOTS}/:` end to end, journal on (the default), output to /dev/null. "
        f"The big batch runs once; the small one {bed.runs} time(s).",
        ["batch", "median wall s", "jobs/s", "peak RSS MB"],
    )
    rate, rss = {}, {}
    for (name, runs), n in zip(samples.items(), (small, big), strict=True):
        rate[n], rss[n] = n / median(runs), median(runs, lambda s: s.maxrss_mb)
        table.rows.append([name, f"{median(runs):.1f}", f"{rate[n]:,.0f}", f"{rss[n]:.0f}"])
    table.targets.append(
        Target(f"peak RSS <= 200 MB ({big:,} jobs)", f"{rss[big]:.0f} MB", rss[big] <= 200)
    )
    drift = rate[big] / rate[small]
    table.targets.append(
        Target(f"jobs/s within 10% of the {small:,}-job run", f"{drift:.2f}x", drift >= 0.9)
    )
    return [table]
