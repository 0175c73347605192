"""`anet --killall` must never take what the user did not mean, against real sshd hosts.

An empty pattern is refused; a pattern that matches what keeps the user's sessions alive
(login shells, terminals, tmux, agents, Jupyter) lists them and kills nothing without
`--force`; the pipeline anet's output goes through is never touched; and a pattern given as
several words (`anet --killall java -jar RED`, as Java's `Runtime.exec` splits a command line)
is one pattern. The fixture hosts run on this machine as this user, so every host sees the
processes planted here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import test_machines
from sshd_hosts import _proc_table
from test_machines import SLEEPER, alive, anet, group_members, jsonl
from waiting import wait_until

from anet.cli.machines import find_command, killall_command, pattern_args
from dispatcher import procs

pytestmark = pytest.mark.usefixtures("no_leftover_processes")
planted = test_machines.planted  # processes with distinctive command lines, killed at the end


class Tmux:
    """A real tmux server on a socket of its own, whose path holds the test's marker."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)
        command = ["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d", "sleep 300"]
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
        shown = ["tmux", "-S", self.socket, "display", "-p", "#{pid}"]
        self.pid = int(subprocess.run(shown, check=True, capture_output=True).stdout)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


# -- empty patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["", "   ", ".*", "^"])
def test_killall_refuses_a_pattern_that_matches_every_process(cluster, planted, pattern):
    sleeper = planted.start(SLEEPER, "sleeper")
    planted.wait_started(2)
    done = anet(cluster, "--killall", pattern, "--dry-run", "-S", "host1", "--format", "jsonl")
    assert done.returncode == 255, done.stdout[:300]
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"anet: refusing to kill with the pattern {pattern!r}")
    assert alive(sleeper.pid)


def test_find_with_an_empty_pattern_lists_every_process_of_the_user(cluster, planted):
    sleeper = planted.start(SLEEPER, "sleeper")
    planted.wait_started(2)
    done = anet(cluster, "--find", "", "-S", "host1", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert sleeper.pid in {row["pid"] for row in jsonl(done.stdout)}


# -- what keeps the user's sessions alive needs --force ----------------------------------------


def test_killall_lists_and_spares_session_keepers_without_force(cluster, planted, tmp_path):
    # A login shell (argv[0] starts with "-"), a terminal's session leader (under a pty), a real
    # tmux server, and an ordinary sleeper: all match the marker.
    login = subprocess.Popen(
        [f"-{planted.marker}-login", "300"], executable="/bin/sleep", start_new_session=True
    )
    planted.procs.append(login)
    term = planted.start(
        f"exec {sys.executable} -c 'import pty,sys; pty.spawn(sys.argv[1:])' sh -c 'sleep 300'"
        f" {planted.marker}-term",
        "pty",
    )
    sleeper = planted.start(SLEEPER, "sleeper")
    tmux = Tmux(tmp_path / f"{planted.marker}-tmux")
    try:
        planted.wait_started(1 + 1 + 2)
        terminal = _wait_for_session_leader(term.pid)
        done = anet(cluster, "--killall", planted.marker, "-S", "host1", "-S", "host2")
        assert done.returncode == 4, (done.stdout, done.stderr)
        rows = {int(line.split()[1]): line for line in done.stdout.splitlines()[1:]}
        assert rows[login.pid].endswith("needs --force (login shell)")
        assert rows[terminal].endswith("needs --force (terminal session)")
        assert rows[tmux.pid].endswith("needs --force (terminal multiplexer)")
        assert rows[sleeper.pid].endswith("would kill")
        summary = done.stderr.splitlines()
        assert summary[0].startswith("anet: host1: 3 of 5 matches keep your sessions alive")
        assert summary[1].startswith("anet: host2: 3 of 5 matches keep your sessions alive")
        assert summary[2] == (
            "anet: nothing was killed: narrow the pattern, or add --force to kill these too"
        )
        assert len(summary) == 3
        for pid in (login.pid, terminal, tmux.pid, sleeper.pid):
            assert alive(pid), pid
        dry = anet(cluster, "--killall", planted.marker, "-n", "-S", "host1", "--format", "jsonl")
        assert dry.returncode == 4
        by_pid = {r["pid"]: r for r in jsonl(dry.stdout)}
        assert by_pid[tmux.pid]["lifeline"] == "terminal multiplexer"
        assert by_pid[sleeper.pid]["lifeline"] is None

        forced = anet(cluster, "--killall", planted.marker, "--force", "-S", "host1",
                      "--grace", "1", "--format", "jsonl")  # fmt: skip
        assert forced.returncode == 0, forced.stderr
        results = {r["pid"]: r["result"] for r in jsonl(forced.stdout)}
        assert results[login.pid] == results[sleeper.pid] == results[tmux.pid] == "killed"
        for pid in (login.pid, terminal, tmux.pid, sleeper.pid):
            assert not alive(pid), pid
    finally:
        tmux.close()


def _wait_for_session_leader(parent: int) -> int:
    """The pid of the shell pty.spawn started under `parent`: a session leader on a terminal."""

    def leader() -> int | None:
        for pid, (ppid, _, _) in _proc_table().items():
            if ppid != parent:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except FileNotFoundError:  # ended since the table was read (a forked helper)
                continue
            if int(stat[3]) == pid and int(stat[4]) != 0:
                return pid
        return None

    return wait_until(leader, 10, "pty.spawn started a terminal session")


def test_session_keepers_are_classified_from_proc():
    def proc(pid, name, argv, *, sid=0, tty=0):
        stat = f"{pid} ({name}) S 1 {pid} {sid} {tty}" + " 0" * 14 + " 123 0 50"
        return procs.Proc(pid, stat.encode(), 1000, argv)

    assert procs.lifeline(proc(5, "bash", ["-bash"])) == "login shell"
    assert procs.lifeline(proc(5, "zsh", ["zsh"], sid=5, tty=34816)) == "terminal session"
    assert procs.lifeline(proc(5, "zsh", ["zsh"], sid=4, tty=34816)) == ""  # a job in it
    assert procs.lifeline(proc(5, "sh", ["sh", "-c", "job"], sid=5)) == ""  # setsid, no tty
    assert procs.lifeline(proc(5, "tmux: server", ["tmux"])) == "terminal multiplexer"
    assert procs.lifeline(proc(5, "screen", ["SCREEN", "-S", "x"])) == "terminal multiplexer"
    assert procs.lifeline(proc(5, "ssh-agent", ["ssh-agent", "-s"])) == "agent"
    assert procs.lifeline(proc(5, "systemd", ["/lib/systemd/systemd", "--user"])) == (
        "service manager"
    )
    jupyter = ["/usr/bin/python3", "/usr/local/bin/jupyter-lab", "--no-browser"]
    assert procs.lifeline(proc(5, "python3", jupyter)) == "Jupyter"
    kernel = ["python3", "-m", "ipykernel_launcher", "-f", "/run/k.json"]
    assert procs.lifeline(proc(5, "python3", kernel)) == "Jupyter"
    vscode = ["/home/u/.vscode-server/bin/abc/node", "/home/u/.vscode-server/bin/abc/out/x.js"]
    assert procs.lifeline(proc(5, "node", vscode)) == "VS Code server"
    assert procs.lifeline(proc(5, "python3", ["python3", "my_sim.py", "jupyter"])) == ""


# -- anet's own pipeline --------------------------------------------------------------------


def test_killall_never_touches_the_pipeline_its_output_goes_through(cluster, planted, tmp_path):
    # `anet --killall X | tee X-file`: tee's command line holds the pattern, and tee is not an
    # ancestor of anet but its sibling in the shell's pipeline. The background job of the same
    # script writes to the same pipe as anet (the captured output) but is no part of the
    # pipeline: it is listed.
    sleeper = planted.start(SLEEPER, "sleeper")
    planted.wait_started(2)
    tee_file = tmp_path / f"{planted.marker}-tee"
    script = (
        f"{sys.executable} -c 'import time; time.sleep(300)' {planted.marker}-bg & "
        f"{sys.executable} -m anet --killall {planted.marker} --dry-run --format jsonl"
        f" --ssh-config {cluster.ssh_config} -S host1 | tee {tee_file} >/dev/null; kill $!"
    )
    shell = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=90, start_new_session=True
    )
    assert shell.stderr == ""
    rows = jsonl(tee_file.read_text())
    commands = sorted(r["command"] for r in rows)
    assert commands == sorted(
        [f"sh -c {SLEEPER} {planted.marker}-sleeper", f"{sys.executable} -c import time; "
         f"time.sleep(300) {planted.marker}-bg"]
    )  # fmt: skip
    assert sleeper.pid in {r["pid"] for r in rows}


