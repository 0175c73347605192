"""`anet report`: one self-contained HTML page about a run, drawn from its journal.

Inline SVG and CSS only, no script and no link to anything: the page opens offline, in a mail
attachment, years later. It shows the totals, each host's throughput over time (the Beowulf
post's primes-per-second-per-computer plot), the run time distribution, a timeline of hosts
joining, being lost and coming back, and the slowest and failed jobs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

from .progress import duration, job_time
from .stats import HostStats, JobLine, RunStats

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
)  # fmt: skip
"""Tableau 10: distinguishable, also for most colour-blind readers."""
WIDTH, HEIGHT, MARGIN = 860, 260, 48


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _when(unix: float | None) -> str:
    return "-" if unix is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _tick(seconds: float, step: float) -> str:
    """A time axis label: tenths of a second when the ticks are that close."""
    return f"{seconds:.1f}s" if step < 1 else duration(seconds)


def _number(value: float) -> str:
    """A tick value as written: `2`, `0.3`, `1500` (never `0.30000000000000004`)."""
    return f"{round(value, 9):g}"


def _round_step(least: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `least` (> 0)."""
    power = 10.0 ** math.floor(math.log10(least))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= least * (1 - 1e-9))


def value_ticks(high: float, whole: bool = False, most: int = 5) -> list[float]:
    """Round ticks from 0 up to the first at or above `high`, at most `most` steps apart: an
    axis that reads 0, 2, 4, 6, 8, 10, never 2.18, 4.36. `whole`: counts, steps of 1 at least."""
    if high <= 0:
        return [0, 1]
    step = _round_step(high / most)
    if whole:
        step = max(step, 1)
    steps = math.ceil(high / step - 1e-9)
    return [round(k * step, 9) for k in range(steps + 1)]


TIME_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
              10800, 21600, 43200, 86400)  # fmt: skip
"""Steps a time axis may take: seconds, then whole minutes and hours a clock reads."""


def time_ticks(span: float, most: int = 6) -> list[float]:
    """Round times from 0 to at most `span` seconds, no more than `most` + 1 of them."""
    fit = (s for s in TIME_STEPS if span / s <= most)
    step = next(fit, None) or 86400 * _round_step(span / most / 86400)
    return [round(k * step, 9) for k in range(int(span / step + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Round run times inside [low, high] for a log axis: the powers of ten, or 1, 2 and 5
    times them when that leaves fewer than 3; empty when no round number falls inside."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for multiples in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            round(m * 10.0**k, 12)
            for k in range(first, last + 1)
            for m in multiples
            if low <= m * 10.0**k <= high
        ]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else []


def _axes(x_label: str, y_label: str, y_ticks: Sequence[float],
          x_ticks: Sequence[tuple[float, str]]) -> str:  # fmt: skip
    """Frame, a y grid line at each of `y_ticks` (the last is the top of the plot), x tick
    labels at fractions of the width."""
    parts = []
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    for value in y_ticks:
        y = HEIGHT - MARGIN - inner_h * value / y_ticks[-1]
        parts.append(
            f'<line x1="{MARGIN}" y1="{y:.1f}" x2="{WIDTH - MARGIN}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(value)}</text>'
        )
    for fraction, label in x_ticks:
        x = MARGIN + inner_w * fraction
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})"'
        f' text-anchor="middle">{escape(y_label)}</text>'
    )
    return "".join(parts)


def _time_axis(span: float) -> list[tuple[float, str]]:
    """(fraction of the width, label) of the round times along a `span` seconds long axis."""
    ticks = time_ticks(span)
    step = ticks[1] if len(ticks) > 1 else 1.0
    return [(t / span if span else 0.0, _tick(t, step)) for t in ticks]


def _svg(body: str, height: int = HEIGHT) -> str:
    return f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">{body}</svg>'


def throughput_svg(stats: RunStats) -> str:
    """One line per host: its finished jobs per second over the run."""
    if not stats.throughput:
        return "<p>No finished attempt yet.</p>"
    columns = len(next(iter(stats.throughput.values())))
    rates = {h: _smooth([n / stats.bucket for n in s]) for h, s in sorted(stats.throughput.items())}
    y_ticks = value_ticks(max(max(s) for s in rates.values()))
    y_max = y_ticks[-1]
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    parts = [_axes("time since the start", "jobs/s", y_ticks, _time_axis(stats.wall))]
    for index, (host, series) in enumerate(rates.items()):
        points = " ".join(
            f"{MARGIN + inner_w * i / max(columns - 1, 1):.1f},"
            f"{HEIGHT - MARGIN - inner_h * v / y_max:.1f}"
            for i, v in enumerate(series)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{_color(index)}" stroke-width="2">'
            f"<title>{escape(host)}</title></polyline>"
        )
    legend = "".join(
        f'<span class="key"><i style="background:{_color(i)}"></i>{escape(h)}</span>'
        for i, h in enumerate(rates)
    )
    return _svg("".join(parts)) + f'<div class="legend">{legend}</div>'


