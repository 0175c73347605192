"""Scenario: start-up and connection, whole commands as a user types them (issue 15's rows).

- `anet --version`, and one `true` job on the local machine (`-S :`), beside `python3 -c pass`
  (the interpreter's own start, the floor for any Python command);
- one `true` job on 4 hosts, beside one plain `ssh host true` (one handshake and login, the
  floor for a command that reaches a host);
- 32 hosts x 1 slot, 32 one-line jobs, beside 32 plain `ssh host true` in parallel;
- 64 hosts x 1 slot: from process start until every host is ready for its first job (the
  probe's `connect`: every dispatcher said Hello; the first Run goes out in the same loop turn),
  beside 64 plain `ssh host true` in parallel.

Every anet command runs as a user runs it: journal on (under the bench's temp dir), output to
/dev/null. `python3 -m bench.versus BASE --startup` runs the same contenders in
two trees side by side.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .harness import (
    Bed,
    Sample,
    Table,
    Target,
    anet_env,
    interleave,
    median,
    probe,
    timed,
    use_source,
    write_batch,
)

NAME = "startup"
MANY, ALL = 32, 64


def contenders(bed: Bed, trees: dict[str, Path] | None = None) -> dict[str, Callable[[], Sample]]:
    """Each row's anet command (per tree, when `trees` names several) and its plain floor."""
    four, many, every = bed.cluster(4), bed.cluster(MANY), bed.cluster(ALL)
    one = write_batch(bed.path("one-true.txt"), ["true"])
    lines = write_batch(bed.path(f"lines-{MANY}.txt"), (f"echo {i}" for i in range(MANY)))
    trues = write_batch(bed.path(f"true-{ALL}.txt"), ["true"] * ALL)
    python = [sys.executable]

    def anet(*args: str | Path) -> list[str]:
        return [*python, "-m", "anet", *map(str, args)]

    def hosts(cluster: object, slots: str = "") -> list[str]:
        names = cluster.names  # type: ignore[attr-defined]
        config = ["--ssh-config", str(cluster.ssh_config)]  # type: ignore[attr-defined]
        return config + [a for n in names for a in ("-S", f"{slots}{n}")]

    runs = {
        "anet --version": anet("--version"),
        "1 x true, local": anet("run", "-S", ":", one),
        "1 x true, 4 hosts": anet("run", *hosts(four), one),
        f"{MANY} lines, {MANY} hosts x 1": anet("run", *hosts(many, "1/"), lines),
    }
    found: dict[str, Callable[[], Sample]] = {}
    for side, tree in (trees or {"": Path()}).items():
        suffix = f", {side}" if side else ""

        def cli(argv: list[str], tree: Path = tree) -> Sample:
            if trees:
                use_source(tree)
            return timed(argv, env=anet_env(bed.root))

        def ready(tree: Path = tree) -> Sample:
            if trees:
                use_source(tree)
            return probe([*hosts(every, "1/"), "--batch", str(trues)], env=anet_env(bed.root))

        for name, argv in runs.items():
            found[f"{name}{suffix}"] = lambda argv=argv, cli=cli: cli(argv)
        found[f"{ALL} hosts x 1: every host ready{suffix}"] = ready
    ssh = ["ssh", "-F", str(four.ssh_config), "-o", "BatchMode=yes"]
    found["python3 -c pass"] = lambda: timed([*python, "-c", "pass"])
    found["plain ssh host1 true"] = lambda: timed([*ssh, four.names[0], "true"])
    for cluster in (many, every):
        found[f"{len(cluster.names)} x plain ssh true, parallel"] = _fan_out(cluster)
    return found


def _fan_out(cluster: object) -> Callable[[], Sample]:
    """`ssh host true` to every host at once: the floor for reaching them all (OpenSSH's
    handshakes and logins, the box starting that many sshd sessions)."""
    config = shlex.quote(str(cluster.ssh_config))  # type: ignore[attr-defined]
    names = cluster.names  # type: ignore[attr-defined]
    line = " & ".join(f"ssh -F {config} -o BatchMode=yes {n} true" for n in names) + "; wait"
    return lambda: timed(["sh", "-c", line])


def run(bed: Bed) -> list[Table]:
    samples = interleave(contenders(bed), bed.runs, what="startup")
    bed.close_cluster(ALL)
    return [table(samples, bed.runs)]


def table(samples: dict[str, list[Sample]], runs: int, side: str = "") -> Table:
    """The rows of one tree (`side`: its suffix in `samples`, as `contenders` named them)."""
    suffix = f", {side}" if side else ""

    def wall(name: str) -> float:
        return median(samples[name])

    def cpu(name: str) -> float:
        return median(samples[name], lambda s: s.cpu)

    out = Table(
        f"Start-up: whole commands{f' ({side})' if side else ''}",
        f"Wall time from process start to exit, medians of {runs}; CPU of the process tree. "
        f"`every host ready` is bench.probe's `connect` (imports, handshakes, boots).",
        ["command", "median wall s", "CPU s", "floor", "floor s", "vs floor"],
    )
    floors = {
        "anet --version": "python3 -c pass",
        "1 x true, local": "python3 -c pass",
        "1 x true, 4 hosts": "plain ssh host1 true",
        f"{MANY} lines, {MANY} hosts x 1": f"{MANY} x plain ssh true, parallel",
    }
    for name, floor in floors.items():
        mine, base = wall(f"{name}{suffix}"), wall(floor)
        out.rows.append(
            [name, f"{mine:.2f}", f"{cpu(name + suffix):.2f}", floor, f"{base:.2f}",
             f"{mine / base:.2f}x"]
        )  # fmt: skip
    every = f"{ALL} hosts x 1: every host ready{suffix}"
    ready = median(samples[every], lambda s: s.extra["connect"])
    fan_all = wall(f"{ALL} x plain ssh true, parallel")
    out.rows.append(
        [every.removesuffix(suffix), f"{ready:.2f}", "-", f"{ALL} x plain ssh true, parallel",
         f"{fan_all:.2f}", f"{ready / fan_all:.2f}x"]
    )  # fmt: skip
    version, local = wall(f"anet --version{suffix}"), wall(f"1 x true, local{suffix}")
    four, ssh = wall(f"1 x true, 4 hosts{suffix}"), wall("plain ssh host1 true")
    many = wall(f"{MANY} lines, {MANY} hosts x 1{suffix}")
    fan = wall(f"{MANY} x plain ssh true, parallel")
    out.targets += [
        Target("`anet --version` <= 0.15 s", f"{version:.2f} s", version <= 0.15),
        Target("one local `true` job <= 0.3 s", f"{local:.2f} s", local <= 0.3),
        Target("one job on 4 hosts <= 0.5 s", f"{four:.2f} s", four <= 0.5),
        Target("one job on 4 hosts <= 1.5x one plain ssh", f"{four / ssh:.2f}x", four <= 1.5 * ssh),
        Target(f"{MANY} hosts, {MANY} jobs <= 2x {MANY} parallel ssh", f"{many / fan:.2f}x",
               many <= 2 * fan),
        Target(f"{ALL} hosts: every host ready for its first job <= 3 s", f"{ready:.2f} s",
               ready <= 3.0),
    ]  # fmt: skip
    return out
