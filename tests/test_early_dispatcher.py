"""This machine's dispatcher starts before the master's imports, and is used or stopped.

`anet`'s entry point reads the arguments before click does (`names_this_machine`); for a run
here it starts the local dispatcher at once (anet/remote/early.py), so that its boot runs on
another core while the master imports the run's modules, and LocalTransport takes it. One
that no run took (a usage error, other hosts after all) is stopped when anet exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anet.cli import cli
from anet.cli.argv import names_this_machine

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "here"),
    [
        (["batch.txt"], None),
        (["run", "batch.txt"], None),
        (["-S", ":", "batch.txt"], True),
        (["run", "-S", ":", "batch.txt"], True),
        (["batch.txt", "-S", "4/:"], True),
        (["-S:", "batch.txt"], True),
        (["--host=:", "batch.txt"], True),
        (["-qS", ":", "batch.txt"], True),
        (["-S", "node1,:", "batch.txt"], True),
        (["-S", ":", "echo", "{}", ":::", "a", "b"], True),
        (["-S", "node1", "batch.txt"], False),
        (["-H", "hosts.txt", "batch.txt"], False),
        (["-j", "4", "batch.txt"], None),
        (["--version"], False),
        (["-S", ":", "--help"], False),
        (["-h"], False),
        (["--dry-run", "batch.txt"], False),
        (["--pool", "p", "batch.txt"], False),
        (["status", "batch.txt"], False),
        (["sync", "-S", ":", "deps/"], False),
        (["--find", "sim", "-S", ":"], False),
        (["-S", ":", "--", "-S", "node1"], True),
    ],
)
def test_which_arguments_name_this_machine(args, here):
    assert names_this_machine(args, cli.commands) is here


WATCH = """
import os, runpy, sys
from anet.remote import early
start, take = early.start, early.take
def watched_start():
    start()
    print("started with anet.api loaded:", "anet.api" in sys.modules, file=sys.stderr)
    if os.environ.get("KILL_EARLY"):  # as if it died (OOM killer, a kill by pattern)
        early._started.kill()
        early._started.wait()
def watched_take(payload):
    proc = take(payload)
    print("taken:", proc is not None, file=sys.stderr)
    return proc
early.start, early.take = watched_start, watched_take
sys.argv = ["anet", *sys.argv[1:]]
runpy.run_module("anet", run_name="__main__", alter_sys=True)
"""


def anet(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`anet ARGS` as its entry point runs it, saying when the early dispatcher was started
    and whether the run took it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ANET_HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    env.pop("ANET_NO_EARLY", None)
    env.update(extra)
    command = [sys.executable, "-c", WATCH, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)


def dispatchers_of(home: Path) -> list[int]:
    """Processes whose environment has ANET_HOME=home: the dispatchers of one test."""
    mark = f"ANET_HOME={home}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def test_a_run_here_takes_the_dispatcher_started_before_its_imports(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("echo one\necho two\n")
    done = anet(tmp_path, "-S", ":", "--format", "text", str(batch))
    assert done.returncode == 0, done.stderr
    assert "started with anet.api loaded: False" in done.stderr
    assert "taken: True" in done.stderr
    assert "one\n" in done.stdout and "two\n" in done.stdout
    assert dispatchers_of(tmp_path / "home") == []


def test_a_dispatcher_no_run_took_is_stopped_when_anet_exits(tmp_path):
    done = anet(tmp_path, "-S", ":", str(tmp_path / "no-such-batch.txt"))
    assert done.returncode == 255
    assert "started with anet.api loaded: False" in done.stderr
    assert "taken:" not in done.stderr
    assert dispatchers_of(tmp_path / "home") == []
    assert not list((tmp_path / "home" / "work" / ".pids").glob("*/*"))


def test_no_dispatcher_starts_early_for_other_hosts(tmp_path):
    done = anet(tmp_path, "-S", "nohost.invalid", "--dry-run", "echo", "{}", ":::", "a")
    assert done.returncode == 0, done.stderr
    assert "started" not in done.stderr


def test_anet_no_early_starts_the_dispatcher_at_its_usual_place(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("echo one\n")
    done = anet(tmp_path, "-S", ":", "--format", "text", str(batch), ANET_NO_EARLY="1")
    assert done.returncode == 0, done.stderr
    assert "started" not in done.stderr
    assert "taken: False" in done.stderr and "one\n" in done.stdout


def test_an_early_dispatcher_that_died_is_replaced_by_a_fresh_one(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("echo one\n")
    done = anet(tmp_path, "-S", ":", "--format", "text", str(batch), KILL_EARLY="1")
    assert done.returncode == 0, done.stderr
    assert "taken: False" in done.stderr and "one\n" in done.stdout
    assert dispatchers_of(tmp_path / "home") == []
