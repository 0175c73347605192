"""Shared fixtures: real OpenSSH sshd hosts on loopback (see sshd_hosts.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest
from hostile_dispatcher import Hostile
from sshd_hosts import SshdCluster, leftover_processes

ClusterFactory = Callable[..., SshdCluster]
HostileFactory = Callable[..., tuple[SshdCluster, Hostile]]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    """Four ordinary hosts shared by the whole session; never stop or freeze them in a test
    (use ``make_cluster``), or every later test would see a broken host."""
    with SshdCluster(tmp_path_factory.mktemp("cluster"), 4) as shared:
        yield shared


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `browser` test needs Chromium, which costs a contributor some 100 packages: without
    it the test is skipped, saying why; in CI (CI=true) it is never skipped, it fails."""
    if item.get_closest_marker("browser") is None:
        return
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    why = "needs Chromium: scripts/dev-setup --browser installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI runs every test", pytrace=False)
    pytest.skip(why)
