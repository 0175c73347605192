"""A run that is over does not wait for hosts that have nothing to stop.

A one-job run on four hosts is done as soon as the first host ran the job; the other three may
still be starting their dispatchers (four Pythons booting on a small box). Waiting for each of
them to boot, read its Shutdown and say Bye cost the whole command most of its time. A host
with no attempt running and no request open has no job to kill: its connection is closed at
once, and its dispatcher, which ends when its master goes (EOF), ends on its own.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sshd_hosts import STOCK_PATH, SshdHost, leftover_processes

from anet import results
from anet.api import SHUTDOWN_TIMEOUT, Cluster
from anet.remote.connect import SshOptions
from dispatcher.protocol import STUB_MARK


def held_python(host: SshdHost, gate: Path) -> None:
    """The host's `python3` holds the dispatcher stub until `gate` exists (a loaded or slow
    machine, as slow as the test likes: no fixed boot time to wait out); its other uses (jobs)
    are the host's own python3."""
    shim = host.shims / "python3"
    shim.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *{shlex.quote(STUB_MARK)}*)'
        f" while [ ! -e {gate} ]; do sleep 0.05; done ;; esac\n"
        f'PATH={STOCK_PATH} exec python3 "$@"\n'
    )
    shim.chmod(0o755)


def test_a_finished_run_does_not_wait_for_a_host_still_booting(make_cluster, tmp_path):
    """host2's dispatcher is held at a gate until the run has ended: a run that waited for it
    would wait out its whole shutdown bound (SHUTDOWN_TIMEOUT) and say so."""
    own = make_cluster(2, shims={2})
    gate = tmp_path / "boot-gate"
    held_python(own["host2"], gate)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo done\n")
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(own.ssh_config)]
    argv += ["-S", "host1", "-S", "host2", "--format", "jsonl", "--no-journal", str(batch)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the one result: the run is over from here
        ended = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - ended  # not Python's start, seconds on a loaded machine
    finally:
        gate.touch()  # host2's dispatcher boots now, cut off or not
    assert proc.returncode == 0, err
    [result] = results.read(io.BytesIO(line + out))
    assert (result.host, result.stdout) == ("host1", b"done\n")
    assert b"did not stop in time" not in err, err
    assert took < SHUTDOWN_TIMEOUT, f"waited {took:.1f}s for host2's dispatcher to boot"
    assert own["host2"].accepted_connections() == 1, "host2 was never tried: nothing was tested"
    # host2's dispatcher, cut off while booting, ends on its own once it starts
    assert leftover_processes([own["host2"]], grace=20) == {}


def test_a_finished_run_does_not_wait_for_the_bye_of_a_host_that_ran_its_jobs(make_cluster):
    """Once every run has ended, no job of ours runs anywhere: a host's Bye is not waited
    for. Its dispatcher is frozen here, so a wait would last the whole shutdown bound."""
    own = make_cluster(1)

    async def run_then_leave() -> tuple[list[bytes], int, float]:
        cluster = Cluster(["host1"], ssh=SshOptions(config=own.ssh_config))
        async with cluster:
            outputs = [result.stdout async for result in cluster.run(["echo hi"])]
            hello = cluster._sessions["host1"].hello
            assert hello is not None
            os.kill(hello.pid, signal.SIGSTOP)  # its Bye would never come
            leaving = time.monotonic()
        return outputs, hello.pid, time.monotonic() - leaving

    outputs, pid, took = asyncio.run(run_then_leave())
    os.kill(pid, signal.SIGCONT)  # it finds its master gone and ends
    assert outputs == [b"hi\n"]
    assert took < SHUTDOWN_TIMEOUT / 2, f"waited {took:.1f}s for the frozen dispatcher's Bye"
    assert leftover_processes(own.hosts, grace=20) == {}


def test_a_run_cut_short_still_waits_for_its_jobs_to_be_killed(make_cluster):
    """A run left early (the consumer stopped) has attempts still running: the host is
    stopped in order, and its jobs are gone when the cluster is. This one ignores SIGTERM,
    so its dispatcher kills it only after a grace period: a cut connection would not wait."""
    own = make_cluster(1)

    async def leave_early() -> None:
        cluster = Cluster(["2/host1"], ssh=SshOptions(config=own.ssh_config))
        async with cluster:
            async for _ in cluster.run(["sleep 0.5; echo first", "trap '' TERM; sleep 300"]):
                break  # the sleep has run for half a second when the cluster closes

    asyncio.run(leave_early())
    assert not any("sleep 300" in cmd for _, cmd in own["host1"].processes())


@pytest.mark.parametrize(
    ("asked", "worked", "runs", "cut"),
    [
        (False, False, False, True),  # connected, never given anything
        (False, False, True, True),  # still booting while a run went on elsewhere
        (False, True, False, True),  # ran jobs; every run is over
        (False, True, True, False),  # a run under way (or its killed attempts ending)
        (True, False, False, False),  # a request's command (onall) may outlive its caller
        (True, True, False, False),
    ],
)
def test_which_hosts_are_cut_and_which_stopped_in_order(asked, worked, runs, cut):
    cluster = Cluster([":"])
    if runs:
        cluster._drives.append(object())  # type: ignore[arg-type]  # only counted
    session = SimpleNamespace(asked=asked, worked=worked)
    assert cluster._runs_nothing(session) is cut  # type: ignore[arg-type]


def test_a_finished_run_cuts_its_hosts_without_a_word(make_cluster):
    """Once every run is over, a host with nothing of ours running is cut, and nothing more is
    said to it: no Shutdown, no EOF, no channel close, no SSH disconnect (four packets a host,
    each encrypted and written on the path of every run's exit). The end of its connection
    ends its dispatcher's stdin, and the dispatcher ends."""
    own = make_cluster(2)

    async def run_then_leave() -> tuple[list[bytes], dict[str, int], dict[str, int]]:
        cluster = Cluster(["host1", "host2"], ssh=SshOptions(config=own.ssh_config))
        async with cluster:
            outputs = [result.stdout async for result in cluster.run(["echo hi"])]
            while not all(state.ever_ready for state in cluster.hosts.values()):
                await asyncio.sleep(0.01)  # both serving: both would be told
            sessions = dict(cluster._sessions)
            before = {label: session.bytes_sent for label, session in sessions.items()}
        return outputs, before, {label: session.bytes_sent for label, session in sessions.items()}

    outputs, before, after = asyncio.run(run_then_leave())
    assert outputs == [b"hi\n"]
    assert after == before, "a Shutdown frame went to a host about to be cut"
    for host in own.hosts:
        assert "Received disconnect" not in host.log.read_text(), host.log_tail()
    assert leftover_processes(own.hosts, grace=20) == {}
