"""Run one batch through anet's API in its own process and print its phases as JSON.

    python3 -m bench.probe --ssh-config CFG -S 4/host1 ... --batch FILE [--no-speculate]

The CLI's wall time mixes start-up (imports, SSH handshakes, dispatcher boot) with the run;
scenarios whose targets are about the run itself (an ideal makespan, CPU per job at
saturation) need the two apart. This is the master as `anet run` builds it, minus the output
encoding: `total` is from process start, `connect` until every host is ready, `run` from then
to the last result; `cpu` is the master's CPU seconds during `run` only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import resource
import time
from pathlib import Path

STARTED = time.perf_counter()
MARK = 10_000

from anet.api import Cluster, RunPolicy  # noqa: E402  (import time counts in `total`)
from anet.cli.common import run_async  # noqa: E402
from anet.core.batch import open_batch, read_batch  # noqa: E402
from anet.remote.connect import SshOptions  # noqa: E402


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def _measure(args: argparse.Namespace) -> dict[str, float]:
    ssh = SshOptions(config=args.ssh_config) if args.ssh_config else None
    cluster = Cluster(args.hosts, ssh=ssh, policy=RunPolicy(speculate=not args.no_speculate))
    # CPU time, not wall time: on a busy box a wall-clock profile charges preemption to
    # whatever function was running (the socket writes that wake the sshds, above all).
    profiler = cProfile.Profile(time.process_time) if args.cprofile else None
    jobs = failed = 0
    marks: list[float] = []  # run-phase seconds at every MARK results: does the rate drift?
    async with cluster:
        await asyncio.gather(*(cluster.ready_session(label) for label in cluster.hosts))
        ready = time.perf_counter()
        cpu = startup = _cpu()  # imports, handshakes and boots: the master's start-up
        if profiler is not None:
            profiler.enable()
        with open_batch(args.batch) as batch:
            async for result in cluster.run(read_batch(batch)):
                jobs += 1
                failed += not result.ok
                if jobs % MARK == 0:
                    marks.append(round(time.perf_counter() - ready, 3))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        done = time.perf_counter()
        user, system = (after - before for after, before in zip(_cpu(), cpu, strict=True))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "total": done - STARTED,
        "connect": ready - STARTED,
        "run": done - ready,
        "startup_cpu": sum(startup),
        "cpu": user + system,
        "user": user,
        "system": system,
        "jobs": jobs,
        "failed": failed,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "marks": marks,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ssh-config", type=Path)
    parser.add_argument("-S", dest="hosts", action="append", required=True)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("--no-speculate", action="store_true")
    parser.add_argument("--cprofile", type=Path, help="write cProfile stats of the run phase")
    args = parser.parse_args()
    result: dict[str, float] = {}

    async def program() -> int:
        result.update(await _measure(args))
        return 0

    run_async(program())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
