"""`anet status|report BATCH` find the batch's default journal; `--log-json` makes stderr JSON
lines only (the end summary a JSON record). The real `anet`, on this machine (`-S :`)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anet import logs
from anet.views.observe import ObserveArgs, RunObservers

ROOT = Path(__file__).resolve().parent.parent


def anet(folder: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`anet ARGS` run in `folder`, its journals kept there, no $ANET_HOSTS from outside."""
    env = {k: v for k, v in os.environ.items() if k not in ("ANET_HOSTS", "ANET_PROGRESS")}
    env |= {"PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(folder / "state"), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "anet", *args], cwd=folder, env=env, capture_output=True,
        text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A batch of three jobs, the second failing with a line on its stderr."""
    (tmp_path / "batch.txt").write_text("echo a\necho oops >&2; exit 3\necho c\n")
    return tmp_path


def json_lines(text: str) -> list[dict]:
    """Every line of `text` as a JSON object; fails on the first line that is not one."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}\n{text}")
    assert all(isinstance(r, dict) and "event" in r and "level" in r for r in records), text
    return records


# -- status and report of a batch ---------------------------------------------------------------


def test_status_and_report_of_a_batch_read_its_default_journal(folder):
    ran = anet(folder, "-S", ":", "-q", "--retries", "0", "batch.txt")
    assert ran.returncode == 1, ran.stderr
    [journal] = (folder / "state" / "anet" / "journals").glob("batch.txt-*.sqlite")
    by_batch = anet(folder, "status", "batch.txt")
    assert by_batch.returncode == 0, by_batch.stderr
    by_journal = anet(folder, "status", str(journal))
    assert by_batch.stdout.splitlines()[:3] == by_journal.stdout.splitlines()[:3]
    assert f"journal: {journal}" in by_batch.stdout and "3/3" in by_batch.stdout
    report = anet(folder, "report", "batch.txt", "-o", "r.html")
    assert report.returncode == 0, report.stderr
    assert "oops" in (folder / "r.html").read_text()  # the failed job, from the journal


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_file_that_is_no_journal_and_was_never_run_is_one_clear_line(folder, command):
    (folder / "notes.txt").write_text("not a batch anyone ran\n")
    done = anet(folder, command, "notes.txt")
    assert done.returncode == 255
    [line] = done.stderr.splitlines()
    assert line.startswith("anet: notes.txt is not a journal"), line
    assert "database" not in line and str(folder / "state") in line, line
    assert not (folder / "report.html").exists()


# -- --log-json ---------------------------------------------------------------------------------


def test_log_json_makes_every_stderr_line_of_a_run_json(folder):
    # ANET_PROGRESS=live would draw the live view on this pipe: with --log-json it must not.
    done = anet(
        folder, "-S", ":", "--log-json", "--retries", "0", "--joblog", "j.tsv", "batch.txt",
        ANET_PROGRESS="live",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    records = json_lines(done.stderr)
    [summary] = [r for r in records if r["event"] == "summary"]
    assert (summary["done"], summary["failed"], summary["total"]) == (3, 1, 3)
    assert summary["failed_jobs"] == [{"id": 1, "why": "oops"}]
    [host] = summary["hosts"]
    assert (host["host"], host["done"], host["failed_attempts"]) == ("local", 3, 1)
    assert summary["joblog"] == "j.tsv" and summary["journal"].endswith(".sqlite")
    assert any(r["level"] == "warning" and r.get("failed") == 1 for r in records)


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-json", "no-such-batch.txt"],  # anet's own error
        ["--log-json", "-S", ":", "batch.txt", "--no-such-option"],  # click's usage error
        ["--log-json", "status", "batch.txt"],  # no journal yet
        ["--log-json", "-S", "127.0.0.1:1", "--find", "x"],  # a host that cannot be asked
        ["--log-json", "-S", "127.0.0.1:1", "sync", "."],  # the sync table
    ],
    ids=" ".join,
)
def test_log_json_makes_every_stderr_line_of_other_commands_json(folder, argv):
    done = anet(folder, *argv)
    assert done.returncode != 0 and done.stderr, done
    assert json_lines(done.stderr)


class _NoHosts:
    """A cluster with no host yet: the view's source reads `hosts` and `connected` only."""

    def __init__(self) -> None:
        self.hosts: dict = {}
        self.connected = True


def test_log_json_progress_lines_are_json_records(tmp_path, monkeypatch):
    monkeypatch.setattr("anet.views.progress.STATUS_INTERVAL", 0.02)
    monkeypatch.setenv("ANET_PROGRESS", "live")  # asks for the live view: not with --log-json
    batch = tmp_path / "b.txt"
    batch.write_text("true\n")
    stderr = io.StringIO()

    async def run() -> None:
        with RunObservers(ObserveArgs(progress=True), stderr, batch, None) as seen:
            async with seen.watching(_NoHosts()):  # type: ignore[arg-type]
                deadline = time.monotonic() + 10
                while stderr.getvalue().count("\n") < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

    logs.configure(0, True, stderr)
    try:
        asyncio.run(run())
    finally:
        logs.configure()
    statuses = json_lines(stderr.getvalue())
    assert len(statuses) >= 3
    assert all(r["event"] == "status" for r in statuses), statuses
    assert all(r["done"] == 0 and r["total"] == 1 and r["hosts_ready"] == 0 for r in statuses)
