"""Deps sync: a 10,000-file, 200 MB tree to 4 hosts, anet vs `rsync -a --delete` over ssh.

Three phases, each contender against its own copy on the hosts (anet's store, rsync's folder):
the first copy (one run each: it can only happen once), a no-op re-sync, and a re-sync after
one file changed (the file is rewritten before every run, so each run has exactly that to do).
rsync goes to the 4 hosts in parallel, one `rsync` process per host, as a user would script it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .harness import Bed, Sample, Table, anet_env, have, interleave, median, ratio, timed

NAME = "deps"
HOSTS = 4


def make_tree(root: Path, files: int, total: int) -> Path:
    """`files` files in 100 folders, `total` bytes in all, incompressible (random)."""
    rng = random.Random(7)
    each = total // files
    block = os.urandom(1 << 20)
    for i in range(files):
        folder = root / f"d{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(len(block) - each) if each < len(block) else 0
        (folder / f"f{i:05d}.bin").write_bytes(block[start : start + each])
    return root


def synced_first(run_one: Callable[[], Sample]) -> Callable[[], Sample]:
    """A first copy, once the disk has written what came before (the 200 MB tree just made,
    the other contender's 800 MB): without that, whoever copies first also pays the kernel's
    writeback of the setup, and the one-shot comparison measures the order."""

    def go() -> Sample:
        os.sync()
        return run_one()

    return go


def run(bed: Bed) -> list[Table]:
    files, total = (1000, 20 << 20) if bed.quick else (10_000, 200 << 20)
    cluster = bed.cluster(HOSTS)
    tree = make_tree(bed.path("deps-tree"), files, total)
    env = dict(anet_env(bed.root), XDG_CACHE_HOME=str(bed.path("cache")))
    anet = [
        sys.executable, "-m", "anet", "sync", "--ssh-config", str(cluster.ssh_config),
        *(arg for name in cluster.names for arg in ("-S", name)), f"{tree}/",
    ]  # fmt: skip
    ssh = f"ssh -F {cluster.ssh_config}"

    def rsync() -> Sample:
        # Each host's own folder: a relative path would be the login user's home, one
        # folder that the 4 rsyncs would share (and race in) on these loopback hosts.
        argv = ["sh", "-c", " & ".join(
            f"rsync -a --delete -e '{ssh}' {tree}/ {name}:{cluster[name].home}/rsync-deps/"
            for name in cluster.names
        ) + " & wait"]  # fmt: skip
        return timed(argv)

    contenders: dict[str, Callable[[], Sample]] = {"anet sync": lambda: timed(anet, env=env)}
    if have("rsync"):
        contenders["rsync -a --delete (4 in parallel)"] = rsync
    table = Table(
        f"Deps sync: {files:,} files, {total >> 20} MB, to {HOSTS} hosts",
        "Each contender keeps its own copy on the hosts; medians of the re-sync phases.",
        ["phase", *contenders, "rsync time / anet time"],
    )
    first = {name: synced_first(run_one)() for name, run_one in contenders.items()}  # once
    noop = interleave(contenders, bed.runs, what="deps no-op")
    victim = tree / "d42" / "f00042.bin"

    def changed(run_one: Callable[[], Sample]) -> Callable[[], Sample]:
        def go() -> Sample:
            victim.write_bytes(os.urandom(20_000))
            return run_one()

        return go

    one = interleave({k: changed(v) for k, v in contenders.items()}, bed.runs, what="deps one")
    for phase, samples in (
        ("first copy", {k: [v] for k, v in first.items()}),
        ("no-op re-sync", noop),
        ("one file changed", one),
    ):
        times = {name: median(s) for name, s in samples.items()}
        anet_t = times["anet sync"]
        others = [t for name, t in times.items() if name != "anet sync"]
        vs = ratio(others[0], anet_t) if others else "n/a"
        table.rows.append([phase, *(f"{t:.2f} s" for t in times.values()), vs])
    if not have("rsync"):
        table.notes.append("rsync is not installed: `apt-get install rsync` (bench/setup does).")
    subprocess.run(["rm", "-rf", str(tree)], check=False)
    return [table]