# -- several words are one pattern -----------------------------------------------------------


def test_several_words_are_one_pattern_as_java_splits_a_command_line(cluster, planted):
    # `sh -c SCRIPT NAME -jar RED-MARKER`: the command line holds `NAME -jar RED-MARKER`.
    java = subprocess.Popen(
        ["sh", "-c", "sleep 300; true", "java", "-jar", f"RED-{planted.marker}"],
        start_new_session=True,
    )
    planted.procs.append(java)
    planted.wait_started(2)
    words = ("java", "-jar", f"RED-{planted.marker}")
    found = anet(cluster, "--find", *words, "-S", "host1", "--format", "jsonl")
    assert found.returncode == 0, found.stderr
    assert [r["pid"] for r in jsonl(found.stdout)] == [java.pid]
    dry = anet(cluster, "--killall", *words, "-n", "-S", "host1")
    assert dry.returncode == 0, dry.stderr
    assert "would kill" in dry.stdout and alive(java.pid)
    killed = anet(cluster, "--killall", *words, "-S", "host1", "--format", "jsonl")
    assert killed.returncode == 0, killed.stderr
    assert [(r["pid"], r["result"]) for r in jsonl(killed.stdout)] == [(java.pid, "killed")]
    assert group_members(java.pid) == []


def test_pattern_words_and_options_are_told_apart_by_exact_option_names():
    def split(command: click.Command, *args: str) -> list[str]:
        return pattern_args(list(args), command.get_params(click.Context(command)))

    assert split(killall_command, "java", "-jar", "RED", "-S", "h1", "-n") == [
        "-S", "h1", "-n", "--", "java -jar RED",
    ]  # fmt: skip
    assert split(killall_command, "--signal=KILL", "a", "b", "--grace", "1") == [
        "--signal=KILL", "--grace", "1", "--", "a b",
    ]  # fmt: skip
    assert split(find_command, "x", "--", "-S", "h1") == ["--", "x -S h1"]
    assert split(find_command, "-j4", "--dryrun") == ["--", "-j4 --dryrun"]  # not options: words
    assert split(find_command, "") == ["--", ""]
    assert split(find_command, "-S", "h1") == ["-S", "h1"]  # no pattern: click says so
    assert split(find_command, "x", "-S") == ["-S", "--", "x"]  # -S lacks its value: click says


def test_a_pattern_starting_with_a_dash_and_help_still_work(cluster):
    done = anet(cluster, "--find", "-Xmx4g-nothing-runs-this", "-S", "host1")
    assert done.returncode == 1, done.stderr
    assert done.stderr == "anet: no process matches '-Xmx4g-nothing-runs-this'\n"
    helped = subprocess.run(
        [sys.executable, "-m", "anet", "--killall", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--force" in helped.stdout
