"""The sshd test hosts themselves, checked with the real OpenSSH client."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import sshd_hosts
from sshd_hosts import SshdCluster, SshdError, SshdHost, leftover_processes
from waiting import wait_until


def ssh(
    cluster: SshdCluster, host: str, command: str, *options: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cluster.ssh_argv(host, command, *options),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def ok(cluster: SshdCluster, host: str, command: str) -> str:
    result = ssh(cluster, host, command)
    assert result.returncode == 0, result.stderr
    return result.stdout


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def settled_state(pid: int, want: str, within: float = 5.0) -> str:
    """The process's state once it is `want`, or whatever it is after `within` seconds: a
    signal is delivered asynchronously, so a loaded machine may show the old state a moment."""
    deadline = time.monotonic() + within
    while (now := state(pid)) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return now


def wait_for(host: SshdHost, command: str) -> int:
    """The pid of ``command`` once the host runs it (its login may still be busy before)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid, cmdline in host.processes():
            if cmdline == command:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"{host.name} never ran {command!r}: {host.processes()}")


def test_every_host_runs_commands_with_key_auth(cluster: SshdCluster) -> None:
    for host in cluster.hosts:
        assert ok(cluster, host.name, "echo ok; id -un") == f"ok\n{cluster.user}\n"
        assert host.address.startswith("127.0.0.")
    assert len({host.address for host in cluster.hosts}) == 4


