"""What a host says reaches the user's terminal escaped: no control code of a host is obeyed.

A hostile host here is a real sshd host whose `python3` is a small shim: it either answers the
stub with a boot error line full of escape sequences, or runs the real dispatcher with a
`sitecustomize` that makes the host's name hostile. The renderers are also tested one by one.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster

from anet import logs
from anet.cli.common import Environment
from anet.cli.machines import _check_row, _report_down, _table, _write_folded
from anet.cli.sync import render_table
from anet.core.record import JobResult
from anet.errors import HostError
from anet.housekeeping import HostCheck, HostOutput
from anet.printable import printable
from anet.views.progress import ProgressView, Snapshot
from anet.views.stats import _why
from anet.views.summary import FailedJobs, last_error_line, render_summary
from dispatcher.protocol import BOOT_MARK

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m[bold red]boom\u202eevil\r\nanet: forged"
"""Retitle the window, clear the screen, a C1 CSI, rich markup, a bidi override, a forged line."""
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m[bold red]boom\\u202eevil\\r\\nanet: forged"
BOOT_LINE, BOOT_SHOWN = HOSTILE.split("\n")[0], SHOWN.split("\\n")[0]
"""A boot error is one line: the host's text up to its first newline."""


def assert_harmless(text: str | bytes, shown: str = SHOWN) -> None:
    """Nothing a terminal would obey, and the host's words visible, escaped."""
    data = text.encode() if isinstance(text, str) else text
    assert b"\x1b" not in data and b"\x07" not in data and b"\r" not in data, data
    assert "\u202e".encode() not in data and "\x9b".encode() not in data, data
    assert shown.encode() in data, data


def test_printable_escapes_controls_bidi_and_undecodable_bytes_only():
    assert printable(HOSTILE) == SHOWN
    assert printable("tab\there\x00\x7f") == "tab\\there\\x00\\x7f"
    assert printable(b"caf\xc3\xa9 \xff".decode(errors="surrogateescape")) == "café \\xff"
    assert (
        printable("plain text, ünïcödé, 日本, [brackets]")
        == "plain text, ünïcödé, 日本, [brackets]"
    )


# -- each place that shows host text ---------------------------------------------------------


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    yield stream
    logs.configure(0)
    logging.getLogger("anet").handlers[:] = []


@pytest.mark.parametrize("verbosity", [0, 1])
def test_log_lines_escape_the_message_and_its_fields(log_stream, verbosity):
    logs.configure(verbosity, stream=log_stream)
    logs.get_logger().error(f"host1: {HOSTILE}", hostname=HOSTILE)
    assert_harmless(log_stream.getvalue())
    assert log_stream.getvalue().count("\n") == 1


def test_json_log_lines_keep_the_text_exactly_and_show_no_control_code(log_stream):
    logs.configure(0, json=True, stream=log_stream)
    logs.get_logger().error(HOSTILE, hostname=HOSTILE)
    line = log_stream.getvalue()
    assert "\x1b" not in line and "\x9b" not in line and "\u202e" not in line
    record = json.loads(line)
    assert record["event"] == record["hostname"] == HOSTILE


def test_the_live_view_shows_log_lines_literally_no_markup(log_stream):
    """Log lines print through rich above the live view: not as markup, never raw."""
    logs.configure(0, stream=log_stream)

    async def main() -> None:
        source = lambda elapsed: Snapshot(elapsed, 1, 0, 0, 0)  # noqa: E731
        async with ProgressView(log_stream, source, live=True):
            logs.get_logger().warning(HOSTILE)

    asyncio.run(main())
    assert_harmless(log_stream.getvalue().replace("\x1b[?25l", "").replace("\x1b[?25h", ""))


def test_summaries_show_a_jobs_last_stderr_line_escaped():
    line, shown = HOSTILE.split("\r")[0], SHOWN.split("\\r")[0]  # a job's last line
    result = JobResult(3, False, 1, None, "host1", 1, 0.1, b"", f"{line}\n".encode())
    assert last_error_line(result) == shown
    failed = FailedJobs()
    failed.add(result)
    assert_harmless(render_summary(Snapshot(1.0, 1, 1, 1, 0), failed), shown)
    assert _why(None, f"{line}\n".encode(), 1, None) == shown  # anet status
    assert _why(line, None, None, None) == shown


