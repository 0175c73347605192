"""The master's CPU for one small SSH packet read, by how long it slept before it came.

    python3 -m bench.wakecost [--reads 2000] [--gaps 0.0005,0.002,0.01] [--asyncio]

One loopback sshd host; a remote loop writes `--reads` lines of 80 bytes, one every GAP
seconds (each an SSH packet of its own), and this process reads them through asyncssh on a
connection lightened as anet's are (anet/remote/lean.py), with uvloop unless `--asyncio`.
Prints the CPU (user + system, `getrusage`) per read for each gap, and the context switches.

Why: the run phase's CPU per job is mostly a cost per wake-up of the master, not per job. If
a read cost the same CPU whatever the gap, that cost would be Python's instructions; here it
grows with the time the process slept before it (its caches, branch predictors and TLB went
to other processes meanwhile), so fewer, fuller packets cut the master's CPU more than the
instructions per packet suggest.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
from pathlib import Path

from .harness import Bed

LINE = 80


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


async def _reads(host: object, key: Path, reads: int, gap: float) -> tuple[float, int, int]:
    """CPU seconds and context switches while reading, and the number of reads."""
    import asyncssh

    from anet.remote.lean import lighten_channel, lighten_connection

    address, port, user = host.address, host.port, host.user  # type: ignore[attr-defined]
    conn = await asyncssh.connect(
        address, port=port, username=user, client_keys=[str(key)], known_hosts=None,
        encryption_algs=["aes128-gcm@openssh.com"],
    )  # fmt: skip
    lighten_connection(conn)
    script = (
        "import os, time\n"
        f"for i in range({reads}):\n"
        f"    os.write(1, b'%0{LINE - 1}d\\n' % i)\n"
        f"    time.sleep({gap})\n"
    )
    proc = await conn.create_process(f"python3 -c {_quote(script)}", encoding=None)
    lighten_channel(proc.channel)
    count = 0
    cpu0, switches0 = _usage()
    while await proc.stdout.read(65536):
        count += 1
    cpu1, switches1 = _usage()
    await proc.wait()
    conn.close()
    await conn.wait_closed()
    return cpu1 - cpu0, switches1 - switches0, count


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--gaps", default="0.0005,0.002,0.01")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's own loop, not uvloop")
    args = parser.parse_args()
    if not args.asyncio:
        import uvloop

        uvloop.install()
    gaps = [float(gap) for gap in args.gaps.split(",")]
    with tempfile.TemporaryDirectory() as tmp, Bed(Path(tmp), quick=False, runs=1) as bed:
        cluster = bed.cluster(1)
        print("| gap between packets | reads | CPU a read | context switches a read |")
        print("| ---: | ---: | ---: | ---: |")
        for gap in gaps:
            cpu, switches, count = asyncio.run(
                _reads(cluster.hosts[0], cluster.client_key, args.reads, gap)
            )
            print(
                f"| {gap * 1000:g} ms | {count} | {cpu / count * 1e6:.0f} us "
                f"| {switches / count:.2f} |"
            )


if __name__ == "__main__":
    main()
