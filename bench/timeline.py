"""A one-job run on 4 SSH hosts as a user starts it: where its time goes, early start included.

    python3 -m bench.timeline [--runs 7] [--base TREE]

bench.phases imports the run's modules before it starts the run, so it cannot see the early
start (the handshakes made while `anet` imports the rest of itself). Here the measured process
goes through `anet`'s own entry point (`anet.launch`; `anet.cli` in a tree from before it),
and marks are taken inside it as functions are called: asyncssh loaded, the first connect,
TCP up, key exchange, user auth, the first dispatcher process started, the run's imports
done (the early loop handed over), the first Hello taken, the result, the cluster closed,
the end of main. Each mark is the first of its kind, in ms from the process's start; one
plain `ssh host1 true` follows each run, and the ratio of the medians is printed. With
`--base`, another tree runs in alternate rounds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def trace(out: Path, argv: list[str]) -> None:
    """Run `anet argv` in this process, marks to `out` (its cwd is the tree measured)."""
    import atexit
    import importlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("phases", Path(__file__).with_name("phases.py"))
    assert spec is not None and spec.loader is not None  # this tree's own, whatever is measured
    phases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phases)
    handshake_marks = phases._handshake_marks

    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        offset = float(uptime.read().split()[0]) - started - time.perf_counter()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, round((time.perf_counter() + offset) * 1000, 1))

    atexit.register(lambda: (mark("end of main"), out.write_text(json.dumps(marks))))
    entry = importlib.import_module(
        "anet.launch" if Path("anet/launch.py").exists() else "anet.cli"
    )
    from anet.remote import connect, earlyssh, sshlib

    connect.Connector.connect = _marked(connect.Connector.connect, "connect", mark)
    load = sshlib.asyncssh

    def loaded():  # type: ignore[no-untyped-def]
        module = load()
        if "asyncssh loaded" not in marks:
            mark("asyncssh loaded")
            handshake_marks(module, mark)
            client = module.connection.SSHClientConnection
            client.create_process = _marked(client.create_process, "process", mark)
        return module

    sshlib.asyncssh = earlyssh.asyncssh = connect.asyncssh = loaded
    handover = earlyssh.handover

    def handed_over():  # type: ignore[no-untyped-def]
        from anet import api, drive
        from anet.remote import session

        mark("imports done")
        session.HostSession._greet = _marked(session.HostSession._greet, "Hello", mark)
        drive.Drive.deliver = _marked(drive.Drive.deliver, "result", mark)
        api.Cluster.__aexit__ = _marked(api.Cluster.__aexit__, "cluster closed", mark)
        return handover()

    earlyssh.handover = handed_over
    sys.argv = ["anet", *argv]
    entry.main()


SHOWN = [
    ("asyncssh loaded", "asyncssh loaded"),
    ("first connect", "connect >"),
    ("first TCP connection up", "tcp up"),
    ("first key exchange done", "kex done"),
    ("first user auth done", "auth ok"),
    ("first dispatcher process started", "process <"),
    ("the run's imports done", "imports done"),
    ("first Hello taken", "Hello >"),
    ("the result", "result >"),
    ("cluster closed", "cluster closed <"),
    ("end of main", "end of main"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--base", type=Path, help="another tree, measured in alternate rounds")
    args = parser.parse_args()
    from .harness import REPO, Bed, anet_env, write_batch

    trees = {"this": REPO} | ({"base": args.base.resolve()} if args.base else {})
    marks: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    walls: dict[str, list[float]] = {name: [] for name in trees}
    ssh: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Bed(Path(tmp), quick=False, runs=args.runs) as bed:
        four = bed.cluster(4)
        one = write_batch(bed.path("one-true.txt"), ["true"])
        argv = ["run", "--ssh-config", str(four.ssh_config)]
        argv += [a for name in four.names for a in ("-S", name)] + [str(one)]
        for round_ in range(args.runs + 1):  # the first round warms the hosts' caches
            for name, tree in trees.items():
                out = bed.path(f"marks-{name}.json")
                env = anet_env(bed.root) | {"PYTHONPATH": str(tree)}
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, __file__, "--trace", str(out), *argv],
                    env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                wall = (time.perf_counter() - started) * 1000
                if round_:
                    walls[name].append(wall)
                    for key, value in json.loads(out.read_text()).items():
                        marks[name].setdefault(key, []).append(value)
            started = time.perf_counter()
            subprocess.run(["ssh", "-F", str(four.ssh_config), four.names[0], "true"], check=True)
            if round_:
                ssh.append((time.perf_counter() - started) * 1000)
    load = os.getloadavg()[0]
    print(f"Medians of {args.runs} runs, ms from the process's start; load {load:.1f}.")
    print("\n| mark | " + " | ".join(trees) + " |\n| --- |" + " ---: |" * len(trees))
    for label, key in SHOWN:
        cells = [marks[name].get(key) for name in trees]
        text = [f"{statistics.median(c):.0f}" if c else "-" for c in cells]
        print(f"| {label} | " + " | ".join(text) + " |")
    ssh_ms = statistics.median(ssh)
    ratios = [f"{statistics.median(walls[name]) / ssh_ms:.2f}x" for name in trees]
    print("| whole command (its parent's wait) / one plain ssh | " + " | ".join(ratios) + " |")
    print(f"\nOne plain `ssh host1 true`: {ssh_ms:.0f} ms.")


def _marked(function, name, mark):  # type: ignore[no-untyped-def]
    """`function`, marked `name >` when called and `name <` when it ends: when what it
    returned is awaited, if it returns an awaitable (asyncssh's `create_process` does)."""

    async def ended(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        finally:
            mark(f"{name} <")

    def called(*args, **kwargs):  # type: ignore[no-untyped-def]
        mark(f"{name} >")
        result = function(*args, **kwargs)
        if inspect.isawaitable(result):
            return ended(result)
        mark(f"{name} <")
        return result

    return called


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trace"]:
        trace(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
