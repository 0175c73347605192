"""SSH hosts are connected before the master's imports, and the run takes those connections.

`anet`'s entry point reads the arguments before click does (`ssh_hosts`); for `anet run|sync
-S H...` it starts the handshakes and the dispatchers at once (anet/remote/earlyssh.py), so
that sshd's side and the dispatchers' boots run while the master imports the run's modules.
The run's Connector takes each connection (one login per host, not two), and a connection no
run took (a usage error) is closed when anet exits, its dispatcher gone with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anet.api import KEEPALIVE
from anet.argscan import ssh_hosts
from anet.cli import COMMANDS
from anet.cli.common import HostArgs
from anet.remote.connect import SshOptions

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "found"),
    [
        (["run", "-S", "h1", "-S", "h2", "b.txt"], (["h1", "h2"], [], None, "b.txt")),
        (["run", "--ssh-config", "c", "-S", "4/h1", "b.txt"], (["4/h1"], [], "c", "b.txt")),
        (["run", "--ssh-config=c", "--host=u@h1:22", "b.txt"], (["u@h1:22"], [], "c", "b.txt")),
        (["sync", "-Sh1", "deps/"], (["h1"], [], None, None)),
        (["run", "b.txt"], None),  # no host named: here, $ANET_HOSTS or a pool
        (["-S", "h1", "b.txt"], (["h1"], [], None, "b.txt")),  # `run` unsaid, as README's examples
        (["b.txt", "-S", "h1"], (["h1"], [], None, "b.txt")),
        (["-S", "h1", "status"], None),  # a verb, not a batch
        (["-S", "h1", "--find", "x"], None),
        (["run", "-S", "h1", "-H", "hosts.txt", "b.txt"], (["h1"], ["hosts.txt"], None, "b.txt")),
        (["-Hhosts.txt", "--hosts=slurm", "b.txt"], ([], ["hosts.txt", "slurm"], None, "b.txt")),
        (["-H", "hosts.txt"], None),  # no batch: a usage error, or the batch on stdin
        (["-q", "-S", "h1", "-k", "--format", "msgpack", "-j", "2", "b"], (["h1"], [], None, "b")),
        (["-S", "h1", "--format=jsonl", "--journal", "j", "b.txt"], (["h1"], [], None, "b.txt")),
        (["-S", "h1", "--format", "b.txt"], None),  # b.txt is --format's value: no batch
        (["-qk", "-S", "h1", "b.txt"], None),  # a cluster of flags: not read so far
        (["run", "-S", "h1", "--keepalive", "30", "b.txt"], None),  # other ssh options
        (["run", "-S", "h1", "--accept-new-hosts", "b.txt"], None),
        (["run", "-S", "h1", "--dry-run", "b.txt"], None),
        (["run", "-S", "h1", "--help"], None),
        (["run", "-S", "h1", "echo", "{}", ":::", "a"], None),  # command mode
        (["run", "-S", "h1"], None),
        (["run", "-S"], None),
        (["status", "-S", "h1", "b.txt"], None),
    ],
)
def test_which_arguments_connect_early(args, found):
    assert ssh_hosts(args, COMMANDS) == found


def test_the_early_options_are_those_a_run_without_ssh_options_builds(tmp_path):
    """Connector.connect takes an early connection only when its options are these: were
    the defaults to part, no run would take one (the early start then only costs time)."""
    config = tmp_path / "ssh_config"
    built = HostArgs(hosts=("h1",), ssh_config=config).ssh_options(KEEPALIVE)
    assert built == SshOptions(config=config)


WATCH = """
import runpy, sys
from anet.remote import earlyssh, transport
def say(*words):  # one write: the early thread says things while the main thread does
    sys.stderr.write(" ".join(map(str, words)) + "\\n")
start, take, take_process = earlyssh.start, earlyssh.take, earlyssh.take_process
def watched_start(specs, connector, factory):
    start(specs, connector, factory)
    say("started with anet.api loaded:", "anet.api" in sys.modules)
    say("started with click loaded:", "click" in sys.modules)
def watched_take(connector, spec):
    early = earlyssh._early
    task = take(connector, spec)
    if early is None or connector is not early.connector:  # the run's, not the early one's
        say("taken:", spec.label, task is not None)
    return task
def watched_take_process(conn, command):
    process = take_process(conn, command)
    say("process taken:", process is not None)
    return process
earlyssh.start, earlyssh.take = watched_start, watched_take
earlyssh.take_process = watched_take_process
from anet.remote import preconnect
take_socket = preconnect.take
async def watched_take_socket(host, port):
    sock = await take_socket(host, port)
    say("early socket:", sock is not None)
    return sock
preconnect.take = watched_take_socket
sys.argv = ["anet", *sys.argv[1:]]
runpy.run_module("anet", run_name="__main__", alter_sys=True)
"""


def anet(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
    """`anet ARGS` as its entry point runs it, saying when the early connections started and
    which the run took."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("ANET_NO_EARLY", None)
    env.update(extra)
    command = [sys.executable, "-c", WATCH, *args]
    return subprocess.run(command, capture_output=True, cwd=tmp_path, env=env, timeout=120)


def hosts_args(cluster) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--ssh-config", str(cluster.ssh_config), *(a for n in cluster.names for a in ("-S", n))]


