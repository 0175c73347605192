"""`anet --find`, `--killall`, `--onall` and `anet hosts check|scan` against real sshd hosts.

The fixture hosts are sshd processes on this machine, all logging in the same user, so every
host sees the same processes: the planted ones are started here, by the test, and each host's
dispatcher must list them while never listing anet itself (the master's own command line holds
the pattern, as the old `ps | grep` did).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster
from test_cli_ssh import _host_with_python, _pyenv_python

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

DOWN = "127.0.0.1:1"  # nobody listens on port 1: connection refused
SLEEPER = "sleep 300; true"  # not a lone command, which sh would exec (losing its name)


def anet(cluster: SshdCluster | None, *args: str, config: Path | None = None, timeout: float = 90):
    args_list = list(args)
    if cluster is not None or config is not None:  # after the command's name, before any `--`
        at = 2 if args_list[0] == "hosts" else 1
        args_list[at:at] = ["--ssh-config", str(config or cluster.ssh_config)]  # type: ignore[union-attr]
    argv = [sys.executable, "-m", "anet", *args_list]
    return subprocess.run(
        argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, text=True
    )


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                found.append(int(entry))
    return found


class Planted:
    """Processes with distinctive command lines, each in its own session; all killed at the end."""

    def __init__(self) -> None:
        self.marker = f"anet-test-{uuid.uuid4().hex[:10]}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, script: str, tag: str) -> subprocess.Popen[bytes]:
        # `sh -c SCRIPT NAME`: NAME is $0, and it shows in the command line anet matches.
        proc = subprocess.Popen(
            ["sh", "-c", script, f"{self.marker}-{tag}"], start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def wait_started(self, count: int) -> None:
        """Until `count` sleeps run in the planted groups (the shells have forked them)."""
        deadline = time.monotonic() + 10
        while sum(len(group_members(p.pid)) for p in self.procs) < count:
            assert time.monotonic() < deadline, "planted processes did not start"
            time.sleep(0.02)

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def planted() -> Iterator[Planted]:
    made = Planted()
    try:
        yield made
    finally:
        made.close()


# -- find -------------------------------------------------------------------------------------


def test_find_lists_planted_processes_on_every_host_and_never_anet(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    group = planted.start("sleep 300 & sleep 300 & wait", "group")
    planted.wait_started(2 + 3)
    done = anet(cluster, "--find", planted.marker, "-S", "host[1-2]", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    rows = jsonl(done.stdout)
    assert {(r["host"], r["pid"]) for r in rows} == {
        (host, pid) for host in ("host1", "host2") for pid in (sleeper.pid, group.pid)
    }  # the master's `anet --find MARKER` matches too, yet it is not listed
    by_pid = {r["pid"]: r for r in rows if r["host"] == "host1"}
    assert by_pid[group.pid]["group"] == 3 and by_pid[sleeper.pid]["group"] == 2
    assert by_pid[sleeper.pid]["command"] == f"sh -c {SLEEPER} {planted.marker}-sleeper"
    assert by_pid[sleeper.pid]["user"] == cluster.user

    table = anet(cluster, "--find", planted.marker, "-S", "host1")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["HOST", "PID", "USER", "ELAPSED", "%CPU", "%MEM", "COMMAND"]
    assert len(lines) == 3 and all(line.startswith("host1 ") for line in lines[1:])


def test_find_never_lists_anet_dispatchers_or_ssh_sessions(cluster):
    # Each host's dispatcher runs `python3 -S -c import zlib;exec(...)` under an sshd
    # session: a pattern matching them must still list nothing of anet's own.
    for pattern in ("zlib;exec", "bytes.fromhex", "zlib.decompress", "^sshd", "sshd: .*@notty"):
        done = anet(cluster, "--find", pattern, "-S", "host1", "-S", "host2", "--format", "jsonl")
        assert done.returncode == 1, (pattern, done.stdout, done.stderr)
        assert done.stdout == ""


def test_find_reports_a_down_host_and_still_answers_for_the_others(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    done = anet(cluster, "--find", planted.marker, "-S", "host1", "-S", DOWN)
    assert done.returncode == 3
    assert f"anet: {DOWN}: connection refused" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert str(sleeper.pid) in done.stdout
    data = anet(cluster, "--find", planted.marker, "-S", DOWN, "--format", "jsonl")
    assert data.returncode == 3
    assert jsonl(data.stdout) == [
        {"host": DOWN, "error": "connection refused: is sshd running on that address and port?"}
    ]


def test_a_bad_pattern_is_one_clear_line(cluster):
    done = anet(cluster, "--find", "sleep(", "-S", "host1")
    assert done.returncode == 255
    assert done.stderr.startswith("anet: bad pattern 'sleep(':") and "Traceback" not in done.stderr


# -- killall ----------------------------------------------------------------------------------


def test_killall_dry_run_kills_nothing(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    planted.wait_started(2)
    done = anet(cluster, "--killall", planted.marker, "--dry-run", "-S", "host1")
    assert done.returncode == 0, done.stderr
    assert "would kill" in done.stdout and str(sleeper.pid) in done.stdout
    time.sleep(0.3)
    assert alive(sleeper.pid) and len(group_members(sleeper.pid)) == 2


def test_killall_terms_groups_and_kills_the_survivors(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    group = planted.start("sleep 300 & sleep 300 & wait", "group")
    stubborn = planted.start("trap '' TERM; sleep 300; true", "stubborn")  # sleep ignores TERM
    planted.wait_started(2 + 3 + 2)
    started = time.monotonic()
    done = anet(
        cluster, "--killall", planted.marker, "-S", "host1", "--grace", "1", "--format", "jsonl"
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    results = {r["pid"]: r["result"] for r in jsonl(done.stdout)}
    assert results == {
        sleeper.pid: "killed",
        group.pid: "killed",
        stubborn.pid: "killed by KILL",
    }
    for proc in (sleeper, group, stubborn):
        assert group_members(proc.pid) == []  # children included: the whole group is gone
    again = anet(cluster, "--killall", planted.marker, "-S", "host1")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == f"anet: no process matches {planted.marker!r}\n"


def test_killall_never_kills_the_master_whose_command_line_matches(cluster, planted):
    # The pattern is in the master's own argv on this very machine, and host1..2 run here:
    # the old `ps | grep PATTERN | kill` killed its grep; anet must survive and report.
    sleeper = planted.start(SLEEPER, "sleeper")
    done = anet(cluster, "--killall", planted.marker, "-S", "host1", "-S", "host2")
    assert done.returncode == 0, done.stderr
    assert not alive(sleeper.pid)
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    # Both hosts are this machine: the faster one kills the sleeper; the slower one lists it
    # and finds it gone, or lists it after its death and reports nothing.
    hosts = [row[0] for row in rows]
    assert hosts and set(hosts) <= {"host1", "host2"} and len(hosts) == len(set(hosts))
    assert "killed" in {row[-1] for row in rows}
    assert {row[-1] for row in rows} <= {"killed", "gone"}  # "already gone" for the slower


def test_killall_with_a_pattern_matching_anet_and_ssh_would_kill_nothing_of_them(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")  # its name holds "anet": one sure match
    argv = [sys.executable, "-m", "anet", "--killall", "zlib|sshd|anet", "--dry-run"]
    argv += ["--ssh-config", str(cluster.ssh_config), "-S", "host1", "--format", "jsonl"]
    master = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = master.communicate(timeout=90)
    assert master.returncode == 0, err
    rows = jsonl(out)
    assert sleeper.pid in {row["pid"] for row in rows}  # the rows below are a real listing
    for row in rows:
        assert "zlib;exec" not in row["command"]
        assert not row["command"].startswith("sshd")
        assert row["pid"] not in (master.pid, os.getpid())


def test_killall_reports_a_down_host(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    done = anet(cluster, "--killall", planted.marker, "-S", "host1", "-S", DOWN)
    assert done.returncode == 3
    assert "killed" in done.stdout
    assert not alive(sleeper.pid)  # the live host's part was done, not only said
    assert f"anet: {DOWN}: connection refused" in done.stderr


def test_killall_with_another_signal_only_sends_it(cluster, planted, tmp_path):
    got = tmp_path / "got"  # the shell's trap records each USR1 it receives
    proc = planted.start(f"trap 'echo USR1 >> {got}' USR1; while :; do sleep 0.05; done", "usr1")
    planted.wait_started(1)
    done = anet(cluster, "--killall", planted.marker, "-S", "host1", "--signal", "USR1")
    assert done.returncode == 0, done.stderr
    assert "sent USR1" in done.stdout
    deadline = time.monotonic() + 10  # the trap runs once the loop's current sleep ends
    while not got.exists():
        assert time.monotonic() < deadline, "killall said it sent USR1; the process never got it"
        time.sleep(0.02)
    assert got.read_text() == "USR1\n"  # received once, and it did not end the process
    assert alive(proc.pid)
    bad = anet(cluster, "--killall", planted.marker, "-S", "host1", "--signal", "NOPE")
    assert bad.returncode == 255 and bad.stderr == "anet: unknown signal 'NOPE'\n"


# -- onall ------------------------------------------------------------------------------------


def test_onall_folds_identical_outputs_and_counts_failed_hosts(cluster):
    command = 'echo same; if [ "$ANET_HOST" = host3 ]; then echo odd >&2; exit 3; fi'
    done = anet(cluster, "--onall", command, "-S", "host[1-4]", "-S", DOWN)
    assert done.returncode == 2, done.stderr  # host3 and the down host
    assert done.stdout == (
        "== host[1-2,4] (3 hosts): exit 0 ==\nsame\n"
        "== host3: exit 3 ==\nsame\nodd\n"
        f"== {DOWN}: connection refused: is sshd running on that address and port? ==\n"
    )
    unfolded = anet(cluster, "--onall", command, "-S", "host[1-2]", "--no-fold")
    assert unfolded.returncode == 0
    assert unfolded.stdout == "== host1: exit 0 ==\nsame\n== host2: exit 0 ==\nsame\n"


def test_onall_runs_once_per_host_in_its_home_and_reports_signals(cluster):
    done = anet(cluster, "--onall", "-S", "4/host1", "-S", "host2", "--format", "jsonl",
                "--", 'pwd; [ "$ANET_HOST" = host2 ] && kill -9 $$; true')  # fmt: skip
    assert done.returncode == 1, done.stderr
    by_host = {r["host"]: r for r in jsonl(done.stdout)}
    assert by_host["host1"]["stdout"] == f"{cluster['host1'].home}\n"  # once, not once a slot
    assert by_host["host1"]["exit"] == 0
    assert by_host["host2"]["signal"] == 9 and by_host["host2"]["exit"] is None


# -- hosts check and host keys ----------------------------------------------------------------


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _entry(name: str, host, known_hosts: Path, key: Path) -> str:
    return (
        f"Host {name}\n    HostName {host.address}\n    Port {host.port}\n    User {host.user}\n"
        f"    IdentityFile {key}\n    IdentitiesOnly yes\n    UserKnownHostsFile {known_hosts}\n"
    )


def test_hosts_check_tells_good_wrong_key_unknown_changed_and_down_apart(cluster, tmp_path):
    h1, h2, h3 = cluster["host1"], cluster["host2"], cluster["host3"]
    known = cluster.known_hosts.read_text().splitlines()
    # host3's line carries host4's key: the key host3 sends has "changed".
    changed = f"{known[2].split()[0]} {' '.join(known[3].split()[1:])}"
    mixed = tmp_path / "known_hosts"
    mixed.write_text(f"{known[0]}\n{changed}\n")  # host2 is absent: unknown
    wrong = _keygen(tmp_path / "wrong_key")
    config = tmp_path / "ssh_config"
    config.write_text(
        _entry("good", h1, mixed, cluster.client_key)
        + _entry("wrongkey", h1, mixed, wrong)
        + _entry("stranger", h2, mixed, cluster.client_key)
        + _entry("changed", h3, mixed, cluster.client_key)
    )
    ok_file = tmp_path / "ok.txt"
    args = ("hosts", "check", "-S", "good", "-S", "wrongkey", "-S", "stranger", "-S", "changed")
    done = anet(None, *args, "-S", DOWN, "--format", "jsonl", "--write-ok", str(ok_file),
                config=config)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    rows = {r["host"]: r for r in jsonl(done.stdout)}
    assert list(rows) == ["good", "wrongkey", "stranger", "changed", DOWN]
    good = rows["good"]
    assert good["ok"] and good["key"] == "known" and good["auth"] is True
    assert good["python"].startswith("3.") and good["cores"] >= 1
    assert good["mem_free_kb"] > 0 and good["disk_free_kb"] > 0 and good["load"] >= 0
    assert (rows["wrongkey"]["key"], rows["wrongkey"]["auth"]) == ("known", False)
    assert rows["wrongkey"]["error"].startswith("authentication failed")
    assert (rows["stranger"]["key"], rows["stranger"]["ok"]) == ("unknown", False)
    assert "--accept-new-hosts" in rows["stranger"]["error"]
    assert rows["changed"]["key"] == "CHANGED"
    assert rows["changed"]["error"].startswith("HOST KEY CHANGED")
    assert rows[DOWN]["key"] is None and "connection refused" in rows[DOWN]["error"]
    assert ok_file.read_text() == "good\n"
    assert mixed.read_text() == f"{known[0]}\n{changed}\n"  # nothing recorded without the flag

    table = anet(None, *args, config=config)
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["HOST", "STATUS", "KEY", "AUTH", "PYTHON"]
    assert table.stdout.splitlines()[1].split()[:4] == ["good", "ok", "known", "yes"]


def test_accept_new_hosts_records_a_new_key_and_still_refuses_a_changed_one(cluster, tmp_path):
    h1 = cluster["host1"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(_entry("newbie", h1, known_hosts, cluster.client_key))
    batch = tmp_path / "batch.txt"
    batch.write_text("echo hi\n")

    refused = anet(None, "run", "-S", "newbie", str(batch), "--no-journal", config=config)
    assert refused.returncode == 255 and "host key of" in refused.stderr
    accepted = anet(None, "run", "-S", "newbie", str(batch), "--no-journal", "--format",
                    "text", "--accept-new-hosts", config=config)  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    recorded = known_hosts.read_text().split()
    public = (h1.dir / "ssh_host_ed25519_key.pub").read_text().split()
    assert recorded == [f"[{h1.address}]:{h1.port}", public[0], public[1]]
    again = anet(None, "--onall", "true", "-S", "newbie", config=config)
    assert again.returncode == 0, again.stderr  # known now, without the flag

    other = (cluster["host2"].dir / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts.write_text(f"[{h1.address}]:{h1.port} {other[0]} {other[1]}\n")
    before = known_hosts.read_text()
    changed = anet(None, "--onall", "true", "-S", "newbie", "--accept-new-hosts", config=config)
    assert changed.returncode == 1
    assert f"newbie: HOST KEY CHANGED: [{h1.address}]:{h1.port} sent a key" in changed.stdout
    assert known_hosts.read_text() == before  # a changed key is never written over


# -- scan -------------------------------------------------------------------------------------


@pytest.fixture
def not_ssh() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and speaks HTTP, not SSH."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_scan_finds_the_ssh_servers_of_a_range_and_checks_them(cluster, not_ssh, tmp_path):
    ports = [arg for h in cluster.hosts for arg in ("-p", str(h.port))]
    ok_file = tmp_path / "ok.txt"
    done = anet(cluster, "hosts", "scan", "127.0.0.0/29", *ports, "-p", str(not_ssh),
                "--format", "jsonl", "--write-ok", str(ok_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = [f"{h.address}:{h.port}" for h in cluster.hosts]
    rows = jsonl(done.stdout)
    assert [r["host"] for r in rows] == expected  # not the HTTP port, no address twice
    assert all(r["ok"] and r["key"] == "known" for r in rows)
    assert ok_file.read_text().split() == expected

    listed = anet(None, "hosts", "scan", "127.0.0.[1-3]", *ports, "--no-check")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == expected[:2]
    assert "SSH-2.0-OpenSSH" in listed.stdout

    nothing = anet(None, "hosts", "scan", "127.0.0.1", "-p", str(not_ssh), "--timeout", "0.5")
    assert nothing.returncode == 1
    assert nothing.stderr == "anet: no SSH server answered at 1 address(es)\n"


def test_scan_rejects_a_bad_range_in_one_line():
    done = anet(None, "hosts", "scan", "10.0.0.0/33")
    assert done.returncode == 255
    assert done.stderr.startswith("anet: bad address range '10.0.0.0/33'")


@pytest.mark.skipif(_pyenv_python("3.8") is None, reason="needs a Python 3.8 interpreter")
def test_find_and_check_work_on_a_python_3_8_host(make_cluster, tmp_path, planted):
    own = _host_with_python(make_cluster, _pyenv_python("3.8"), tmp_path)
    sleeper = planted.start(SLEEPER, "py38")
    found = anet(own, "--find", planted.marker, "-S", "host1", "--format", "jsonl")
    assert found.returncode == 0, found.stderr
    assert [r["pid"] for r in jsonl(found.stdout)] == [sleeper.pid]
    checked = anet(own, "hosts", "check", "-S", "host1", "--format", "jsonl")
    assert checked.returncode == 0, checked.stderr
    assert jsonl(checked.stdout)[0]["python"].startswith("3.8.")
