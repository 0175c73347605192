"""The master's CPU per job in two trees, measured side by side: did a change make it worse?

    python3 -m bench.versus BASE_TREE [--runs 5] [--jobs 20000]
    python3 -m bench.versus BASE_TREE --startup [--runs 5]

BASE_TREE is another checkout (e.g. `git worktree add /tmp/base <commit>`); this checkout is
the other side. The `cpu` scenario's batch (`echo ID`, 4 sshd hosts x 4 slots) runs through
bench.probe's run phase and through the CLI, with uvloop and with asyncio, every contender once
per round in a rotated order on the same hosts, so the machine's noise falls on both sides
alike. Prints a markdown table of medians (CPU us per job) and every run's figure.
With `--startup`, the start-up scenario's commands instead (bench/startup.py), both trees and
the plain floors interleaved: a table per tree.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import startup
from .harness import (
    REPO,
    Bed,
    Sample,
    anet_argv,
    anet_env,
    interleave,
    probe,
    timed,
    use_source,
    write_batch,
)  # fmt: skip

HOSTS, SLOTS = 4, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the tree to compare this checkout with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--startup", action="store_true", help="start-up commands instead")
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "this": REPO}
    if args.startup:
        compare_startup(trees, args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp, Bed(Path(tmp), quick=False, runs=args.runs) as bed:
        cluster = bed.cluster(HOSTS)
        specs = [f"{SLOTS}/{name}" for name in cluster.names]
        batch = write_batch(bed.path("echo.txt"), (f"echo {i}" for i in range(args.jobs)))
        probe_args = ["--ssh-config", str(cluster.ssh_config), "--batch", str(batch)]
        probe_args += [arg for spec in specs for arg in ("-S", spec)]
        cli_args = anet_argv(cluster.ssh_config, specs, str(batch))
        contenders: dict[str, Callable[[], Sample]] = {}
        for loop in ("uvloop", "asyncio"):
            for side, tree in trees.items():

                def phase(tree: Path = tree, uv: bool = loop == "uvloop") -> Sample:
                    use_source(tree)
                    return probe(probe_args, env=anet_env(bed.root, uvloop=uv))

                def cli(tree: Path = tree, uv: bool = loop == "uvloop") -> Sample:
                    use_source(tree)
                    return timed(cli_args, env=anet_env(bed.root, uvloop=uv))

                contenders[f"run phase, {loop}, {side}"] = phase
                contenders[f"CLI, {loop}, {side}"] = cli
        samples = interleave(contenders, args.runs, what="versus")
    print(f"Master CPU us/job, {args.jobs:,} x `echo ID`, {HOSTS} hosts x {SLOTS} slots, "
          f"medians of {args.runs}; base = {trees['base']}, this = {trees['this']}\n")  # fmt: skip
    print("| contender | median us/job | runs |\n|---|---:|---|")
    for name, runs in samples.items():
        per_job = [s.cpu / args.jobs * 1e6 for s in runs]
        print(f"| {name} | {statistics.median(per_job):.0f} | {[round(u) for u in per_job]} |")


def compare_startup(trees: dict[str, Path], runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Bed(Path(tmp), quick=False, runs=runs) as bed:
        samples = interleave(startup.contenders(bed, trees), runs, what="versus startup")
    for side, tree in trees.items():
        print(f"{side} = {tree}\n")
        print(startup.table(samples, runs, side).markdown())


if __name__ == "__main__":
    main()
