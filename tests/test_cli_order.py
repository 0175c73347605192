"""Options on either side of the verb, and batch files named like a command: the real `anet`.

GNU parallel takes its options anywhere before the command; anet's host, output and log options
work before or after its verb (`run`, `status`, `--find`, `--onall`...). A word naming a command
is that command, except when nothing follows it that the command could work on and a file of
that name exists: then it is the batch (`anet status` with a batch file `status` here runs it).
Every test runs `python3 -m anet` on the local machine (`-S :`), in a folder of its own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from anet import results
from anet.cli import cli
from anet.cli.argv import GROUP_OPTIONS, VALUE_OPTIONS, arrange, option_table

ROOT = Path(__file__).resolve().parent.parent
DOWN = "127.0.0.1:1"  # nobody listens on port 1: refused at once, and named in what anet says
COMMAND_NAMES = ("run", "status", "report", "sync", "find", "killall", "onall", "completion")


def anet(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`anet ARGS` run in `folder`, its journals kept there, no $ANET_HOSTS from outside."""
    env = {k: v for k, v in os.environ.items() if k != "ANET_HOSTS"}
    env |= {"PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(folder / "state")}
    return subprocess.run(
        [sys.executable, "-m", "anet", *args], cwd=folder, env=env, capture_output=True,
        text=True, errors="surrogateescape", stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A batch of two jobs, a hosts file with this machine and a refusing one, and a hosts
    file named `run` (an option's value named like a command)."""
    (tmp_path / "batch.txt").write_text("echo job-$ANET_JOB_ID\necho job-$ANET_JOB_ID\n")
    (tmp_path / "hosts.txt").write_text(f":\n{DOWN}\n")
    return tmp_path


def job_outputs(done: subprocess.CompletedProcess[str], fmt: str) -> list[bytes]:
    """Each result's stdout, read back with anet's own reader."""
    data = done.stdout.encode(errors="surrogateescape")
    if fmt == "jsonl":
        return sorted(json.loads(line)["stdout"].encode() for line in data.splitlines())
    return sorted(r.stdout for r in results.read(io.BytesIO(data)))


# What each argv must have done: "q" quiet (no summary), "j" jsonl on stdout, "d" the refusing
# host was among the hosts (it is named on stderr), "v" info lines on stderr.
RUN_ORDERS = [
    (["-q", "run", "batch.txt"], "q"),  # the issue's: it used to read a batch named `run`
    (["-q", "batch.txt"], "q"),
    (["batch.txt", "-q"], "q"),
    (["run", "-q", "batch.txt"], "q"),
    (["run", "batch.txt", "-q"], "q"),
    (["-H", "hosts.txt", "--format", "jsonl", "batch.txt"], "jd"),
    (["--format", "jsonl", "-H", "hosts.txt", "run", "batch.txt"], "jd"),
    (["-H", "hosts.txt", "run", "batch.txt", "--format=jsonl"], "jd"),
    (["--format=jsonl", "run", "-H", "hosts.txt", "batch.txt"], "jd"),
    (["-qH", "hosts.txt", "run", "batch.txt"], "qd"),  # a cluster ending in a value option
    (["-S", ":", "-S", DOWN, "-q", "batch.txt", "--format", "jsonl"], "qjd"),
    (["--host=:", "-j", "1", "-q", "run", "batch.txt"], "q"),
    (["-j1", "-q", "--", "batch.txt"], "q"),
    (["-H", "run", "-q", "run", "batch.txt"], "qd"),  # -H's value is the hosts file `run`
    (["-v", "-S", ":", "run", "batch.txt"], "v"),
    (["-S", ":", "--no-journal", "--keepalive", "30", "-k", "batch.txt", "-q"], "q"),
]


@pytest.mark.parametrize(("argv", "effects"), RUN_ORDERS, ids=" ".join)
def test_run_takes_its_options_before_and_after_the_verb(folder, argv, effects):
    (folder / "run").write_text(f":\n{DOWN}\n")
    done = anet(folder, *argv)
    assert done.returncode == 0, done.stderr
    fmt = "jsonl" if "j" in effects else "anet"
    assert job_outputs(done, fmt) == [b"job-0\n", b"job-1\n"], done.stderr
    told = done.stderr
    assert (DOWN in told) == ("d" in effects), told
    assert ("anet: info:" in told) == ("v" in effects), told
    summary = [line for line in told.splitlines() if DOWN not in line]
    assert (summary == []) == ("q" in effects), told


@pytest.fixture
def planted() -> Iterator[str]:
    """A process of ours whose command line holds a pattern nothing else has."""
    pattern = f"anet-order-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen(["sh", "-c", "sleep 300; true", pattern], start_new_session=True)
    try:
        yield pattern
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and its sleep
        proc.wait()


FIND_ORDERS = [
    ["-H", "hosts.txt", "--find", "{p}"],  # the issue's: "No such option '--find'"
    ["--find", "{p}", "-H", "hosts.txt"],
    ["-H", "hosts.txt", "find", "{p}"],
    ["--format", "jsonl", "-H", "hosts.txt", "--find", "{p}"],
    ["-v", "-S", ":", "-S", DOWN, "--find", "{p}"],
    ["--find", "-S", ":", "{p}", "-H", "hosts.txt"],
]


@pytest.mark.parametrize("argv", FIND_ORDERS, ids=" ".join)
def test_find_takes_the_host_options_on_either_side(folder, planted, argv):
    done = anet(folder, *[a.format(p=planted) for a in argv])
    assert done.returncode == 3, done.stderr  # found, and one host could not be asked
    assert planted in done.stdout, done.stdout
    if "jsonl" in argv:
        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert {r["host"] for r in records} == {"local", DOWN}
    else:
        assert DOWN in done.stderr


def test_killall_takes_its_options_before_the_verb(folder, planted):
    done = anet(folder, "-n", "-S", ":", "--format", "jsonl", "--killall", planted)
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["result"] == "would kill" and planted in record["command"]
    assert any(planted in proc for proc in _command_lines())  # a dry run: still alive


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return lines


ONALL_ORDERS = [
    (["-S", ":", "--onall", "echo hi"], 0, ["== local: exit 0 ==", "hi"]),  # the issue's
    (["--onall", "-S", ":", "echo hi"], 0, ["== local: exit 0 ==", "hi"]),
    (["-S", ":", "onall", "echo", "hi"], 0, ["== local: exit 0 ==", "hi"]),
    (["-S", ":", "-S", DOWN, "--onall", "echo hi"], 1, ["== local: exit 0 ==", "hi", DOWN]),
    (["--no-fold", "-S", ":", "--onall", "echo hi"], 0, ["== local: exit 0 ==", "hi"]),
    (["--log-json", "-S", ":", "--onall", "echo hi"], 0, ["== local: exit 0 ==", "hi"]),
]


@pytest.mark.parametrize(("argv", "status", "shown"), ONALL_ORDERS, ids=lambda a: str(a))
def test_onall_takes_the_host_options_on_either_side(folder, argv, status, shown):
    done = anet(folder, *argv)
    assert done.returncode == status, done.stderr
    for text in shown:
        assert text in done.stdout, done.stdout


def test_onall_jsonl_given_before_the_verb(folder):
    done = anet(folder, "--format", "jsonl", "-S", ":", "--onall", "echo hi")
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (record["host"], record["stdout"], record["exit"]) == ("local", "hi\n", 0)


def test_an_option_the_verb_lacks_is_named_with_the_verb(folder):
    done = anet(folder, "-q", "status", "batch.txt")
    assert done.returncode == 255
    assert done.stderr.splitlines() == ["anet: status: No such option '-q'."], done.stderr


# -- a batch file named like a command --------------------------------------------------------


@pytest.mark.parametrize("first", [True, False], ids=["name first", "options first"])
@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_a_batch_file_named_like_a_command_given_alone_is_run(folder, name, first):
    (folder / name).write_text(f"echo from-{name}\n")
    options = ["-S", ":", "-q", "--format", "jsonl"]
    done = anet(folder, *([name, *options] if first else [*options, name]))
    assert done.returncode == 0, done.stderr
    assert job_outputs(done, "jsonl") == [f"from-{name}\n".encode()]


def test_a_command_with_something_to_work_on_stays_the_command(folder):
    (folder / "status").write_text("echo from-status\n")
    (folder / "onall").write_text("echo from-onall\n")
    assert anet(folder, "-S", ":", "-q", "batch.txt").returncode == 0
    shown = anet(folder, "status", "batch.txt")  # the journal of batch.txt's run, not a run
    assert shown.returncode == 0, shown.stderr
    assert "from-status" not in shown.stdout
    assert str(folder / "state" / "anet" / "journals") in shown.stdout, shown.stdout
    ran = anet(folder, "-S", ":", "onall", "echo", "hi")
    assert ran.returncode == 0 and "from-onall" not in ran.stdout and "hi" in ran.stdout


def test_the_hosts_group_is_never_taken_for_a_hosts_file(folder):
    (folder / "hosts").write_text(":\n")  # a hosts file, not a batch: its lines are no jobs
    done = anet(folder, "hosts")
    said = done.stdout + done.stderr
    assert "anet hosts" in said and "check" in said and "scan" in said, said


def test_a_command_that_fails_while_a_batch_has_its_name_tells_how_to_run_the_batch(folder):
    (folder / "status").write_text("echo from-status\n")
    done = anet(folder, "status", "no-such-journal")
    assert done.returncode == 255
    [line] = done.stderr.splitlines()
    assert "no-such-journal" in line and "`anet run status`" in line, line


def test_dash_dash_makes_the_next_word_the_batch(folder):
    (folder / "sync").write_text("echo from-sync\n")
    done = anet(folder, "-S", ":", "-q", "--format", "jsonl", "--", "sync")
    assert done.returncode == 0, done.stderr
    assert job_outputs(done, "jsonl") == [b"from-sync\n"]


# -- the rule itself, on words alone ----------------------------------------------------------


def test_no_option_takes_a_value_in_one_command_and_none_in_another():
    """arrange() steps over an option's value by its name alone, whatever the command."""
    seen: dict[str, bool] = {}
    for command in _all_commands(cli):
        for param in command.params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes = not (param.is_flag or param.count)
                    assert seen.setdefault(name, takes) == takes, (command.name, name)
    assert option_table(cli) == {**seen, **dict.fromkeys(GROUP_OPTIONS, False)}


def test_the_written_out_value_options_are_those_of_the_commands():
    """VALUE_OPTIONS spares parsing the import of every subcommand: it must say what they say
    (a new option that takes a value goes there, or `-X VALUE status` would misread)."""
    takes = sorted(name for name, value in option_table(cli).items() if value)
    assert takes == sorted(VALUE_OPTIONS)


def _all_commands(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from _all_commands(command)


@pytest.mark.parametrize(
    ("words", "files", "arranged"),
    [
        ("", "", ""),
        ("--help", "", "--help"),
        ("-h status", "", "status -h"),
        ("--version run x", "", "--version run x"),
        ("-S : --help", "", "run -S : --help"),
        ("-S : -", "", "run -S : -"),
        ("-j4 -q status", "", "status -j4 -q"),
        ("-qj 4 status", "", "status -qj 4"),
        ("-qj 4 status", "status", "run -qj 4 status"),
        ("--journal=status run", "", "run --journal=status"),
        ("--journal status run", "run", "run --journal status run"),
        ("status -- x", "status", "status -- x"),
        ("status --", "status", "run status --"),
        ("-S : -- status", "status", "run -S : -- status"),
        ("hosts", "hosts", "hosts"),
        ("-k --killall -n x", "", "killall -k -n x"),
    ],
)
def test_arrange(words, files, arranged):
    got = arrange(words.split(), cli.commands, VALUE_OPTIONS, files.split().__contains__)
    assert got.argv == arranged.split()