def _smooth(series: list[float]) -> list[float]:
    """A centred moving average over 3 columns: jobs finish in bursts, throughput is a trend."""
    if len(series) < 3:
        return series
    inner = [(a + b + c) / 3 for a, b, c in zip(series, series[1:], series[2:], strict=False)]
    return [(series[0] + series[1]) / 2, *inner, (series[-2] + series[-1]) / 2]


def histogram_svg(stats: RunStats) -> str:
    """Run times of successful attempts, log-spaced bins."""
    if not stats.histogram:
        return "<p>No successful attempt yet.</p>"
    y_ticks = value_ticks(max(n for _, _, n in stats.histogram), whole=True)
    y_max = y_ticks[-1]
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    bar_w = inner_w / len(stats.histogram)
    parts = [_axes("run time (log scale)", "attempts", y_ticks, _log_axis(stats.histogram))]
    for i, (low, high, count) in enumerate(stats.histogram):
        h = inner_h * count / y_max
        parts.append(
            f'<rect x="{MARGIN + i * bar_w + 1:.1f}" y="{HEIGHT - MARGIN - h:.1f}"'
            f' width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
            f"<title>{job_time(low)} to {job_time(high)}: {count}</title></rect>"
        )
    return _svg("".join(parts))


def _log_axis(bins: Sequence[tuple[float, float, int]]) -> list[tuple[float, str]]:
    """(fraction of the width, label) of round run times on the histogram's log axis; its two
    ends when no round time falls between them."""
    low, high = bins[0][0], bins[-1][1]
    span = math.log10(high) - math.log10(low) or 1.0
    ticks = log_ticks(low, high) or [low, high]
    return [((math.log10(t) - math.log10(low)) / span, job_time(t)) for t in ticks]


_EVENT_COLORS = {"ready": "#59a14f", "back": "#59a14f", "lost": "#e15759",
                 "unreachable": "#f28e2b", "failed": "#7f0000", "held": "#edc948",
                 "free": "#59a14f"}  # fmt: skip
_UP = ("ready", "back", "free")
"""Events after which a host runs jobs."""
HELD_COLOR = "#edc948"
"""The timeline's colour for a host polite mode held (loaded, low memory, yielding)."""


def timeline_svg(stats: RunStats) -> str:
    """Per host: when it was up or down (bar), and its joins, losses and returns (marks)."""
    hosts = sorted({h.host for h in stats.hosts} | {e[1] for e in stats.events})
    times = [e[0] for e in stats.events] + [t for t in (stats.start, stats.end) if t is not None]
    if not hosts or not times:
        return "<p>No host activity recorded.</p>"
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-3)
    row, left = 26, 160
    height = MARGIN + row * len(hosts)
    inner_w = WIDTH - left - 20

    def x(t: float) -> float:
        return left + inner_w * (t - t0) / span

    parts = []
    for index, host in enumerate(hosts):
        y = 10 + index * row
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(host)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 4}" width="{inner_w}" height="12" class="idle"/>')
        events = [e for e in stats.events if e[1] == host]
        ends = [*(e[0] for e in events[1:]), t1] if events else []  # none: an old journal
        for (when, _, event, _), until in zip(events, ends, strict=True):
            up, what = event in _UP, "up" if event in _UP else event
            fill = PALETTE[0] if up else HELD_COLOR if event == "held" else "#f4b6b6"
            parts.append(
                f'<rect x="{x(when):.1f}" y="{y + 4}" width="{max(x(until) - x(when), 1):.1f}"'
                f' height="12" fill="{fill}">'
                f"<title>{escape(host)}: {what}</title></rect>"
            )
        for when, _, event, detail in events:
            color = _EVENT_COLORS.get(event, "#333")
            note = escape(f"{_when(when)} {event}" + (f": {detail}" if detail else ""))
            parts.append(
                f'<path d="M{x(when):.1f},{y} l5,-0 l-5,10 l-5,-10 z" fill="{color}">'
                f"<title>{note}</title></path>"
            )
    axis_y = height - MARGIN + 20
    for fraction, label in _time_axis(span):
        parts.append(
            f'<text x="{left + inner_w * fraction:.1f}" y="{axis_y}" text-anchor="middle">'
            f"{label}</text>"
        )
    legend = "".join(
        f'<span class="key"><i style="background:{c}"></i>{e}</span>'
        for e, c in _EVENT_COLORS.items()
        if e not in ("back", "free")
    )
    key = f'<span class="key"><i style="background:{PALETTE[0]}"></i>up</span>'
    key += f'<span class="key"><i style="background:{HELD_COLOR}"></i>held</span>'
    key += '<span class="key"><i style="background:#f4b6b6"></i>down</span>'
    return _svg("".join(parts), height) + f'<div class="legend">{key} marks: {legend}</div>'