def test_tables_and_error_lines_of_the_housekeeping_commands():
    check = HostCheck("host1", error=HOSTILE, python=HOSTILE, hostname=HOSTILE)
    assert_harmless(_table(("HOST", "PYTHON", "PROBLEM"), [_check_row(check)[::4]]))
    env = Environment(stdout=io.BytesIO(), stderr=io.StringIO())
    _report_down(env, [check])
    assert_harmless(env.stderr.getvalue())
    _write_folded(env, [HostOutput("host1", error=HOSTILE, stdout=b"\x1b[1mraw\n")], folded=True)
    shown = env.stdout.getvalue()
    header, output = shown.split(b"\n", 1)
    assert_harmless(header)
    assert output == b"\x1b[1mraw\n"  # onall shows the command's output as it is, like ssh


def test_a_sync_error_from_a_host_is_escaped_in_the_table():
    from anet.deps.manifest import Tree

    table = render_table(Tree(b".", [], b"", 0, 0), [HostError("host1", HOSTILE)])
    assert_harmless(table)


# -- end to end ------------------------------------------------------------------------------


def hostile_host(make_cluster, tmp_path: Path) -> tuple[SshdCluster, Path]:
    """One sshd host whose `python3` is a shim: while the returned file exists, it answers the
    stub with that file's bytes (a boot error line) and exits; otherwise it runs the real
    Python with a sitecustomize that gives the host a hostile name."""
    bindir, site = tmp_path / "hostile-bin", tmp_path / "hostile-site"
    bindir.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # the dispatcher asks os.uname() (gethostname(2))
        "import os\n"
        "_real = os.uname()\n"
        f"os.uname = lambda: os.uname_result((_real[0], {HOSTILE!r}) + tuple(_real[2:]))\n"
    )
    boot_error = bindir / "boot-error"
    shim = bindir / "python3"
    shim.write_text(
        "#!/bin/sh\n"
        f"if [ -e {boot_error} ]; then cat {boot_error}; exit 1; fi\n"
        'if [ "$1" = -S ]; then shift; fi\n'  # the stub's -S would skip our sitecustomize
        f'PYTHONPATH={site} exec {sys.executable} "$@"\n'
    )
    shim.chmod(0o755)
    own = make_cluster(
        1, extra_config=[f'ForceCommand PATH={bindir}:/usr/bin:/bin; eval "$SSH_ORIGINAL_COMMAND"']
    )
    return own, boot_error


def anet(own: SshdCluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "anet", *args[:2], "--ssh-config", str(own.ssh_config),
            *args[2:]]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(own.root)}
    return subprocess.run(argv, capture_output=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_a_hostile_host_reaches_the_terminal_escaped(make_cluster, tmp_path):
    own, boot_error = hostile_host(make_cluster, tmp_path)
    batch = tmp_path / "batch.txt"
    batch.write_text("echo ok\n")

    boot_error.write_bytes(BOOT_MARK + b"E" + HOSTILE.encode() + b"\n")
    failed = anet(own, "run", "-v", "-S", "host1", "--no-journal", str(batch))
    assert failed.returncode == 255, failed.stderr
    assert_harmless(failed.stderr, BOOT_SHOWN)  # the log line, and the final "no usable host"
    assert failed.stderr.count(BOOT_SHOWN.encode()) >= 2, failed.stderr
    checked = anet(own, "hosts", "check", "-S", "host1")
    assert checked.returncode == 3, checked.stderr
    assert_harmless(checked.stdout, BOOT_SHOWN)  # the PROBLEM column of the table
    assert b"\x1b" not in checked.stderr

    boot_error.unlink()
    started = time.monotonic()
    ran = anet(own, "run", "-v", "-S", "host1", "--no-journal", "--format", "text", str(batch))
    assert ran.returncode == 0, ran.stderr
    assert_harmless(ran.stderr)  # -v: "host1: ready, ... [hostname=...]"
    checked = anet(own, "hosts", "check", "-S", "host1", "--format", "jsonl")
    assert json.loads(checked.stdout)["hostname"] == HOSTILE  # for scripts: exact, JSON-escaped
    assert b"\x1b" not in checked.stdout
    assert time.monotonic() - started < 60


def test_a_hostile_command_line_in_anet_find_is_escaped(tmp_path):
    marker = f"anet-hostile-{time.monotonic_ns()}"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker, HOSTILE],
        stdin=subprocess.DEVNULL,
    )
    try:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
        found = subprocess.run(
            [sys.executable, "-m", "anet", "find", marker, "-S", ":"],
            capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        sleeper.kill()
        sleeper.wait()
    assert found.returncode == 0, found.stderr
    assert marker.encode() in found.stdout
    assert b"\x1b" not in found.stdout and b"\x07" not in found.stdout
    assert b"\\x1b]0;pwned" in found.stdout
