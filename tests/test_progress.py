"""Progress view, status line and end summary: pure rendering, driven by a fake clock and a
recorded event stream, compared as text snapshots."""

from __future__ import annotations

import asyncio
import io

from anet.api import HostState
from anet.core.record import JobResult
from anet.remote.hosts import parse_spec
from anet.views.progress import ProgressView, Rates, Tally, render_text, status_line, take_snapshot
from anet.views.summary import FailedJobs, last_error_line, render_summary

# (fake time, host, event): what the master saw, replayed onto the real HostState counters.
EVENTS = [
    (0.0, "node1", "ready 4"),
    (0.5, "node2", "ready 2"),
    (1.0, "node1", "start"), (1.0, "node1", "start"), (1.0, "node2", "start"),
    (3.0, "node1", "ok 2.0"), (3.5, "node2", "fail 2.5"), (4.0, "node1", "ok 3.0"),
    (4.0, "node1", "start"), (5.0, "node3", "unreachable 30"), (6.0, "node1", "spec-won 1.5"),
    (9.0, "node2", "lost"),
]  # fmt: skip


def replay(until: float, tally: Tally, hosts: dict[str, HostState], after: float = -1) -> None:
    """Apply the recorded events in (`after`, `until`], as api.Cluster updates its counters."""
    for when, label, event in EVENTS:
        if when <= after:
            continue
        if when > until:
            break
        h = hosts[label]
        h.last_heard = when
        kind, _, arg = event.partition(" ")
        if kind == "ready":
            h.state, h.slots = "ready", int(arg)
        elif kind == "start":
            h.running += 1
        elif kind in ("ok", "fail", "spec-won"):
            h.running -= 1
            h.ended += 1
            h.busy_time += float(arg)
            h.done += 1
            tally.done += 1
            if kind == "fail":
                h.failed_attempts += 1
                tally.failed += 1
            h.spec_won += kind == "spec-won"
        elif kind == "unreachable":
            h.state, h.retry_at, h.last_heard = "backing off", when + float(arg), None
        elif kind == "lost":
            h.state, h.running, h.retry_at = "backing off", 0, when + 4.0


def fresh() -> tuple[Tally, dict[str, HostState]]:
    hosts = {name: HostState(parse_spec(name)) for name in ("node1", "node2", "node3")}
    return Tally(total=10), hosts


def frames(times: list[float]) -> tuple[list[str], list[str]]:
    tally, hosts = fresh()
    rates = Rates(window=60)
    texts, lines = [], []
    before = -1.0
    for now in times:
        replay(now, tally, hosts, before)
        before = now
        snap = take_snapshot(tally, hosts, elapsed=now, now=now)
        rates.observe(snap)
        texts.append(render_text(snap, rates, width=100))
        lines.append(status_line(snap, rates))
    return texts, lines


LIVE_AT_10 = """\
                                         4/10 1 failed, 0 running, 6 queued  0.4/s  ETA 15s
host   state            running  jobs  jobs/min  mean  failed attempts  spec won/lost   heard
node1  ready                0/4     3        18  2.2s                0            1/0  4s ago
node2  backing off 3s       0/2     1         6  2.5s                1            0/0  1s ago
node3  backing off 25s      0/0     0         0     -                0            0/0       -
"""


def test_live_view_snapshot_from_a_recorded_event_stream():
    texts, _ = frames([0.0, 2.0, 10.0])
    assert "0/10 0 failed, 0 running, 10 queued  -/s  ETA -" in texts[0]
    assert "0/10 0 failed, 3 running, 7 queued" in texts[1]
    bar_and_table = texts[2].split("\n", 1)
    assert bar_and_table[0].startswith("━")  # the bar comes first, 40% drawn
    got = [line.rstrip() for line in texts[2].splitlines()]
    want = LIVE_AT_10.splitlines()
    assert got[0].endswith(want[0].strip())
    assert got[1:] == want[1:]


def test_status_line_for_logs():
    _, lines = frames([0.0, 10.0])
    assert lines[0] == (
        "anet: 0/10 done, 0 failed, 0 running, 10 queued; - jobs/s, ETA -, elapsed 0s;"
        " 1/3 hosts ready"
    )
    assert lines[1] == (
        "anet: 4/10 done, 1 failed, 0 running, 6 queued; 0.4 jobs/s, ETA 15s, elapsed 10s;"
        " 1/3 hosts ready"
    )


