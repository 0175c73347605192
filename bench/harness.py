"""What every benchmark scenario shares: hosts, timed runs, interleaving, medians, tables.

The machines anet is developed on have 2 busy cores, so one measurement means little. Every
scenario therefore runs all its contenders in the same process, interleaved run by run (the
order rotates, so none always goes first or last), and reports medians and ratios: noise then
hits every contender alike and the ratios hold even when the absolute numbers drift.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "tests"))
from sshd_hosts import SshdCluster  # noqa: E402  (the test fixture, reused as is)

_source = REPO


def use_source(path: Path) -> None:
    """Measure the anet in `path` (e.g. a `git worktree` of one commit), not this checkout.

    Every child runs with its working directory and PYTHONPATH there, so `python -m anet`
    and bench's helper scripts import that tree: a tree others are editing can be mid-change.
    """
    global _source
    if not (path / "anet" / "__init__.py").is_file():
        raise SystemExit(f"{path} has no anet/ package")
    _source = path.resolve()


def source() -> Path:
    return _source


def helper(name: str) -> list[str]:
    """argv prefix for one of bench's helper scripts, run by path so it imports `source()`:
    the measured tree's own copy when it has one (it knows that tree's API), else this one."""
    script = _source / "bench" / f"{name}.py"
    if not script.is_file():
        script = BENCH / f"{name}.py"
    return [sys.executable, "-P", str(script)]  # -P: bench/ not on sys.path


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the markdown table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Timed processes


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one contender: wall seconds, CPU seconds and peak RSS of its process tree."""

    wall: float
    cpu: float = 0.0
    maxrss_mb: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def timed(
    argv: Sequence[str],
    *,
    stdin: Path | None = None,
    stdout: IO[bytes] | int = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> Sample:
    """Run argv to completion; its own rusage comes from wait4, not RUSAGE_CHILDREN.

    RUSAGE_CHILDREN's ru_maxrss is the largest child *ever*, so an earlier fat run would mask
    a later lean one; wait4 reports this child (and the descendants it waited for) only.
    """
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        start = time.perf_counter()
        proc = subprocess.Popen(  # in `source()`: `python -m anet` imports anet from the cwd
            argv, stdin=source, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=_source
        )
        assert proc.stderr is not None
        err = proc.stderr.read()  # drained while it runs, so a chatty child never blocks
        proc.stderr.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{argv[:3]}... exited {proc.returncode}: {' | '.join(tail)}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def probe(args: Sequence[str], *, env: dict[str, str] | None = None) -> Sample:
    """Run anet through bench/probe.py (its own process) and read back its phase timings."""
    argv = [*helper("probe"), *args]
    env = env if env is not None else anet_env(None)
    out = subprocess.run(argv, capture_output=True, check=False, env=env, cwd=_source)
    if out.returncode != 0:
        tail = out.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"probe exited {out.returncode}: {' | '.join(tail)}")
    data: dict[str, float] = json.loads(out.stdout)
    return Sample(data["total"], data["cpu"], data["maxrss_mb"], data)


def anet_env(root: Path | None, *, uvloop: bool = True) -> dict[str, str]:
    """The environment for anet runs: its journal under the bench's temp dir, uvloop or not."""
    env = dict(os.environ, PYTHONPATH=str(_source))
    # A user's anet has its bytecode cached (pip compiles it); without this a tree measured
    # here would be compiled at every start (0.3 s of CPU for anet's modules).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if root is not None:
        env["XDG_STATE_HOME"] = str(root / "state")
    env.pop("ANET_NO_UVLOOP", None)
    if not uvloop:
        env["ANET_NO_UVLOOP"] = "1"
    return env


def anet_argv(config: Path | None, specs: Sequence[str], *extra: str) -> list[str]:
    """`python -m anet run` over the given host specs; the batch path goes last."""
    argv = [sys.executable, "-m", "anet", "run"]
    if config is not None:
        argv += ["--ssh-config", str(config)]
    for spec in specs:
        argv += ["-S", spec]
    return [*argv, *extra]


