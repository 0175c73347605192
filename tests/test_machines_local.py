"""Housekeeping pieces without SSH: host ranges, scan targets, folding, /proc matching rules,
the new wire messages, and `anet.Machines` on the local machine (a real local dispatcher)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from waiting import wait_until

from anet.cli.machines import elapsed_text, fold
from anet.errors import UsageError
from anet.housekeeping import HostOutput, Machines
from anet.remote.bootstrap import payload
from anet.remote.hosts import HostSpec, expand_range, resolve_hosts
from anet.remote.scan import expand_targets
from dispatcher import forked, procs
from dispatcher.protocol import FrameDecoder, encode

# -- host ranges ------------------------------------------------------------------------------


def test_host_ranges_expand_with_padding_lists_and_products():
    assert expand_range("node[01-03]") == ["node01", "node02", "node03"]
    assert expand_range("n[1,3,8-10]") == ["n1", "n3", "n8", "n9", "n10"]
    assert expand_range("r[1-2]-n[1-2]") == ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]
    assert expand_range("4/bob@n[9-10]:2222") == ["4/bob@n9:2222", "4/bob@n10:2222"]
    assert expand_range("plain") == ["plain"]
    assert expand_range("[::1]:22") == ["[::1]:22"]  # an IPv6 address is not a range


def test_host_ranges_work_wherever_a_host_list_is(tmp_path):
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("# rack 1\n2/node[1-2]\nalice@gpu[07-08]:2222\n")
    specs = resolve_hosts(["n[1-2]", "n2"], [hosts_file], environ={})
    assert [s.label for s in specs] == [
        "n1", "n2", "node1", "node2", "alice@gpu07:2222", "alice@gpu08:2222",
    ]  # fmt: skip
    assert specs[2] == HostSpec("node1", slots=2)


@pytest.mark.parametrize(
    ("text", "error"),
    [("n[5-1]", "counts backwards"), ("n[1-100000]", "over 65536 hosts")],
)
def test_bad_host_ranges_are_usage_errors(text, error):
    with pytest.raises(UsageError, match=error):
        expand_range(text)


def test_scan_targets_from_cidr_ranges_and_names():
    assert expand_targets(["10.0.0.0/30"]) == ["10.0.0.1", "10.0.0.2"]
    assert expand_targets(["10.0.0.7/32", "10.0.0.[6-7]", "db"]) == ["10.0.0.7", "10.0.0.6", "db"]
    with pytest.raises(UsageError, match="over 65536 addresses"):
        expand_targets(["10.0.0.0/8"])


# -- presentation -----------------------------------------------------------------------------


def test_fold_groups_identical_output_and_status_in_first_seen_order():
    answers = [
        HostOutput("a", b"x\n", b"", 0),
        HostOutput("b", b"y\n", b"", 0),
        HostOutput("c", b"x\n", b"", 0),
        HostOutput("d", b"x\n", b"", 1),  # same output, other status: not folded
        HostOutput("e", error="connection refused"),
        HostOutput("f", error="connection refused"),
    ]
    assert [hosts for hosts, _ in fold(answers)] == [["a", "c"], ["b"], ["d"], ["e", "f"]]


def test_elapsed_time_reads_like_ps():
    assert elapsed_text(5.9) == "00:05"
    assert elapsed_text(3 * 3600 + 61) == "03:01:01"
    assert elapsed_text(2 * 86400 + 5) == "2-00:00:05"


# -- the dispatcher's matching rules ----------------------------------------------------------


def _proc(pid: int, ppid: int, name: str, argv: list[str], *, pgid: int = 0, uid: int = 0):
    stat = f"{pid} ({name}) S {ppid} {pgid or pid}" + " 0" * 16 + " 123 0 50"
    return procs.Proc(pid, stat.encode(), uid, argv)


def test_protected_covers_dispatchers_sshd_and_their_ancestors():
    stub = ["python3", "-c", procs.STUB_MARK + 'x")))']
    table = {
        p.pid: p
        for p in (
            _proc(1, 0, "init", ["/sbin/init"]),
            _proc(100, 1, "sshd", ["sshd: /usr/sbin/sshd -D"]),
            _proc(200, 100, "sshd", ["sshd: alice@notty"]),
            _proc(300, 200, "bash", ["bash", "-c", "python3 ..."]),
            _proc(400, 300, "python3", stub),
            _proc(500, 400, "sh", ["sh", "-c", "my job"]),  # a job: not protected
            _proc(600, 1, "sleep", ["sleep", "100"]),
        )
    }
    keep = procs.protected(table, "", 0)
    assert {1, 100, 200, 300, 400} <= keep
    assert not {500, 600} & keep


def test_stub_mark_is_how_every_dispatcher_command_line_starts():
    assert payload().code.startswith(procs.STUB_MARK)


def test_a_dispatcher_is_known_with_or_without_site():
    """`python3 -S -c STUB` now, `python3 -c STUB` from an older anet on the same host."""
    shell = shlex.split(payload().shell_command())
    older = [shell[0], *shell[2:]]
    assert shell[1] == "-S" and older[1] == "-c"
    for argv in (shell, older):
        assert procs.is_dispatcher(_proc(400, 300, "python3", argv))
    for argv in (["python3", "-X", "-c", shell[-1]], ["python3", "-S", "-c", "print(1)"]):
        assert not procs.is_dispatcher(_proc(400, 300, "python3", argv))


def test_an_older_anets_dispatcher_is_still_known():
    """An older anet's stub (base64, not hex) may still run on the same host: protected too."""
    older = 'import base64,zlib;exec(zlib.decompress(base64.b64decode("eNoDAAAAAAE=")))'
    assert not older.startswith(procs.STUB_MARK)
    for argv in (["python3", "-S", "-c", older], ["python3", "-c", older]):
        assert procs.is_dispatcher(_proc(400, 300, "python3", argv))


