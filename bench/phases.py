"""Where a one-job run's wall time goes: imports, connect, dispatcher boot, result, shutdown, exit.

    python3 -m bench.phases [--runs 7] [--base TREE]

A whole `anet run` of one `true` job, on this machine (`-S :`) and on 4 loopback sshd hosts,
runs in a process of its own with timestamps taken at the seams (the functions named in
`SEAMS`, wrapped): from the process's start (read from /proc) to its exit. With `--base`,
another tree (e.g. `git archive main | tar -x -C /tmp/base`) runs the same commands, every
contender once per round in turn, so both sides meet the same noise. Prints a markdown table
of medians in milliseconds, and the CPU of each command (its process tree).

On a busy machine whole commands vary by a third between identical runs; the phases a change
touches (the shutdown, a dispatcher's boot) vary far less, which is what this is for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEAMS = [
    ("anet.remote.connect", "Connector", "connect", "connect"),
    ("anet.remote.transport", "SshTransport", "start", "start dispatcher"),
    ("anet.remote.transport", "LocalTransport", "start", "start dispatcher"),
    ("anet.remote.session", "HostSession", "_greet", "Hello"),
    ("anet.drive", "Drive", "deliver", "result"),
    ("anet.api", "Cluster", "_shutdown", "shutdown"),
    ("anet.api", "Cluster", "__aexit__", "cluster closed"),
    ("anet.streams.journal", "Journal", "close", "journal close"),
    ("anet.cli.run", None, "after_run", "retention"),
]
"""(module, class or None for a function, name, mark): each call's start is `mark >`, its
end `mark <`. Inside asyncssh (once imported): `tcp up`, `kex done` (the user auth asked),
`auth ok`, the first of each for any host."""
SPANS = {
    "imports (process start to anet.cli.run loaded)": ("", "imported"),
    "asyncssh import": ("asyncssh >", "asyncssh <"),
    "first connect to first Hello": ("connect >", "Hello"),
    "first connect to its TCP connection": ("connect >", "tcp up"),
    "TCP up to key exchange done": ("tcp up", "kex done"),
    "key exchange done to user auth done": ("kex done", "auth ok"),
    "first dispatcher started to the first Hello (its boot)": ("start dispatcher >", "Hello"),
    "Hello to the result": ("Hello", "result >"),
    "shutdown (Shutdown to every host stopped)": ("shutdown >", "shutdown <"),
    "journal closed to the retention step done": ("journal close <", "retention <"),
    "cluster closed to the end of main (atexit)": ("cluster closed <", "exit"),
    "the end of main to the process gone (teardown)": ("exit", "gone"),
    "whole command (its parent's wait)": ("", "gone"),
}


# -- inside the measured process (run by path: it imports the measured tree) ----------------


def trace(out: Path, argv: list[str]) -> None:
    """Run `anet argv` here, the seams wrapped; the first time of each mark goes to `out`."""
    import atexit
    import importlib

    marks: dict[str, float] = {}
    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        offset = float(uptime.read().split()[0]) - started - time.perf_counter()

    def mark(name: str) -> None:
        marks.setdefault(name, (time.perf_counter() + offset) * 1000)

    atexit.register(lambda: (mark("exit"), out.write_text(json.dumps(marks))))
    import anet.cli.run  # noqa: F401  (the run's imports, timed as such)

    try:
        from anet.launch import main  # the entry point since wp8-entry
    except ImportError:  # an older tree (--base)
        from anet.cli import main  # type: ignore[attr-defined,no-redef]
    mark("imported")
    for module, cls, method, name in SEAMS:
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        if hasattr(owner, method):  # a seam an older tree lacks is left out
            setattr(owner, method, _wrapped(getattr(owner, method), name, mark))
    from anet.remote import connect, sshlib

    load = sshlib.asyncssh

    def timed_load():  # type: ignore[no-untyped-def]
        mark("asyncssh >")
        module = load()
        mark("asyncssh <")
        _handshake_marks(module, mark)
        return module

    sshlib.asyncssh = connect.asyncssh = timed_load  # type: ignore[assignment]
    sys.argv = ["anet", *argv]
    main()


def _handshake_marks(asyncssh, mark) -> None:  # type: ignore[no-untyped-def]
    """Marks inside asyncssh's handshake (its methods, not its packet table)."""
    client = asyncssh.connection.SSHClientConnection
    for method, name in (("connection_made", "tcp up"), ("send_service_request", "kex done")):
        function = getattr(client, method)

        def marked(*args, function=function, name=name):  # type: ignore[no-untyped-def]
            mark(name)
            return function(*args)

        setattr(client, method, marked)
    completed = asyncssh.SSHClient.auth_completed

    def auth_completed(self):  # type: ignore[no-untyped-def]
        mark("auth ok")
        return completed(self)

    asyncssh.SSHClient.auth_completed = auth_completed