def write_batch(path: Path, lines: Iterator[str] | Sequence[str]) -> Path:
    """Write a batch file in 1 MiB pieces (a million lines must not sit in memory twice)."""
    with path.open("w") as out:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= 20_000:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            out.write("\n".join(chunk) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Interleaved runs and medians


def interleave(
    contenders: dict[str, Callable[[], Sample]], runs: int, *, what: str = ""
) -> dict[str, list[Sample]]:
    """Every contender once per round, the order rotated each round; samples per contender."""
    names = list(contenders)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sample = contenders[name]()
            log(f"{what} run {round_ + 1}/{runs} {name}: {sample.wall:.2f} s")
            samples[name].append(sample)
    return samples


def median(samples: Sequence[Sample], key: Callable[[Sample], float] = lambda s: s.wall) -> float:
    return statistics.median(key(s) for s in samples)


# --------------------------------------------------------------------------------------------
# Results: tables and targets


@dataclass(frozen=True, slots=True)
class Target:
    """One of issue 7's goals, with the number measured against it."""

    what: str
    measured: str
    met: bool | None  # None: not measured (skipped)


@dataclass(slots=True)
class Table:
    """One scenario's result as a markdown table, with the sizes and notes that explain it."""

    title: str
    setup: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", self.setup, ""]
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("| --- |" + " ---: |" * (len(self.columns) - 1))
            lines += ["| " + " | ".join(row) + " |" for row in self.rows]
            lines.append("")
        lines += [f"{note}  " for note in self.notes]
        for target in self.targets:
            verdict = {True: "met", False: "**not met**", None: "not measured"}[target.met]
            lines.append(f"- target {target.what}: {target.measured} ({verdict})")
        return "\n".join(lines).rstrip() + "\n"


RATE_COLUMNS = ["path", "median wall s", "MB/s", "vs ssh", "peak RSS MB"]


def rate_table(title: str, setup: str, samples: dict[str, list[Sample]], size: int,
               base: str) -> Table:  # fmt: skip
    """MB/s of moving `size` bytes, per contender, against the `base` contender's (ssh's)."""
    table = Table(title, setup, RATE_COLUMNS)
    base_rate = size / median(samples[base]) / 1e6
    for name, runs in samples.items():
        rate = size / median(runs) / 1e6
        table.rows.append([name, f"{median(runs):.2f}", f"{rate:,.0f}",
                           f"{rate / base_rate:.2f}x",
                           f"{median(runs, lambda s: s.maxrss_mb):,.0f}"])  # fmt: skip
    return table


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "n/a"


# --------------------------------------------------------------------------------------------
# The machine and the versions, for the table's header


def _version(argv: Sequence[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    match = re.search(pattern, out.stdout + out.stderr)
    return match[1] if match else "unknown"


def _module_version(name: str) -> str:
    try:
        module = __import__(name)
    except ImportError:
        return "absent"
    return str(getattr(module, "__version__", "unknown"))


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def header(quick: bool, runs: int) -> str:
    """Date, machine, load and versions: a number without them cannot be compared later."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    git = ["git", "-C", str(_source), "describe", "--always", "--dirty"]
    described = subprocess.run(git, capture_output=True, text=True, check=False)
    commit = described.stdout.strip() if described.returncode == 0 else "unknown"
    base = _source / "BASE_COMMIT"  # a snapshot made with `git archive` says what it came from
    if commit == "unknown" and base.is_file():
        commit = f"snapshot of {base.read_text().strip()} + changes"
    where = "this checkout" if _source == REPO else str(_source)
    versions = {
        "anet": f"{commit} ({where})" if commit != "unknown" else where,
        "Python": platform.python_version(),
        "asyncssh": _module_version("asyncssh"),
        "uvloop": _module_version("uvloop"),
        "OpenSSH": _version(["ssh", "-V"], r"OpenSSH_([^\s,]+)"),
        "GNU parallel": _version(["parallel", "--version"], r"GNU parallel (\d+)"),
        "parallel-ssh": _dist_version("parallel-ssh"),
        "xargs": _version(["xargs", "--version"], r"xargs \(GNU findutils\) (\S+)"),
    }
    return "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
            f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, "
            f"load average {load} at the start.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
            f"Mode: {'--quick (reduced sizes, see each table)' if quick else 'full'}, "
            f"{runs} interleaved run(s) per contender unless a table says otherwise; "
            "every time is a median.",
        ]
    )


# --------------------------------------------------------------------------------------------
# The test bed: sshd hosts, ssh configs, GNU parallel's login file


class Bed:
    """Temp files and sshd clusters for one bench run; clusters are started on first use."""

    def __init__(self, root: Path, *, quick: bool, runs: int) -> None:
        self.root = root
        self.quick = quick
        self.runs = runs
        self._stack = contextlib.ExitStack()
        self._clusters: dict[str, SshdCluster] = {}

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def cluster(self, n: int, key: str = "") -> SshdCluster:
        """N loopback sshd hosts (host1..hostN), shared by the scenarios that ask for the same."""
        name = f"{key}{n}"
        if name not in self._clusters:
            started = time.perf_counter()
            cluster = SshdCluster(self.root / f"cluster-{name}", n)
            self._clusters[name] = self._stack.enter_context(cluster)
            log(f"{n} sshd hosts up in {time.perf_counter() - started:.1f} s")
        return self._clusters[name]

    def close_cluster(self, n: int, key: str = "") -> None:
        """Stop a big cluster early so its sshds stop costing memory and scheduler time."""
        cluster = self._clusters.pop(f"{key}{n}", None)
        if cluster is not None:
            cluster.close()

    def path(self, name: str) -> Path:
        return self.root / name

    @contextlib.contextmanager
    def control_master(self, cluster: SshdCluster) -> Iterator[Path]:
        """An ssh config that reuses one connection per host (ControlMaster + ControlPersist).

        ssh keeps the first value it reads for an option, so the Control* lines go first and the
        cluster's own config follows unchanged. The persisting masters are daemons this bench
        started: `ssh -O exit` stops each of them afterwards.
        """
        sockets = Path(f"/tmp/anet-bench-cm-{os.getpid()}")  # short: a socket path has 108 bytes
        sockets.mkdir(exist_ok=True)
        config = self.root / f"ssh_config_cm_{len(cluster.hosts)}"
        config.write_text(
            "Host *\n    ControlMaster auto\n"
            f"    ControlPath {sockets}/%C\n    ControlPersist 300\n\n"
            + cluster.ssh_config.read_text()
        )
        try:
            yield config
        finally:
            for name in cluster.names:
                subprocess.run(
                    ["ssh", "-F", str(config), "-O", "exit", name],
                    capture_output=True, check=False, timeout=10,
                )  # fmt: skip
            shutil.rmtree(sockets, ignore_errors=True)

    def sshlogins(self, cluster: SshdCluster, slots: int) -> Path:
        """GNU parallel's --sshloginfile: `slots/host` per line."""
        path = self.root / f"sshlogins-{len(cluster.hosts)}x{slots}"
        path.write_text("".join(f"{slots}/{name}\n" for name in cluster.names))
        return path


def gnu_parallel_argv(config: Path, logins: Path, batch: Path) -> list[str]:
    """GNU parallel running each batch line on the hosts, one ssh login per job."""
    return [
        "parallel", "--will-cite", "--ssh", f"ssh -F {config}", "--sshloginfile", str(logins),
        "::::", str(batch),
    ]  # fmt: skip


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)
