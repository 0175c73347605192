"""Shared fixtures: every test in a home of its own, checked for leaks (see leaks.py), and real
OpenSSH sshd hosts on loopback (see sshd_hosts.py)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import leaks
import pytest
from hostile_dispatcher import Hostile
from sshd_hosts import SshdCluster, leftover_processes

ClusterFactory = Callable[..., SshdCluster]
HostileFactory = Callable[..., tuple[SshdCluster, Hostile]]

# scripts/mutation sets ANET_MUTATION. Each mutant only needs a verdict, the same one each run:
# hypothesis draws the same examples (derandomize), keeps no database between mutants, and does
# not shrink a failure (shrinking a state machine's failing run costs more than finding it).
MUTATION = bool(os.environ.get("ANET_MUTATION"))
# A mutant that makes a test loop is cut after this much CPU time in that test, whatever the
# machine's load (wall time under `nice -n 19` on a busy box says little): the slowest test of
# the selection, a scheduler state machine, takes some 5 s of CPU.
MUTANT_TEST_CPU_S = 60.0
# mutmut's exit status for a timeout (its stats.status_by_exit_code): the mutant is reported
# as "timeout", apart from the killed ones, so a cut can be told from a failed assertion.
MUTMUT_TIMEOUT_EXIT = 36
if MUTATION:
    from hypothesis import Phase, settings

    settings.register_profile(
        "mutation",
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        database=None,
        derandomize=True,
    )
    settings.load_profile("mutation")


def pytest_configure(config: pytest.Config) -> None:
    """uvloop (libuv) opens a pipe pair on the first loop of a process and keeps it for good:
    open it before any test runs, or the first test to use uvloop would be blamed for it.

    Under `-n`, xdist's default `--dist load` becomes `worksteal`: a worker that ran out of
    tests takes some from the end of the other's share, so the two end together (see
    pytest_collection_modifyitems). Set here rather than in addopts, where `--dist` would
    count as xdist even without `-n` (pytest-benchmark then warns on every run of one file).
    """
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "worksteal"
    if not hasattr(config, "workerinput"):  # once, in the process that starts the workers
        _keep_bytecode()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.new_event_loop().close()


def _keep_bytecode() -> None:
    """Let the suite's Pythons keep the bytecode they compile, even where the shell says not to.

    The suite starts hundreds of Pythons that import anet (every `anet` command, the pools'
    daemons) and each xdist worker rewrites the asserts of every test module at collection. With
    PYTHONDONTWRITEBYTECODE set (as on the CI box) none of that was kept: each `anet` compiled
    anet again (0.1 s of CPU) and each worker rewrote the tests again (3.5 s of CPU). The
    variable asks for no `__pycache__` in the tree, so the bytecode goes to a folder of this
    user's out of it (PYTHONPYCACHEPREFIX), set here before the workers start so they and
    everything they start inherit it. Without the variable Python writes `__pycache__` as usual.
    """
    if not sys.flags.dont_write_bytecode:
        return
    folder = Path(tempfile.gettempdir()) / f"anet-tests-pycache-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    state = folder.lstat()
    if not stat.S_ISDIR(state.st_mode) or state.st_uid != os.getuid() or state.st_mode & 0o077:
        return  # not a private folder of ours: bytecode from it could be anyone's
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    sys.dont_write_bytecode = False  # and this process (a run without -n collects here)
    sys.pycache_prefix = str(folder)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, each worker's share starts with its part of the tests marked `slow`.

    `--dist worksteal` (pytest_configure) hands each of the n workers a contiguous share of the
    list (the first len // n tests, then a share of the rest...), and a worker that ran out
    takes tests from the end of another's share. So the slow tests (tens of seconds each) are
    dealt round-robin to the heads of the shares: they start at once, side by side, and the
    short tests fill in around them; left in one share, one worker would run them all in a
    row while the other ran out of work. Every worker computes the same order, as xdist
    requires. Without xdist the slow tests simply come first.
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = iter(item for item in items if not item.get_closest_marker("slow"))
    ordered: list[pytest.Item] = []
    for worker in range(workers):
        share = (len(items) - len(ordered)) // (workers - worker)
        heads = slow[worker::workers]
        ordered += heads + list(itertools.islice(fast, max(0, share - len(heads))))
    ordered += fast  # what no share took (more slow tests than a share holds)
    items[:] = ordered


_SHARED: list[SshdCluster] = []
"""The session's shared clusters: their sshd listeners are the session's, not a test's leak."""
_TESTS = itertools.count()


