"""`anet status` and `anet report` as text, from numbers made by hand: jobs and attempts are
named apart, the axes carry round numbers, the failed jobs show their exit status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anet.cli.report import status_text
from anet.views.report import log_ticks, render_report, time_ticks, value_ticks
from anet.views.stats import HostStats, JobLine, RunStats


def stats() -> RunStats:
    """3 failed jobs after 9 failed attempts (each job failed 3 times) on 2 hosts, 5 s of wall
    time and 8 s of attempts (2 slots)."""
    return RunStats(
        Path("/tmp/j.sqlite"),
        {"batch_path": "batch.txt"},
        total=10,
        succeeded=7,
        failed=3,
        attempts=16,
        start=1000.0,
        end=1005.0,
        hosts=[
            HostStats("node1", 6, 2, 10, 6, 5.0, 1000.0, 1005.0),
            HostStats("node2", 4, 1, 6, 3, 3.0, 1000.0, 1004.0),
        ],
        failed_jobs=[
            JobLine(2, "node1", 0.5, "no space left", "exit 1"),
            JobLine(5, "node2", 0.2, "killed by signal 9", "signal 9"),
            JobLine(8, "node1", 0.0, "2 hosts were lost while running it", "-"),
        ],
        events=[(1000.0, "node1", "ready", "2"), (1000.1, "node2", "ready", "2")],
        throughput={"node1": [1, 3, 0, 2], "node2": [2, 0, 1, 1]},
        bucket=1.25,
        histogram=[(0.012, 0.05, 3), (0.05, 0.2, 2), (0.2, 0.9, 2)],
    )


def test_status_names_jobs_and_attempts_apart():
    text = status_text(stats())
    assert "10/10 jobs done, 3 failed, 16 attempts, 5s (2.0 jobs/s)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("host"))
    assert header.split("  ")[1:] and re.split(r"\s{2,}", header.strip()) == [
        "host", "jobs", "failed jobs", "attempts", "failed attempts", "jobs/min", "mean",
        "summed run time",
    ]  # fmt: skip
    row = re.split(r"\s{2,}", next(line for line in lines if "node1" in line).strip())
    assert row == ["node1", "6", "2", "10", "6", "72", "500ms", "5s"]
    assert "  job 2 on node1: exit 1: no space left" in text
    assert "  job 5 on node2: killed by signal 9" in text  # the status is not said twice


def test_report_names_jobs_and_attempts_apart_and_shows_exit_status():
    page = render_report(stats())
    assert "busy" not in page
    heads = re.findall(r"<th>([^<]*)</th>", page)
    assert heads[:8] == [
        "host", "jobs", "failed jobs", "attempts", "failed attempts", "jobs/min",
        "mean run time", "summed run time",
    ]  # fmt: skip
    totals = re.findall(r"<span><b>([^<]*)</b>([^<]*)</span>", page)
    assert totals == [
        ("10/10", "jobs done"), ("3", "failed jobs"), ("16", "attempts"), ("5s", "wall time"),
        ("2.0", "jobs/s"), ("2", "hosts"),
    ]  # fmt: skip
    failed = page.split("<h2>Failed jobs (3)</h2>", 1)[1]
    assert re.findall(r"<th>([^<]*)</th>", failed) == [
        "job", "host", "run time", "exit status", "why"
    ]  # fmt: skip
    assert "<td>exit 1</td><td>no space left</td>" in failed
    assert "<td>signal 9</td>" in failed
    only = stats()
    only.failed_jobs = [JobLine(2, "node1", 0.5, "exit 1", "exit 1")]  # no stderr to tell why
    assert "<td>exit 1</td><td></td>" in render_report(only)  # not "exit 1" twice


def test_value_ticks_are_round_and_cover_the_top():
    assert value_ticks(8.72) == [0, 2, 4, 6, 8, 10]
    assert value_ticks(0.37) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert value_ticks(3, whole=True) == [0, 1, 2, 3]
    assert value_ticks(1, whole=True) == [0, 1]
    assert value_ticks(0) == [0, 1]  # an empty plot still has an axis
    assert value_ticks(1234) == [0, 500, 1000, 1500]


def test_time_ticks_fall_on_round_durations():
    assert time_ticks(5.3) == [0, 1, 2, 3, 4, 5]
    assert time_ticks(0.9) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert time_ticks(100) == [0, 30, 60, 90]
    assert time_ticks(3000) == [0, 600, 1200, 1800, 2400, 3000]


def test_log_ticks_fall_on_round_run_times():
    assert log_ticks(0.012, 0.9) == pytest.approx([0.02, 0.05, 0.1, 0.2, 0.5])
    assert log_ticks(0.003, 40.0) == pytest.approx([0.01, 0.1, 1, 10])
    assert log_ticks(0.21, 0.29) == []  # no round number inside: the ends are labelled


def test_report_axes_carry_only_round_numbers():
    page = render_report(stats())
    labels = re.findall(r'text-anchor="(?:end|middle)">([^<]*)</text>', page)
    numbers = [label for label in labels if re.fullmatch(r"[\d.]+(ms|s)?", label)]
    assert numbers, labels
    for label in numbers:
        digits = label.rstrip("ms").replace(".", "").strip("0")
        assert len(digits) <= 2, f"not a round tick: {label} in {labels}"  # 1.5, 20ms: round


def test_report_of_a_journal_without_host_events():
    """A journal from before host events were kept: the timeline has bars without marks (it
    raised ValueError from a zip of no events with one end)."""
    old = stats()
    old.events = []
    page = render_report(old)
    assert page.count("<svg") == 3 and 'class="idle"' in page