def test_host_keys_are_verified(cluster: SshdCluster, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    result = ssh(cluster, "host1", "true", "-o", f"UserKnownHostsFile={empty}")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    # host2's key does not pass for host1: each host has its own key.
    host1, host2 = cluster["host1"], cluster["host2"]
    swapped = tmp_path / "swapped_known_hosts"
    host2_key = host2.host_key.with_name(host2.host_key.name + ".pub").read_text().split()
    swapped.write_text(f"[{host1.address}]:{host1.port} {host2_key[0]} {host2_key[1]}\n")
    result = ssh(cluster, "host1", "true", "-o", f"UserKnownHostsFile={swapped}")
    assert result.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_spec_reaches_the_host_without_the_alias(cluster: SshdCluster) -> None:
    host = cluster["host3"]
    user_at_address, port = host.spec.rsplit(":", 1)
    result = ssh(cluster, user_at_address, "echo $ANET_HOME", "-p", port)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{host.anet_home}\n"


def test_anet_home_and_home_differ_per_host(cluster: SshdCluster) -> None:
    for host in cluster.hosts:
        assert (
            ok(cluster, host.name, 'echo "$ANET_HOME $HOME"') == f"{host.anet_home} {host.home}\n"
        )
    assert len({host.anet_home for host in cluster.hosts}) == 4
    assert len({host.home for host in cluster.hosts}) == 4


def test_accepted_connections_counts_logins(cluster: SshdCluster) -> None:
    host = cluster["host2"]
    before = host.accepted_connections()
    for _ in range(3):
        ok(cluster, "host2", "true")
    assert host.accepted_connections() == before + 3


def test_noisy_host_prints_its_banner_before_the_command(make_cluster) -> None:
    hosts = make_cluster(2, noisy={2})
    assert ok(hosts, "host1", "echo hi") == "hi\n"
    result = ssh(hosts, "host2", "echo hi; bash -c 'echo nested'; exit 3")
    assert result.returncode == 3
    assert result.stdout == (
        "Welcome to host2 (noisy login banner)\nLast login: a while ago\nhi\nnested\n"
    )
    assert "host2: noisy login banner on stderr" in result.stderr
    assert ok(hosts, "host2", "printenv ANET_HOME").endswith(f"{hosts['host2'].anet_home}\n")


def test_stop_kills_everything_the_host_started_and_start_restores_it(make_cluster) -> None:
    hosts = make_cluster(1)
    host = hosts["host1"]
    port, listener = host.port, host.pid
    session = subprocess.Popen(
        hosts.ssh_argv("host1", "sleep 300"), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # A daemon that escaped its session and was reparented to init.
    daemon = int(ok(hosts, "host1", "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo $!"))
    assert wait_for(host, "sleep 301") == daemon
    wait_for(host, "sleep 300")

    host.stop()
    assert not host.alive
    assert host.pid is None
    assert host.processes() == []
    assert not Path(f"/proc/{listener}").exists() or state(listener) == "Z"
    assert session.wait(10) == 255  # the client saw its connection die
    refused = ssh(hosts, "host1", "true", "-o", "ConnectTimeout=2")
    assert refused.returncode == 255

    host.start()
    assert host.alive
    assert host.port == port
    assert ok(hosts, "host1", "echo back") == "back\n"  # same key: known_hosts still matches
    assert host.accepted_connections() == 3


def test_freeze_hangs_new_and_open_sessions_and_thaw_restores(make_cluster) -> None:
    hosts = make_cluster(1)
    host = hosts["host1"]
    session = subprocess.Popen(
        hosts.ssh_argv("host1", "sleep 300"), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sleeper = wait_for(host, "sleep 300")

    host.freeze()
    assert host.alive
    assert host.frozen
    assert settled_state(sleeper, "T") == "T"
    started = time.monotonic()
    hung = ssh(hosts, "host1", "true", "-o", "ConnectTimeout=2")
    assert hung.returncode == 255
    assert "timed out" in hung.stderr
    assert time.monotonic() - started >= 1.5

    host.thaw()
    assert not host.frozen
    assert settled_state(sleeper, "S") != "T"
    assert ok(hosts, "host1", "echo thawed") == "thawed\n"
    session.kill()
    session.wait()


def test_close_leaves_nothing_running(tmp_path: Path) -> None:
    with SshdCluster(tmp_path, 2) as hosts:
        listeners = [host.pid for host in hosts.hosts]
        for host in hosts.names:
            ok(hosts, host, "setsid sleep 302 </dev/null >/dev/null 2>&1 &")

        def strays() -> list[int] | None:  # a backgrounded sleep may not be seen at once
            pids = [pid for host in hosts.hosts for pid, _ in host.processes()]
            return pids if len(pids) >= 2 else None

        stray = wait_until(strays, 10, "both strays running")
        assert len(stray) == 2
    for pid in [*listeners, *stray]:
        assert not Path(f"/proc/{pid}").exists() or state(pid) == "Z", pid
    assert all(not host.alive for host in hosts.hosts)
    hosts.close()  # idempotent


def test_leftover_processes_reports_a_stray_after_the_grace(make_cluster) -> None:
    hosts = make_cluster(2)
    ok(hosts, "host2", "setsid sleep 303 </dev/null >/dev/null 2>&1 &")
    ok(hosts, "host1", "true")
    started = time.monotonic()
    left = leftover_processes(hosts.hosts, grace=0.5)
    assert time.monotonic() - started >= 0.5
    assert [name for name in left] == ["host2"]
    assert [cmd for _, cmd in left["host2"]] == ["sleep 303"]


def test_shared_cluster_is_left_clean(cluster: SshdCluster, no_leftover_processes) -> None:
    ok(cluster, "host4", "sleep 0.2 &")  # exits within the grace period


def test_a_bad_sshd_config_fails_with_the_log(tmp_path: Path) -> None:
    hosts = SshdCluster(tmp_path, 1, extra_config=["NoSuchOption yes"])
    with pytest.raises(SshdError, match="NoSuchOption"):
        hosts.start()
    assert not hosts["host1"].alive


def test_missing_sshd_is_an_error_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sshd_hosts, "SSHD_FALLBACK", tmp_path / "sshd")
    with pytest.raises(SshdError, match="openssh-server"):
        sshd_hosts.find_sshd()


@pytest.mark.root("a partition cuts the host off with iptables", tools=("iptables",))
def test_a_partition_cuts_off_that_host_only(make_cluster) -> None:
    """Every cluster on this machine uses the same 127.0.0.x addresses (other ports): cutting
    one host off must leave another cluster's host on the same address alone, or two test runs
    sharing a machine break each other's hosts."""
    mine, neighbours = make_cluster(1), make_cluster(1)
    cut, neighbour = mine["host1"], neighbours["host1"]
    assert cut.address == neighbour.address and cut.port != neighbour.port
    try:
        cut.partition()
        assert ok(neighbours, "host1", "echo reachable") == "reachable\n"
        silent = ssh(mine, "host1", "true", "-o", "ConnectTimeout=2")
        assert silent.returncode == 255 and "timed out" in silent.stderr, silent.stderr
        assert len(sshd_hosts.partition_rules()) == 2
    finally:
        cut.heal()
    assert sshd_hosts.partition_rules() == []
    assert ok(mine, "host1", "echo back") == "back\n"