def _host_table(hosts: Sequence[HostStats], wall: float, held: dict[str, dict[str, float]]) -> str:
    """Jobs (each counted once, where its final result came from) and attempts (every run of a
    job, retries and speculative copies too) side by side, never both called "failed"; and
    the time polite mode held each host, when it held one."""
    head = "".join(f"<th>{name}</th>" for name in HOST_COLUMNS + (("time held",) if held else ()))
    rows = "".join(
        f"<tr><td>{escape(h.host)}</td><td>{h.done}</td><td>{h.failed}</td><td>{h.attempts}</td>"
        f"<td>{h.failed_attempts}</td><td>{60 * h.done / wall if wall else 0:.1f}</td>"
        f"<td>{job_time(h.mean)}</td><td>{duration(h.busy)}</td>"
        + (f"<td>{escape(time_held(held.get(h.host, {})))}</td>" if held else "")
        + "</tr>"
        for h in hosts
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def time_held(kinds: dict[str, float]) -> str:
    """`1m05s (loaded 50s, yielding 15s)`: how long polite mode held a host, and why."""
    if not kinds:
        return "-"
    total = duration(sum(kinds.values()))
    if len(kinds) == 1:
        return f"{total} ({next(iter(kinds))})"
    return f"{total} ({', '.join(f'{k} {duration(v)}' for k, v in sorted(kinds.items()))})"


HOST_COLUMNS = ("host", "jobs", "failed jobs", "attempts", "failed attempts", "jobs/min",
                "mean run time", "summed run time")  # fmt: skip
"""The hosts table's columns; "summed run time" adds up the attempts of all its slots, so it
may well exceed the wall time."""


def _jobs_table(jobs: Sequence[JobLine], why: bool) -> str:
    if not jobs:
        return "<p>None.</p>"
    head = "<tr><th>job</th><th>host</th><th>run time</th>"
    head += "<th>exit status</th><th>why</th>" if why else ""
    rows = "".join(
        f"<tr><td>{j.id}</td><td>{escape(j.host)}</td><td>{job_time(j.runtime)}</td>"
        + (f"<td>{j.status}</td><td>{escape(_beyond(j.why, j.status))}</td>" if why else "")
        + "</tr>"
        for j in jobs
    )
    return f"<table>{head}</tr>{rows}</table>"


def _beyond(why: str, status: str) -> str:
    """Why a job failed, unless that is only its exit status, already in the cell before."""
    return "" if why == status else why


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}
td:first-child,th:first-child{text-align:left}svg text{font-size:11px;fill:#444}
.grid{stroke:#e4e4e4}.idle{fill:#f2f2f2}.legend{margin:4px 0 0 48px}
.key{margin-right:14px}.key i{display:inline-block;width:10px;height:10px;margin-right:4px}
.totals span{display:inline-block;margin-right:22px}.totals b{font-size:20px;display:block}
"""


def render_report(stats: RunStats) -> str:
    """The whole page."""
    total = "?" if stats.total is None else str(stats.total)
    rate = f"{(stats.succeeded + stats.failed) / stats.wall:.1f}" if stats.wall else "-"
    totals = "".join(
        f"<span><b>{escape(value)}</b>{label}</span>"
        for value, label in [
            (f"{stats.succeeded + stats.failed}/{total}", "jobs done"),
            (str(stats.failed), "failed jobs"),
            (str(stats.attempts), "attempts"),
            (duration(stats.wall), "wall time"),
            (rate, "jobs/s"),
            (str(len(stats.hosts)), "hosts"),
            *([(duration(stats.time_held), "held by polite mode")] if stats.held else []),
        ]
    )
    batch = escape(stats.meta.get("batch_path", "?"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>anet report: {batch}</title>
<style>{_CSS}</style></head><body>
<h1>anet report</h1>
<p>Batch <code>{batch}</code>, journal <code>{escape(str(stats.path))}</code>;
from {_when(stats.start)} to {_when(stats.end)}.</p>
<div class="totals">{totals}</div>
<h2>Throughput per host</h2>{throughput_svg(stats)}
<h2>Hosts</h2>{_host_table(stats.hosts, stats.wall, stats.held)}
<h2>Run time distribution</h2>{histogram_svg(stats)}
<h2>Host timeline</h2>{timeline_svg(stats)}
<h2>Slowest jobs</h2>{_jobs_table(stats.slowest, False)}
<h2>Failed jobs ({stats.failed})</h2>{_jobs_table(stats.failed_jobs, True)}
<p><small>Made by anet {escape(stats.meta.get("anet_version", ""))}.</small></p>
</body></html>
"""