_HOMES: list[Path] = []
"""The folder of this session's (this worker's) test homes, once made."""


def _homes(factory: pytest.TempPathFactory) -> Path:
    if not _HOMES:
        _HOMES.append(factory.mktemp("homes"))
    return _HOMES[0]


_PAYLOADS: list[Path] = []
"""The dispatcher payload this worker built once, to link into each test's cache."""


def _payloads(factory: pytest.TempPathFactory) -> list[Path]:
    """The dispatcher payload's cache file(s), built once per worker.

    Every `anet` a test starts builds the payload it ships (the dispatcher compiled and
    zipped: 0.06 s of CPU) unless its cache (`$XDG_CACHE_HOME/anet`) holds one built from the
    same sources; a test's home starts empty, so each of the suite's hundreds of `anet`
    processes built it again. Each home now starts with it, as a developer's cache holds it
    after the first run. Building it from nothing and a damaged cache are
    test_bootstrap_bytecode's; the hosts' own caches still start empty.
    """
    if not _PAYLOADS:
        from anet.remote.bootstrap import build_payload

        folder = factory.mktemp("payload")
        build_payload(folder)
        _PAYLOADS.extend(sorted(folder.glob("payload-*.zip")))
    return _PAYLOADS


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test, and every process it starts, gets a home of its own: anet's journals
    ($XDG_STATE_HOME/anet), hash cache ($XDG_CACHE_HOME/anet), local dispatcher home
    ($ANET_HOME, else ~/.cache/anet) and pool sockets ($XDG_RUNTIME_DIR/anet) land there,
    never in the developer's real ones, and no
    ANET_* setting of the developer's (ANET_HOSTS, ANET_PROGRESS...) changes what a test sees.

    The sshd hosts need nothing of $HOME: their keys, known_hosts and ssh_config are files of
    their own, and OpenSSH takes ~ from the password database anyway.

    After the test, anything it left running or open (processes, threads, fds) fails it.

    The homes are numbered folders of one session folder, made with a plain mkdir:
    `tmp_path_factory.mktemp` lists the whole temporary root to find its next number, which
    grows by two entries a test (some 4,000 in a worker's share of the suite)."""
    number = next(_TESTS)
    home = _homes(tmp_path_factory) / str(number)
    home.mkdir()
    cache = home / ".cache" / "anet"
    cache.mkdir(parents=True)
    for built in _payloads(tmp_path_factory):
        os.link(built, cache / built.name)
    mark = f"{os.getpid()}-{number}"
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith("ANET_")]:
            env.delenv(name)
        for name in ("COLUMNS", "LINES"):  # pytest-xdist's workers export 80x24, which rich
            env.delenv(name, raising=False)  # (the live view) believes over a test's pty size
        env.setenv("HOME", str(home))
        env.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
        env.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        env.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        env.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        env.setenv("ANET_HOME", str(home / ".cache" / "anet"))
        (home / "run").mkdir(mode=0o700)  # a pool's socket (anet up), as a login session's
        env.setenv("XDG_RUNTIME_DIR", str(home / "run"))
        before = leaks.snapshot()
        env.setenv(leaks.MARK_ENV, mark)
        yield home
    spared = frozenset(host.pid for shared in _SHARED for host in shared.hosts if host.pid)
    left = leaks.leftovers(before, mark, spared)
    if left:
        leaks.kill(left.procs)
        pytest.fail(f"the test left behind {left.describe()}", pytrace=False)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    """Four ordinary hosts shared by the whole session; never stop or freeze them in a test
    (use ``make_cluster``), or every later test would see a broken host."""
    with SshdCluster(tmp_path_factory.mktemp("cluster"), 4) as shared:
        _SHARED.append(shared)
        yield shared
        _SHARED.remove(shared)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Factory for a test's own hosts, ``make_cluster(n, noisy={1}, shims={2},
    extra_config=[...])`` (see SshdCluster); every cluster it made is closed after the test,
    even if the test failed."""
    made: list[SshdCluster] = []

    def make(
        n: int = 1,
        *,
        noisy: Collection[int] = frozenset(),
        shims: Collection[int] = frozenset(),
        extra_config: Collection[str] = (),
    ) -> SshdCluster:
        new = SshdCluster(
            tmp_path / f"cluster{len(made)}",
            n,
            noisy=noisy,
            shims=shims,
            extra_config=list(extra_config),
        )
        made.append(new)
        new.start()
        return new

    yield make
    errors = []
    for each in reversed(made):
        try:
            each.close()
        except Exception as exc:  # close them all before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def make_hostile(make_cluster: ClusterFactory) -> HostileFactory:
    """``own, bad = make_hostile(n=2)``: a test's own n hosts, the last of them hostile: a
    fake dispatcher (tests/hostile_dispatcher.py) that is honest until ``bad.behave(...)``."""

    def make(n: int = 2) -> tuple[SshdCluster, Hostile]:
        own = make_cluster(n, shims={n})
        return own, Hostile(own[f"host{n}"])

    return make


@pytest.fixture
def no_leftover_processes(cluster: SshdCluster) -> Iterator[None]:
    """Fail the test if, 3 s after it ends, any shared host still runs something it started.

    The leftovers are then killed (by restarting the host) so one leak fails one test only.
    """
    yield
    left = leftover_processes(cluster.hosts, grace=3.0)
    for name in left:
        cluster[name].stop()
        cluster[name].start()
    if left:
        pytest.fail(f"processes left running on the test hosts: {left}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Under a mutant of scripts/mutation, a test that uses more than MUTANT_TEST_CPU_S of CPU
    ends the run with mutmut's timeout status: a mutant that makes a state machine loop costs
    a minute, not mutmut's own bound of fifteen times the whole selection's duration."""
    if not (MUTATION and "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", "")):
        return (yield)
    previous = signal.signal(signal.SIGPROF, lambda *_: os._exit(MUTMUT_TIMEOUT_EXIT))
    signal.setitimer(signal.ITIMER_PROF, MUTANT_TEST_CPU_S)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs what a contributor may lack is skipped without it, saying why:
    Chromium (`browser`, some 100 packages), Slurm's scontrol (`slurm`) or root (`root`:
    mounts, iptables, another user's process). In CI (CI=true) it is never skipped but fails:
    CI has all of them."""
    why = _missing(item)
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI runs every test", pytrace=False)
    pytest.skip(why)


def _missing(item: pytest.Item) -> str | None:
    """What the test needs and this machine lacks, said as the skip reason (None: nothing)."""
    browser = item.get_closest_marker("browser") is not None
    if browser and not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "needs Chromium: scripts/dev-setup --browser installs it"
    if item.get_closest_marker("slurm") is not None and shutil.which("scontrol") is None:
        return "needs Slurm's scontrol (slurm-client): scripts/dev-setup installs it"
    root = item.get_closest_marker("root")
    if root is None:
        return None
    why = root.args[0]
    if os.geteuid() != 0:
        return f"needs root: {why} (CI runs as root)"
    for tool in root.kwargs.get("tools", ()):
        if shutil.which(tool) is None:
            return f"needs {tool}: {why} (scripts/dev-setup installs it)"
    return None