def no_session_left(cluster) -> bool:  # type: ignore[no-untyped-def]
    """Every dispatcher gone (they exit on their stdin's EOF: a bounded wait)."""
    deadline = time.monotonic() + 10
    while any(cluster[name].processes() for name in cluster.names):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("verb", "from_file"), [(["run"], False), ([], False), ([], True)],
    ids=["run", "run-unsaid", "hosts-file"],
)  # fmt: skip
def test_a_run_takes_the_connections_made_before_its_imports(
    make_cluster, tmp_path, verb, from_file
):
    cluster = make_cluster(2)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo one\necho two\n")
    hosts = hosts_args(cluster)
    if from_file:  # -H FILE, as a user with a hosts file writes it, and a run-only option
        (tmp_path / "hosts.txt").write_text("".join(f"{name}\n" for name in cluster.names))
        hosts = ["--ssh-config", str(cluster.ssh_config), "-H", str(tmp_path / "hosts.txt")]
        hosts += ["-j", "2"]
    done = anet(tmp_path, *verb, *hosts, str(batch))
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert b"one\n" in done.stdout and b"two\n" in done.stdout
    assert "started with anet.api loaded: False" in stderr
    assert "started with click loaded: False" in stderr  # anet.launch: before the CLI
    assert "taken: host1 True" in stderr and "taken: host2 True" in stderr
    assert stderr.count("process taken: True") == 2
    assert stderr.count("early socket: True") == 2  # connected before asyncssh was imported
    # one login per host: the run's own connection is the early one
    assert [cluster[n].accepted_connections() for n in cluster.names] == [1, 1]
    assert no_session_left(cluster)


def test_a_sync_takes_them_too(make_cluster, tmp_path):
    cluster = make_cluster(2)
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "a.txt").write_text("a\n")
    done = anet(tmp_path, "sync", *hosts_args(cluster), f"{deps}/", XDG_CACHE_HOME=str(tmp_path))
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "taken: host1 True" in stderr and "taken: host2 True" in stderr
    assert [cluster[n].accepted_connections() for n in cluster.names] == [1, 1]


def one_job(tmp_path: Path) -> Path:
    batch = tmp_path / "batch.txt"
    batch.write_text("echo one\n")
    return batch


def test_connections_no_run_took_are_closed_when_anet_exits(make_cluster, tmp_path):
    cluster = make_cluster(2)
    batch = one_job(tmp_path)
    done = anet(tmp_path, "run", *hosts_args(cluster), "--format", "bogus", str(batch))
    stderr = done.stderr.decode()
    assert done.returncode == 255
    assert "started with anet.api loaded: False" in stderr
    assert "taken:" not in stderr
    marks = ("started with", "early socket:")
    said = [line for line in stderr.strip().splitlines() if not line.startswith(marks)]
    assert len(said) == 1, stderr  # the one line
    assert no_session_left(cluster)


def test_other_ssh_options_connect_at_the_usual_place(make_cluster, tmp_path):
    cluster = make_cluster(1)
    batch = one_job(tmp_path)
    done = anet(tmp_path, "run", *hosts_args(cluster), "--keepalive", "30", str(batch))
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "started" not in stderr and "taken: host1 False" in stderr
    assert b"one\n" in done.stdout


def test_an_early_handshake_that_fails_says_what_a_run_would_say(make_cluster, tmp_path):
    """The early connection is made by the same Connector.connect, so a host whose key
    known_hosts does not have fails with the same one line, and only the first time."""
    cluster = make_cluster(1)
    cluster.known_hosts.write_text("")
    batch = one_job(tmp_path)
    early = anet(tmp_path, "run", *hosts_args(cluster), str(batch))
    usual = anet(tmp_path, "run", *hosts_args(cluster), str(batch), ANET_NO_EARLY="1")
    assert early.returncode == usual.returncode == 255
    assert "taken: host1 True" in early.stderr.decode()
    lines = [line for line in early.stderr.decode().splitlines() if "host key" in line]
    assert lines and lines == [
        line for line in usual.stderr.decode().splitlines() if "host key" in line
    ]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_every_job_of_a_run_on_early_connections(
    make_cluster, tmp_path, signum, status
):
    """The loop the early thread turned is the run's: Ctrl-C and TERM reach the run as
    always (their handlers are set on this thread), and every job is stopped."""
    cluster = make_cluster(2)
    batch = tmp_path / "batch.txt"
    batch.write_text("sleep 300\n" * 4)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("ANET_NO_EARLY", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCH, "run", *hosts_args(cluster), str(batch)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while sum("sleep 300" in cmd for n in cluster.names for _, cmd in cluster[n].processes()) < 4:
        assert time.monotonic() < deadline, "jobs never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    assert b"taken: host1 True" in err and b"Traceback" not in err
    assert no_session_left(cluster)


def test_only_a_regular_batch_file_with_a_job_connects_early(tmp_path):
    """An empty batch connects no host (test_run_seams), and a FIFO or a device is the run's
    to read once: neither is opened here (a FIFO's open would wait for a writer)."""
    from anet.launch import _holds_a_job

    empty, blanks, fifo = tmp_path / "empty", tmp_path / "blanks", tmp_path / "fifo"
    empty.write_bytes(b"\n\r\n\r\r\n")
    blanks.write_bytes(b"\n  \n")  # a line of blanks is a job
    os.mkfifo(fifo)
    assert [_holds_a_job(str(p)) for p in (empty, blanks, fifo)] == [False, True, False]
    assert not _holds_a_job(str(tmp_path / "missing")) and not _holds_a_job("/dev/zero")
