"""Run the benchmark scenarios and print one markdown report (stdout, and --markdown FILE).

    python3 -m bench [--quick] [--only SCENARIO ...] [--runs N] [--markdown FILE]

Each scenario brings up its loopback sshd hosts (the test fixture), runs its contenders
interleaved, and returns tables; a scenario that breaks is reported and the others still run,
and the exit status is then 1. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from . import (
    bigout,
    cpu,
    deps,
    heterogeneous,
    latency,
    master_profile,
    pipe,
    pool,
    scale,
    size,
    sleep,
    startup,
    throughput,
)
from .harness import Bed, Table, Target, header, log, use_source

ORDER = (
    startup, throughput, cpu, sleep, latency, heterogeneous, scale, size, bigout, pipe, deps, pool,
)  # fmt: skip
SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in (*ORDER, master_profile)}
DEFAULT = [name for name in SCENARIOS if name != "profile"]
"""The profile is a tool, not a comparison: it runs only when asked for with --only."""


def report(head: str, tables: list[Table], elapsed: float) -> str:
    targets: list[Target] = [t for table in tables for t in table.targets]
    lines = [head, "", *(table.markdown() for table in tables), "### Targets", ""]
    for t in targets:
        verdict = {True: "met", False: "**not met**", None: "not measured"}[t.met]
        lines.append(f"- {t.what}: {t.measured}, {verdict}")
    lines += ["", f"(Suite time: {elapsed / 60:.1f} min.)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, 2 runs: a check")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), metavar="SCENARIO",
                        help=f"among: {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--runs", type=int, help="interleaved runs per contender (2 quick, 5)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--src", type=Path, help="measure the anet in this tree (a git worktree of a commit)"
    )
    args = parser.parse_args()
    if args.src:
        use_source(args.src)
    runs = args.runs or (2 if args.quick else 5)
    # SIGTERM unwinds like Ctrl-C, so the sshd hosts, ControlMaster daemons and tc qdisc that
    # this run set up are removed by their context managers instead of left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    head = header(args.quick, runs)
    started = time.perf_counter()
    tables: list[Table] = []
    broken = False
    root = Path(tempfile.mkdtemp(prefix="anet-bench-", dir="/tmp"))
    try:
        with Bed(root, quick=args.quick, runs=runs) as bed:
            for name in args.only or DEFAULT:
                log(f"scenario {name}")
                try:
                    tables += SCENARIOS[name].run(bed)
                except Exception as exc:  # report it, run the others
                    broken = True
                    traceback.print_exc()
                    tables.append(Table(f"{name}: FAILED", f"`{exc!r}`", []))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = report(head, tables, time.perf_counter() - started)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