def _wrapped(function, name, mark):  # type: ignore[no-untyped-def]
    import inspect

    if inspect.iscoroutinefunction(function):

        async def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            mark(f"{name} >")
            try:
                return await function(*args, **kwargs)
            finally:
                mark(f"{name} <")

        return timed

    def called(*args, **kwargs):  # type: ignore[no-untyped-def]
        mark(name)
        try:
            return function(*args, **kwargs)
        finally:
            mark(f"{name} <")

    return called


# -- the driver ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--base", type=Path, help="another tree, measured side by side")
    args = parser.parse_args()
    from .harness import REPO, Bed, anet_env, helper, use_source, write_batch

    trees = {"this": REPO} | ({"base": args.base.resolve()} if args.base else {})
    with tempfile.TemporaryDirectory() as tmp, Bed(Path(tmp), quick=False, runs=args.runs) as bed:
        four = bed.cluster(4)
        one = write_batch(bed.path("one-true.txt"), ["true"])
        hosts = ["--ssh-config", str(four.ssh_config)]
        hosts += [a for name in four.names for a in ("-S", name)]
        cases = {"local": ["run", "-S", ":", str(one)], "4 hosts": ["run", *hosts, str(one)]}
        found: dict[tuple[str, str], list[tuple[dict[str, float], float]]] = {}
        loads = []
        for round_ in range(args.runs + 1):  # round 0 warms caches (payloads, bytecode)
            loads.append(os.getloadavg()[0])
            for case, argv in cases.items():
                for side, tree in trees.items():
                    use_source(tree)
                    result = _one(helper("phases"), argv, anet_env(bed.root), tree, bed.path("m"))
                    if round_:
                        found.setdefault((case, side), []).append(result)
    print(f"Medians of {args.runs} runs, ms; load average {min(loads):.1f}-{max(loads):.1f}.\n")
    print("| command | phase | " + " | ".join(trees) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in trees) + " |")
    for case in cases:
        for span, (start, end) in SPANS.items():
            cells = [_median(found[case, side], start, end) for side in trees]
            if any(cells):
                print(f"| {case} | {span} | " + " | ".join(cells) + " |")
        cpu = [statistics.median(c for _, c in found[case, side]) * 1000 for side in trees]
        print(f"| {case} | CPU of the process tree | " + " | ".join(f"{c:.0f}" for c in cpu) + " |")


def _one(
    script: list[str], argv: list[str], env: dict[str, str], tree: Path, out: Path
) -> tuple[dict[str, float], float]:
    """One traced command: its marks, and the CPU of its process tree (wait4)."""
    out.unlink(missing_ok=True)
    before = time.clock_gettime(time.CLOCK_BOOTTIME)  # /proc/uptime's clock, as the marks'
    proc = subprocess.Popen(
        [*script, "--trace", str(out), *argv], env=env, cwd=tree,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    gone = (time.clock_gettime(time.CLOCK_BOOTTIME) - before) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:3]}... failed in {tree}")
    marks = json.loads(out.read_text())
    marks["gone"] = gone  # from just before the fork: a few ms early, the parent's own view
    return marks, usage.ru_utime + usage.ru_stime


def _median(samples: list[tuple[dict[str, float], float]], start: str, end: str) -> str:
    spans = [
        m[end] - (m[start] if start else 0) for m, _ in samples if end in m and start in m | {"": 0}
    ]
    return f"{statistics.median(spans):.0f}" if spans else ""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trace"]:
        trace(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
