"""Makespan with one host 10x slower: speculation on vs off, against the ideal schedule.

    python3 bench/speculation.py [--hosts 8] [--jobs 100] [--seconds 0.5] [--runs 3]

Every host is a loopback sshd of the test fixture with 1 slot; the last one plays a machine 10x
slower (its jobs sleep 10x longer). The ideal is the best split of the jobs over the hosts'
speeds, plus nothing for start-up: the ratio to it includes anet's connection and boot time.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sshd_hosts import SshdCluster

from anet import results


def ideal(jobs: int, hosts: int, seconds: float) -> float:
    """Smallest makespan: give the slow host a job only if it finishes before the fast ones."""
    best = float("inf")
    for slow_jobs in range(jobs + 1):
        fast = -(-(jobs - slow_jobs) // (hosts - 1)) * seconds
        best = min(best, max(fast, slow_jobs * seconds * 10))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    slow = f"host{args.hosts}"
    with tempfile.TemporaryDirectory(prefix="anet-bench-") as tmp:
        root = Path(tmp)
        batch = root / "batch.txt"
        batch.write_text(
            "".join(
                f'[ "$ANET_HOST" = {slow} ] && sleep {args.seconds * 10} || sleep {args.seconds};'
                f" echo {i}\n"
                for i in range(args.jobs)
            )
        )
        with SshdCluster(root / "cluster", args.hosts) as cluster:
            hosts = [a for name in cluster.names for a in ("-S", f"1/{name}")]
            argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *hosts]
            argv += ["--no-journal", "--format", "msgpack"]

            def makespan(*extra: str) -> float:
                start = time.monotonic()
                done = subprocess.run([*argv, *extra, str(batch)], capture_output=True, check=True)
                elapsed = time.monotonic() - start
                ids = sorted(r.id for r in results.read(io.BytesIO(done.stdout)))
                assert ids == list(range(args.jobs)), "a job is missing or doubled"
                return elapsed

            samples: dict[str, list[float]] = {"speculation on": [], "speculation off": []}
            for _ in range(args.runs):
                samples["speculation on"].append(makespan())
                samples["speculation off"].append(makespan("--no-speculate"))
    best = ideal(args.jobs, args.hosts, args.seconds)
    print(f"{args.jobs} jobs of {args.seconds} s, {args.hosts} hosts x 1 slot, {slow} 10x slower")
    print(f"\n| run | median makespan s | vs ideal ({best:.1f} s) |\n| --- | ---: | ---: |")
    for name, runs in samples.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} | {median / best:.2f}x |")


if __name__ == "__main__":
    main()
