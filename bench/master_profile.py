"""Where the master's time goes at saturation: py-spy samples of `anet run`, summarised.

Not a comparison, so `python3 -m bench` runs it only when asked (`--only profile`). It runs
the throughput batch under `py-spy record --format raw` (sampling, so the master runs at full
speed) and reduces the stacks to the functions with the most samples of their own (self) and
the share of samples each file's code accounts for.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from .harness import Bed, Table, anet_argv, anet_env, have, log, timed, write_batch

NAME = "profile"
HOSTS, SLOTS, TOP = 4, 4, 15
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _where(file: str) -> str:
    """A short owner for a source file: the package (asyncssh, anet/api.py, asyncio...)."""
    for marker in ("site-packages/", "lib/python3.11/", "/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    parts = file.split("/")
    if parts[0] in ("anet", "dispatcher"):
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarise(raw: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Samples in all; self samples per function; inclusive per function; self per owner."""
    total, own, inclusive, owners = 0, Counter[str](), Counter[str](), Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")
                  and not f.startswith("thread ")]  # fmt: skip
        if not frames:
            continue
        total += count
        names = []
        for frame in frames:
            match = _FRAME.match(frame)
            func, file = (match["func"], match["file"]) if match else (frame, "?")
            names.append((f"{func} ({_where(file)})", _where(file)))
        own[names[-1][0]] += count
        owners[names[-1][1]] += count
        for name in {n for n, _ in names}:
            inclusive[name] += count
    return total, own, inclusive, owners


def run(bed: Bed) -> list[Table]:
    table = Table(
        "Profile of the master at saturation (py-spy)",
        "",
        ["function (owner)", "self %", "inclusive %"],
    )
    if not have("py-spy"):
        log("py-spy not installed (pip install py-spy): profile skipped")
        table.notes.append("Skipped: py-spy not installed.")
        return [table]
    size = 5_000 if bed.quick else 20_000
    cluster = bed.cluster(HOSTS)
    batch = write_batch(bed.path(f"echo-{size}.txt"), (f"echo {i}" for i in range(size)))
    raw = bed.path("profile.txt")
    anet = anet_argv(cluster.ssh_config, [f"{SLOTS}/{n}" for n in cluster.names], str(batch))
    argv = ["py-spy", "record", "--format", "raw", "--nonblocking", "--rate", "250",
            "-o", str(raw), "--", *anet]  # fmt: skip
    sample = timed(argv, env=anet_env(bed.root))
    total, own, inclusive, owners = summarise(raw)
    table.setup = (
        f"`anet run` of {size:,} x `echo ID` on {HOSTS} hosts x {SLOTS} slots under "
        f"`py-spy record --nonblocking --rate 250` ({sample.wall:.1f} s, {total} samples; "
        "start-up included, idle waits excluded)."
    )
    for name, count in own.most_common(TOP):
        table.rows.append(
            [name, f"{100 * count / total:.1f}", f"{100 * inclusive[name] / total:.1f}"]
        )
    table.notes.append(
        "Self time by owner: "
        + ", ".join(f"{o} {100 * c / total:.0f}%" for o, c in owners.most_common(12))
        + "."
    )
    heavy = [n for n, c in inclusive.most_common(40) if c / total > 0.05 and n not in own]
    table.notes.append(
        "Largest inclusive shares: "
        + ", ".join(f"{n} {100 * inclusive[n] / total:.0f}%" for n in heavy[:12])
        + "."
    )
    kept = Path("/tmp/anet-bench-profile.txt")
    shutil.copyfile(raw, kept)  # the bench's temp dir goes at exit
    log(f"raw py-spy stacks kept in {kept}")
    return [table]