def test_rates_forget_what_is_older_than_the_window():
    tally, hosts = fresh()
    rates = Rates(window=10)
    for now in range(0, 31):
        tally.done = now * 5 if now < 20 else 100  # 5 jobs/s, then stuck
        rates.observe(take_snapshot(tally, hosts, float(now), float(now)))
    assert rates.overall() == 0.0  # the last 10 s saw nothing: no stale 5/s
    assert rates.eta(take_snapshot(tally, hosts, 30.0, 30.0)) is None


def test_summary_text():
    tally, hosts = fresh()
    replay(10.0, tally, hosts)
    snap = take_snapshot(tally, hosts, elapsed=60.0, now=10.0)
    failed = FailedJobs(keep=1)
    failed.add(JobResult(4, False, 3, None, "node2", 3, 2.5, b"", b"step 1\nno space left\n\n"))
    failed.add(JobResult(9, False, None, 9, "node2", 3, 2.5, b"", b""))
    text = render_summary(snap, failed, [("journal", "/tmp/j.sqlite")])
    assert text == (
        "anet: 4 jobs done, 1 failed, in 1m00s (0.1 jobs/s)\n"
        "  host   state            slots  jobs  jobs/min  mean  failed attempts  spec won/lost\n"
        "  node1  ready                4     3         3  2.2s                0            1/0\n"
        "  node2  backing off 3s       2     1         1  2.5s                1            0/0\n"
        "  node3  backing off 25s      0     0         0     -                0            0/0\n"
        "failed jobs (2):\n"
        "  job 4: no space left\n"
        "  ... and 1 more (anet status JOURNAL lists them all)\n"
        "journal: /tmp/j.sqlite\n"
    )


def test_last_error_line_prefers_anets_own_explanation():
    lost = JobResult(1, False, None, None, "h", 5, 0.0, b"", b"x\n", error="5 hosts were\nlost")
    killed = JobResult(2, False, None, 9, "h", 1, 0.0, b"", b"")
    assert last_error_line(lost) == "5 hosts were lost"
    assert last_error_line(killed) == "killed by signal 9"


def test_view_redraws_on_its_timer_not_per_event():
    """Status lines every interval, however many results arrive in between."""
    calls = []
    tally, hosts = fresh()

    def source(elapsed: float):
        calls.append(elapsed)
        return take_snapshot(tally, hosts, elapsed, elapsed)

    async def main() -> str:
        stream = io.StringIO()
        async with ProgressView(stream, source, live=False, interval=0.05):
            for _ in range(20):
                tally.done += 1000  # thousands of results: no redraw each
                await asyncio.sleep(0.0125)
        return stream.getvalue()

    out = asyncio.run(main())
    assert 3 <= out.count("\n") <= 6, out
    assert len(calls) <= 7


def test_a_big_cluster_shows_what_fits_with_the_hosts_in_trouble_first():
    hosts = {f"n{i:02d}": HostState(parse_spec(f"n{i:02d}")) for i in range(30)}
    for h in hosts.values():
        h.state, h.slots = "ready", 4
    hosts["n17"].state, hosts["n17"].retry_at = "backing off", 12.0
    hosts["n23"].state = "failed"
    snap = take_snapshot(Tally(total=100), hosts, elapsed=2.0, now=2.0)
    text = render_text(snap, Rates(), width=100, max_rows=7).splitlines()
    names = [line.split()[0] for line in text[2:-1]]
    assert names == ["n17", "n23", "n00", "n01", "n02", "n03"]
    assert text[1].split()[:2] == ["host", "state"]
    assert "backing off 10s" in text[2] and "given up" in text[3]
    assert text[-1] == "... and 24 more hosts, all ready"


def test_a_narrow_terminal_gets_fewer_columns_never_a_wrapped_line():
    tally, hosts = fresh()
    replay(10.0, tally, hosts)
    rates = Rates(window=60)
    for now in (0.0, 10.0):
        rates.observe(take_snapshot(tally, hosts, elapsed=now, now=now))
    snap = take_snapshot(tally, hosts, elapsed=10.0, now=10.0)
    headers = {}
    for width in (80, 60, 40, 30, 20):
        lines = render_text(snap, rates, width=width).splitlines()
        assert len(lines) == 5 and all(len(line) <= width for line in lines), (width, lines)
        headers[width] = lines[1].split("  ")
        assert [line.split()[0][:2] for line in lines[2:]] == ["no"] * 3  # a row each
    assert "spec won/lost" not in " ".join(headers[80]) and "jobs/min" in headers[60]
    assert [h.strip() for h in headers[30] if h] == ["host", "state", "jobs"]
    assert lines[2] == "no…  ready"  # 20 columns: the names are cut, marked
