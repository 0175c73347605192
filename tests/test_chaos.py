"""Chaos: hosts crash, freeze, lose their sshd and fall off the network while a mixed batch runs,
the master dies half-way (kill -9, or SIGTERM), and a resume finishes the batch. Read back with
anet's own reader, every job must end exactly once with its exact bytes.

A driver thread with a seeded `random.Random` picks a host and a fault every 0.15 to 0.6 s; the
seed is printed, and `ANET_CHAOS_SEED=<seed>` replays the same choices (the timing of the run
itself varies, so a replay is likely, not certain, to hit the same interleaving). At most two
hosts are faulted at once, so the batch can always go on.

The faults: kill -9 of the host's dispatcher; SIGSTOP of the whole host for longer than
--keepalive; its sshd stopped (every session and process of the host killed, as in a crash) and
started again; a partition (`SshdHost.partition`: iptables DROP of its sshd traffic, as root).
Each is healed in a `finally`, and the test ends by checking that no job process and no iptables
rule is left.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from sshd_hosts import SshdCluster, SshdHost, leftover_processes, partition_rules

from anet import results
from anet.core.record import JobResult
from anet.errors import ResultFormatError

ROOT = Path(__file__).resolve().parent.parent
SEED_ENV = "ANET_CHAOS_SEED"
KEEPALIVE = 1.0
"""--keepalive (its least): a frozen or cut-off host is lost after this. The faults and the slow
jobs are scaled to it (a fault holds for it and at most 0.75 s more; slow jobs take 0.25 to
0.75 s; a new fault every 0.15 to 0.6 s): the same faults as with 2 s and everything twice as
long over 240 jobs, which took 16.5 to 18 s on an idle machine (with 3 s, 30 s)."""
HOSTS, SLOTS = 5, 2
MAX_FAULTED = 2
"""Hosts faulted at the same time, at most: the others keep the batch going."""
N_JOBS = 200
COMMIT_WINDOW = 1.5
"""After kill -9, `--resume --only-new` may repeat results whose delivery mark was not committed
yet: those read in the last journal commit interval (0.2 s) before the kill. This allows for a
loaded machine; a repeat of anything older is a defect."""


# -- the batch ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """A job's final result as the test computes it: exit 0 is a success."""

    stdout: bytes
    stderr: bytes = b""
    exit_code: int = 0


def _doomed(i: int) -> tuple[bytes, Expected]:
    return b"echo lost-cause-%d; echo doomed-%d >&2; exit 3" % (i, i), Expected(
        b"lost-cause-%d\n" % i, b"doomed-%d\n" % i, 3
    )