def test_find_skips_this_process_and_its_ancestors_but_sees_a_sleeper():
    marker = f"anet-local-{uuid.uuid4().hex[:8]}"
    sleeper = subprocess.Popen(["sh", "-c", "sleep 60; true", marker], start_new_session=True)
    try:
        mine = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        pattern = f"{marker}|^{re.escape(mine)}$"
        command = procs.ROW_FIELDS.index("command")

        def found() -> list[list[object]] | None:
            """The rows once the sleeper is there as itself: forked, not yet exec'd, it is a
            copy of this process, by its command line too (a busy box shows it so), and its
            `sleep`, forked, is a copy of it for a moment."""
            rows = procs.find(pattern, procs.machine_id(), os.getpid())
            settled = all(r[0] in (sleeper.pid, os.getpid()) for r in rows)
            ours = all(marker in str(r[command]) for r in rows)
            return rows if rows and settled and ours else None

        rows = wait_until(found, 10, "the sleeper found")
        pids = [row[0] for row in rows]
        assert pids == [sleeper.pid]  # this process matches too, but it is never listed
        row = dict(zip(procs.ROW_FIELDS, rows[0], strict=True))
        assert row["command"] == f"sh -c sleep 60; true {marker}" and row["pgid"] == sleeper.pid
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait()


def test_a_recycled_pid_is_never_signalled():
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (row,) = [r for r in procs.find("^sleep 60$", "", 0) if r[0] == sleeper.pid]
        start = row[1]
        wrong = procs.signal_targets([[sleeper.pid, start + 1, False]], signal.SIGKILL, "", 0)
        assert wrong == [[sleeper.pid, procs.GONE]]  # another process by that pid: left alone
        assert sleeper.poll() is None
        right = procs.signal_targets([[sleeper.pid, start, False]], signal.SIGKILL, "", 0)
        assert right == [[sleeper.pid, procs.SIGNALLED]]
        assert sleeper.wait(5) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.root("the test starts a process of another user")
def test_other_users_processes_are_never_matched():
    marker = f"anet-nobody-{uuid.uuid4().hex[:8]}"
    other = subprocess.Popen(
        ["sh", "-c", "sleep 60; true", marker], user="nobody", start_new_session=True
    )
    try:
        cmdline = Path(f"/proc/{other.pid}/cmdline")
        wait_until(lambda: marker.encode() in cmdline.read_bytes(), 10, "the shell to start")
        assert procs.find(marker, "", 0) == []
        assert procs.signal_targets([[other.pid, 0, True]], signal.SIGKILL, "", 0) == [
            [other.pid, procs.PROTECTED]
        ]
        assert other.poll() is None
    finally:
        os.killpg(other.pid, signal.SIGKILL)  # its sleep too, not the shell alone
        other.wait()


def test_housekeeping_messages_round_trip():
    messages = [
        procs.FindProcs(1, "sleep", "boot:pid", 42, 5.0),
        procs.ProcsFound(1, [[5, 6, 5, 1, "u", 1.5, 0.0, 0.1, 1024, "sleep 1", ""]], ""),
        procs.SignalProcs(2, [[5, 6, True]], 15, "", 0),
        procs.Signalled(2, [[5, "signalled"]]),
        procs.ProbeHost(3, "/tmp"),
        procs.HostProbe(3, 1000, 2000, 0.5),
    ]
    data = b"".join(map(encode, messages))
    decoder = FrameDecoder()
    out = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert out == messages
    assert all(29 >= type(m).CODE >= 20 for m in out)


def test_dispatcher_modules_compile_for_python_3_8():
    python38 = next(iter(sorted(__import__("glob").glob(
        os.path.expanduser("~/.pyenv/versions/3.8.*/bin/python3.8")))), None)  # fmt: skip
    if python38 is None:
        pytest.skip("needs a Python 3.8 interpreter")
    done = subprocess.run(
        [python38, "-m", "py_compile", procs.__file__, forked.__file__],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# -- the library on the local machine ---------------------------------------------------------


def test_machines_on_the_local_machine():
    async def main() -> None:
        async with Machines([":"]) as machines:
            (out,) = await machines.onall("echo $ANET_HOST; exit 2")
            assert (out.host, out.stdout, out.exit_code, out.ok) == ("local", b"local\n", 2, False)
            (check,) = await machines.check()
            assert check.ok and check.key is None and check.cores and check.cores >= 1
            assert check.python == ".".join(map(str, sys.version_info[:3]))
            (found,) = await machines.find("zlib;exec")  # our own dispatcher runs
            assert found.processes == [] and found.error is None
            (bad,) = await machines.find("(")
            assert bad.error is not None and bad.error.startswith("bad pattern")

    asyncio.run(main())
