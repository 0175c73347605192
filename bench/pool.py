"""Scenario: a one-job batch on a warm pool (`anet up`) against the standalone command.

The resident master's promise (issue "A resident master"): start to first result of a one-job
batch on a warm pool <= 50 ms. Measured in a client process of its own, with the library
(`anet.Pool().run(["true"])`: submit, attach, the result), many times per sample; beside it the
same one job through the whole standalone `anet` command (imports, handshakes, dispatcher boot
included), through `anet BATCH` with the pool up (one command start-up), and through the pool's
commands (`anet submit` then `anet wait`: two command start-ups). 4 sshd hosts x 4 slots.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
    ratio,
    timed,
    write_batch,
)  # fmt: skip

NAME = "pool"
HOSTS, SLOTS = 4, 4
ROUNDS = 20  # one-job runs per library sample

_CLIENT = f"""
import asyncio, json, statistics, time
import anet

async def main():
    times = []
    async with anet.Pool() as pool:
        for _ in range({ROUNDS}):
            start = time.perf_counter()
            async for result in pool.run(["true"]):
                times.append(time.perf_counter() - start)
                assert result.ok
    print(json.dumps({{"first": statistics.median(times)}}))

asyncio.run(main())
"""


def run(bed: Bed) -> list[Table]:
    cluster = bed.cluster(HOSTS)
    specs = [f"{SLOTS}/{name}" for name in cluster.names]
    env = anet_env(bed.root)
    env["XDG_RUNTIME_DIR"] = str(bed.path("run"))
    bed.path("run").mkdir(mode=0o700, exist_ok=True)
    batch = write_batch(bed.path("one.txt"), ["true"])
    anet = [sys.executable, "-m", "anet"]
    hosts = [arg for spec in specs for arg in ("-S", spec)]
    up = ["up", "--ssh-config", str(cluster.ssh_config), *hosts]
    subprocess.run([*anet, *up], check=True, env=env, capture_output=True)
    try:

        def library() -> Sample:
            out = subprocess.run([sys.executable, "-c", _CLIENT], env=env, capture_output=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr.decode(errors="replace").strip()[-300:])
            first = float(json.loads(out.stdout)["first"])
            return Sample(first, extra={"first": first})

        def commands() -> Sample:
            submitted = subprocess.run([*anet, "submit", str(batch)], env=env, capture_output=True)
            run_id = submitted.stdout.decode().strip()
            return timed([*anet, "wait", run_id], env=env)  # after submit's own start-up

        contenders: dict[str, Callable[[], Sample]] = {
            "warm pool, library (submit, attach, result)": library,
            "warm pool, `anet BATCH` (the whole command)": lambda: timed(
                [*anet, str(batch)], env=env
            ),
            "warm pool, `anet wait` after `anet submit`": commands,
            "standalone `anet` command": lambda: timed(
                anet_argv(cluster.ssh_config, specs, "--no-pool", str(batch)), env=env
            ),
        }
        samples = interleave(contenders, bed.runs, what="pool")
    finally:
        subprocess.run([*anet, "down"], env=env, capture_output=True)
    table = Table(
        f"Warm pool: one `true` job, {HOSTS} hosts x {SLOTS} slots",
        f"Library: median of {ROUNDS} one-job runs per sample, start to first result.",
        ["contender", "median s", "vs standalone"],
    )
    standalone = median(samples["standalone `anet` command"])
    for name, runs in samples.items():
        wall = median(runs)
        table.rows.append([name, f"{wall:.3f}", ratio(wall, standalone)])
    first = median(samples["warm pool, library (submit, attach, result)"])
    table.targets.append(
        Target("warm pool, start to first result <= 50 ms", f"{first * 1000:.0f} ms", first <= 0.05)
    )
    return [table]