def _big(i: int) -> tuple[bytes, Expected]:
    size = 1_500_000 + (i % 7) * 700_000  # 1.5 to 5.7 MB
    line = b"chaos-%d\n" % i
    return b"yes chaos-%d | head -c %d" % (i, size), Expected(
        (line * (size // len(line) + 1))[:size]
    )


def _slow(i: int) -> tuple[bytes, Expected]:
    seconds = 0.25 + (i * 37 % 21) / 40  # 0.25 to 0.75 s
    return b"sleep %.3f; echo slow-%d" % (seconds, i), Expected(b"slow-%d\n" % i)


def _flaky(i: int, marks: Path) -> tuple[bytes, Expected]:
    """Fails on its first attempt, anywhere; every later attempt succeeds (the marker is shared:
    all hosts are this machine)."""
    mark = os.fsencode(marks / str(i))
    command = (
        b"if [ -e %s ]; then echo flaky-%d; echo recovered-%d >&2;"
        b" else : > %s; echo first-try-%d >&2; exit 1; fi" % (mark, i, i, mark, i)
    )
    return command, Expected(b"flaky-%d\n" % i, b"recovered-%d\n" % i)


def job(i: int, marks: Path) -> tuple[bytes, Expected]:
    """Job `i`'s command line (bytes: some are not UTF-8) and its expected result."""
    if i % 50 == 17:
        return _doomed(i)
    if i % 40 == 9:
        return _big(i)
    kind = i % 8
    if kind in (0, 6):
        return _slow(i)
    if kind == 4:
        return _flaky(i, marks)
    simple = {
        1: (b"echo fast-%d" % i, Expected(b"fast-%d\n" % i)),
        2: (b"echo out-%d; echo err-%d >&2" % (i, i), Expected(b"out-%d\n" % i, b"err-%d\n" % i)),
        3: (  # NUL and non-UTF-8 bytes on both streams
            b"printf 'bin-%d\\000\\377\\376\\n'; printf 'e\\000\\200-%d' >&2" % (i, i),
            Expected(b"bin-%d\x00\xff\xfe\n" % i, b"e\x00\x80-%d" % i),
        ),
        5: (  # non-UTF-8 bytes in the command line itself
            b"printf '%%s\\n' 'raw-\xff\xc0-%d'" % i,
            Expected(b"raw-\xff\xc0-%d\n" % i),
        ),
        7: (b"printf 'no-newline-%d'" % i, Expected(b"no-newline-%d" % i)),
    }
    return simple[kind]


def mixed_batch(tmp_path: Path) -> tuple[Path, dict[int, Expected]]:
    marks = tmp_path / "marks"
    marks.mkdir()
    batch = tmp_path / "batch.txt"
    jobs = [job(i, marks) for i in range(N_JOBS)]
    batch.write_bytes(b"".join(command + b"\n" for command, _ in jobs))
    return batch, {i: expected for i, (_, expected) in enumerate(jobs)}


# -- the faults -----------------------------------------------------------------------------------


def _kill_dispatcher(host: SshdHost, rng: random.Random) -> str:
    """kill -9 one of the host's dispatchers (the one-line `python3 -c` stub with zlib)."""
    found = [pid for pid, cmd in host.processes() if "python3" in cmd and "zlib" in cmd]
    if not found:
        return "no dispatcher to kill"
    pid = rng.choice(found)
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return f"dispatcher {pid} ended by itself"
    try:
        # Opened, then checked: had the pid been reused meanwhile, the marker would be missing.
        marker = f"ANET_HOME={host.anet_home}".encode()
        if marker not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return f"dispatcher {pid} ended by itself"
        signal.pidfd_send_signal(handle, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        return f"dispatcher {pid} ended by itself"
    finally:
        os.close(handle)
    return f"kill -9 dispatcher {pid}"


@dataclass
class Chaos:
    """The fault driver: a thread that faults random hosts until `stop`, healing each fault."""

    cluster: SshdCluster
    rng: random.Random
    started: float = field(init=False, default_factory=time.monotonic)
    log: list[str] = field(init=False, default_factory=list)
    errors: list[BaseException] = field(init=False, default_factory=list)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _busy: set[str] = field(init=False, default_factory=set)  # hosts with a lasting fault
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)

    def __enter__(self) -> Chaos:
        self._spawn(self._drive)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in list(self._threads):  # each heals its fault at once when told to stop
            thread.join(timeout=60)
        if stuck := [t.name for t in self._threads if t.is_alive()]:
            self.errors.append(AssertionError(f"fault threads did not end: {stuck}"))
        if self.errors and exc_info[0] is None:
            raise self.errors[0]

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:6.2f}s {text}")

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guarded(self, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except BaseException as exc:  # reported by __exit__; the other threads go on
            self.note(f"ERROR {exc!r}")
            self.errors.append(exc)

    def _drive(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.15, 0.6)):
            with self._lock:
                idle = [h for h in self.cluster.hosts if h.name not in self._busy]
                if len(self._busy) >= MAX_FAULTED:
                    continue
                host = self.rng.choice(idle)
                fault = self.rng.choice(["kill9", "freeze", "sshd-stop", "partition"])
                if fault != "kill9":
                    self._busy.add(host.name)
            if fault == "kill9":
                self.note(f"{host.name}: {_kill_dispatcher(host, self.rng)}")
            else:
                seconds = self.rng.uniform(0.15, 0.75) + (0 if fault == "sshd-stop" else KEEPALIVE)
                self._spawn(self._hold, host, fault, seconds)

    def _hold(self, host: SshdHost, fault: str, seconds: float) -> None:
        """Apply one lasting fault for `seconds` (less if told to stop), then heal it."""
        self.note(f"{host.name}: {fault} for {seconds:.1f}s")
        try:
            with self._faulted(host, fault):
                self._stop.wait(seconds)
        finally:
            with self._lock:
                self._busy.discard(host.name)
            self.note(f"{host.name}: {fault} healed")

    @staticmethod
    @contextlib.contextmanager
    def _faulted(host: SshdHost, fault: str) -> Iterator[None]:
        if fault == "freeze":
            host.freeze()
            try:
                yield
            finally:
                host.thaw()
        elif fault == "sshd-stop":
            host.stop()
            try:
                yield
            finally:
                host.start()
        else:
            try:
                host.partition()
                yield
            finally:
                host.heal()


# -- running anet ---------------------------------------------------------------------------------


def anet_argv(cluster: SshdCluster, batch: Path, journal: Path, *args: str) -> list[str]:
    hosts = [a for name in cluster.names for a in ("-S", f"{SLOTS}/{name}")]
    return [
        sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *hosts,
        "--format", "msgpack", "-q", "--keepalive", str(KEEPALIVE), "--journal", str(journal),
        *args, str(batch),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stop:
    """Send `sig` to the master `delay` seconds after `after` results were read: a moment
    anywhere in a write, not always just after one."""

    sig: signal.Signals
    after: int
    delay: float


class AnetRun:
    """One `anet` process: its stdout decoded by anet's reader as it comes, each record with the
    time it arrived; its stderr collected; with `stop`, the master is stopped mid-way."""

    def __init__(self, argv: list[str], stop: Stop | None = None) -> None:
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        self.launched = time.time()  # the journal's attempts table keeps Unix times
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.arrivals: list[tuple[float, JobResult]] = []
        self.error: ResultFormatError | None = None
        self.stopped_at: float | None = None
        self._stop = stop
        self._stopper = threading.Timer(stop.delay if stop else 0, self._send_stop)
        self._stderr = bytearray()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def records(self) -> list[JobResult]:
        return [record for _, record in self.arrivals]

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for record in results.read(stream, "msgpack"):
                self.arrivals.append((time.monotonic(), record))
                if self._stop is not None and len(self.arrivals) == self._stop.after:
                    self._stopper.start()
        except ResultFormatError as exc:  # kill -9 may cut the last record: checked later
            self.error = exc

    def _send_stop(self) -> None:
        assert self._stop is not None
        if self.proc.poll() is None:
            self.stopped_at = time.monotonic()
            self.proc.send_signal(self._stop.sig)

    def _drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            self._stderr += chunk

    def wait(self, timeout: float) -> int:
        """anet's exit status; a run that outlives `timeout` is a hang: killed, and it fails."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"anet hung for {timeout:.0f}s:\n{self.stderr[-3000:]}") from None
        for thread in [*self._threads, self._stopper]:
            if thread.ident is not None:
                thread.join(timeout=30)
        return self.proc.returncode


# -- checks ---------------------------------------------------------------------------------------

LOST_TOO_OFTEN = re.compile(r"5 hosts were lost while running it \(last: host\d+\)")
"""A job whose attempts were lost with 5 hosts is failed, not run for ever (it may be what kills
them: the scheduler's max_losses). Heavy chaos can do that to an innocent job; it is the right
final status then, though rare."""


def given_up(r: JobResult) -> bool:
    return (r.ok, r.exit_code, r.signal, r.stdout, r.stderr) == (False, None, None, b"", b"") and (
        LOST_TOO_OFTEN.fullmatch(r.error or "") is not None
    )


def wrong(records: list[JobResult], expected: dict[int, Expected]) -> list[str]:
    """Each record that is neither exactly its job's expected result nor given up, described."""
    bad = []
    for r in records:
        want = expected[r.id]
        if given_up(r) or (r.ok, r.exit_code, r.stdout, r.stderr) == (
            want.exit_code == 0, want.exit_code, want.stdout, want.stderr
        ):  # fmt: skip
            continue
        bad.append(
            f"job {r.id}: ok={r.ok} exit={r.exit_code} signal={r.signal} error={r.error!r}"
            f" stdout={r.stdout[:60]!r} ({len(r.stdout)} B) stderr={r.stderr[:60]!r};"
            f" want exit {want.exit_code}, stdout {want.stdout[:60]!r}"
            f" ({len(want.stdout)} B), stderr {want.stderr[:60]!r}"
        )
    return bad


def allowed_repeats(first: AnetRun) -> set[int]:
    """Ids a kill -9 may make `--resume --only-new` write again: those read in the last commit
    interval (COMMIT_WINDOW, generously) before the kill."""
    assert first.stopped_at is not None
    window = first.stopped_at - COMMIT_WINDOW
    return {r.id for when, r in first.arrivals if when >= window}


def query(journal: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows from the journal, read-only (anet may be running and writing it)."""
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


def ran_again(journal: Path, second: AnetRun, first: AnetRun) -> set[int]:
    """Jobs that succeeded in the first run (the consumer has them, so they were committed)
    but were started again by the resume: invariant 3 says never."""
    started = query(journal, "SELECT job_id FROM attempts WHERE start >= ?", second.launched)
    return {row[0] for row in started} & {r.id for r in first.records if r.ok}


def check_first_and_new(first: AnetRun, second: AnetRun, sig: signal.Signals) -> None:
    """`--resume --only-new`: first + resumed has every success once, but after kill -9 the
    results of the last commit interval may come twice. Failed jobs run again on resume."""
    ok = Counter(r.id for r in first.records + second.records if r.ok)
    repeated = {i for i, n in ok.items() if n > 1}
    print(f"{len(repeated)} results repeated after the stop")
    if sig == signal.SIGKILL:
        assert repeated <= allowed_repeats(first), f"old results repeated: {sorted(repeated)}"
    else:
        assert not repeated, f"repeated after {sig.name}: {sorted(repeated)}"
    failed = {r.id for r in second.records if not r.ok}
    assert not failed & set(ok), "a job both succeeded and failed"


def check_streams(
    first: AnetRun, second: AnetRun, expected: dict[int, Expected], sig: signal.Signals
) -> None:
    """What holds in every scenario: the stop came mid-way and was handled as its signal says;
    each stream has each id at most once, each record exact; the resumed stream ends every job
    that has no success in the first (all of them without --only-new), and its exit status
    counts its failures."""
    for run in (first, second):
        assert "Traceback" not in run.stderr, run.stderr
        twice = [i for i, n in Counter(r.id for r in run.records).items() if n > 1]
        assert not twice, f"one stream has ids twice: {twice}"
    assert first.stopped_at is not None, "the run ended before the stop"
    if sig == signal.SIGKILL:
        assert first.proc.returncode == -signal.SIGKILL
        assert first.error is None or "truncated record" in str(first.error), first.error
    else:
        assert first.proc.returncode == 128 + sig, first.stderr
        assert f"stopped by {sig.name}" in first.stderr
        assert first.error is None, first.error
    assert not (bad := wrong(first.records + second.records, expected)), "\n".join(bad)
    unfinished = set(expected) - {r.id for r in first.records if r.ok}
    assert unfinished <= {r.id for r in second.records}, "jobs never ended"
    gave_up = sorted(r.id for r in first.records + second.records if given_up(r))
    torn = ", then a torn one" if first.error else ""
    print(f"{len(first.records)} results before the stop{torn}; given up: {gave_up}")
    assert second.proc.returncode == sum(not r.ok for r in second.records), second.stderr


# -- the scenarios --------------------------------------------------------------------------------

SCENARIOS = {
    "kill9-resume": (signal.SIGKILL, ("--resume",)),
    "kill9-resume-only-new": (signal.SIGKILL, ("--resume", "--only-new")),
    "term-resume-only-new": (signal.SIGTERM, ("--resume", "--only-new")),
}


@pytest.fixture(scope="module")
def seed() -> int:
    """One seed per module run; each scenario derives its own stream of choices from it."""
    chosen = int(os.environ.get(SEED_ENV) or random.randrange(2**32))
    print(f"chaos seed {chosen} (replay: {SEED_ENV}={chosen})")
    return chosen


@pytest.mark.root("the chaos test partitions hosts with iptables", tools=("iptables",))
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chaos_then_resume_gives_every_result_once_and_exact(
    make_cluster, tmp_path, seed, scenario
):
    sig, resume = SCENARIOS[scenario]
    rng = random.Random(f"{seed}/{scenario}")
    own = make_cluster(HOSTS)
    batch, expected = mixed_batch(tmp_path)
    journal = tmp_path / "journal.sqlite"
    stop = Stop(sig, rng.randint(N_JOBS * 3 // 10, N_JOBS * 6 // 10), rng.uniform(0, 0.5))
    chaos = Chaos(own, rng)
    try:
        with chaos:
            first = AnetRun(anet_argv(own, batch, journal), stop)
            first.wait(timeout=120)
            chaos.note(f"master stopped: {stop}")
            second = AnetRun(anet_argv(own, batch, journal, *resume))
            second.wait(timeout=150)
            chaos.note("resumed run ended")
        left = leftover_processes(own.hosts, grace=20.0)
    finally:
        rules = partition_rules()  # the faults healed theirs; closing the hosts heals any left
        print("\n".join([f"seed {seed}, scenario {scenario}", *chaos.log]))  # shown on failure
    check_streams(first, second, expected, sig)
    assert not (again := ran_again(journal, second, first)), f"successes run again: {again}"
    if "--only-new" in resume:
        check_first_and_new(first, second, sig)
    else:  # every earlier success is written again: the resumed stream alone is complete
        assert {r.id for r in second.records} == set(expected)
    assert not left, f"processes left on the hosts: {left}"
    assert not rules, f"iptables rules left: {rules}"


# -- a defect the chaos run showed ----------------------------------------------------------------


def delivered_mark(journal: Path, job_id: int) -> bool:
    """Whether the journal has committed `job_id` as delivered."""
    return query(journal, "SELECT delivered FROM results WHERE id = ?", job_id) == [(1,)]


def test_after_a_lull_kill_9_repeats_no_result_read_long_before(make_cluster, tmp_path):
    """The promise (journal.py): a kill -9 repeats only the results written since the last
    commit (0.2 s). Here job 0 is read, then nothing happens for 2 s: ten commits later, its
    delivery mark must be in the journal, and `--resume --only-new` must not write it again."""
    own = make_cluster(1)
    mark = tmp_path / "slow-once"
    batch = tmp_path / "batch.txt"
    late = f"if [ -e {mark} ]; then echo late; else : > {mark}; sleep 60; fi"  # slow only at first
    batch.write_text(f"echo early\n{late}\n")
    journal = tmp_path / "journal.sqlite"
    first = AnetRun(anet_argv(own, batch, journal))
    try:
        deadline = time.monotonic() + 30
        while not first.arrivals:
            assert time.monotonic() < deadline and first.proc.poll() is None, first.stderr
            time.sleep(0.01)
        deadline = time.monotonic() + 2.0  # ten commit intervals
        while not delivered_mark(journal, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.proc.kill()
        first.wait(timeout=30)
    assert [r.stdout for r in first.records] == [b"early\n"]
    second = AnetRun(anet_argv(own, batch, journal, "--resume", "--only-new"))
    assert second.wait(timeout=60) == 0, second.stderr
    assert [(r.id, r.stdout) for r in second.records] == [(1, b"late\n")]
