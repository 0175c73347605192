"""Throughput of trivial jobs: anet over loopback sshd hosts vs local `xargs -P` (and GNU parallel).

    python3 bench/throughput.py [--jobs 2000] [--hosts 4] [--slots 4] [--runs 5] [--parallel]

Every contender runs the same batch in the same process, interleaved run by run, so machine
noise hits them alike; the table gives medians and each contender's ratio to xargs, the
physical limit (no network, no Python). The sshd hosts come from the test fixture.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sshd_hosts import SshdCluster


def timed(argv: list[str], **kwargs: object) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + system, its own children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", action="store_true", help="add GNU parallel --sshloginfile")
    args = parser.parse_args()
    total_slots = args.hosts * args.slots
    with tempfile.TemporaryDirectory(prefix="anet-bench-") as tmp:
        root = Path(tmp)
        batch = root / "batch.txt"
        batch.write_text("".join(f"echo {i}\n" for i in range(args.jobs)))
        with SshdCluster(root / "cluster", args.hosts) as cluster:
            hosts = [a for name in cluster.names for a in ("-S", f"{args.slots}/{name}")]
            anet = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *hosts]
            contenders: dict[str, Callable[[], tuple[float, float]]] = {
                f"xargs -P {total_slots}": lambda: timed(
                    ["xargs", "-P", str(total_slots), "-I{}", "sh", "-c", "{}"],
                    stdin=batch.open("rb"),
                ),
                "anet": lambda: timed([*anet, str(batch)]),
            }
            if args.parallel and shutil.which("parallel"):
                logins = root / "sshlogins"
                logins.write_text("".join(f"{args.slots}/{n}\n" for n in cluster.names))
                ssh = f"ssh -F {cluster.ssh_config}"
                contenders["GNU parallel"] = lambda: timed(
                    ["parallel", "--ssh", ssh, "--sshloginfile", str(logins), "::::", str(batch)]
                )
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
            for _ in range(args.runs):
                for name, run in contenders.items():
                    samples[name].append(run())
    base = statistics.median(w for w, _ in samples[f"xargs -P {total_slots}"])
    print(f"{args.jobs} x `echo ID`, {args.hosts} hosts x {args.slots} slots, {args.runs} runs\n")
    print("| contender | median wall s | jobs/s | vs xargs | CPU us/job (whole tree) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs) / args.jobs * 1e6
        print(f"| {name} | {wall:.2f} | {args.jobs / wall:.0f} | {base / wall:.2f}x | {cpu:.0f} |")


if __name__ == "__main__":
    main()
