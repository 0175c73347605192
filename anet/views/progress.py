"""How far a batch is, live: a progress bar and a per-host table on a terminal, else a status line.

Rendering is pure: `Snapshot` (numbers read from the cluster's counters at one instant) and
`Rates` (the same numbers remembered over a sliding window) go in, text or a rich renderable
comes out, so tests drive it with a fake clock and compare the text. `ProgressView` is the thin
I/O shell: a timer reads the counters every `interval` seconds and redraws. Nothing here runs
per job: at thousands of jobs per second the cost is one snapshot and one redraw per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from .tables import fit_columns, names_then_numbers, shorten

# rich is imported where a view is drawn, not here: a run whose stderr is no terminal (and
# `anet status`, the report) never draws one, and rich is a fifth of anet's start-up.
if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.text import Text

    from ..api import HostState

LIVE_INTERVAL = 0.5
"""Seconds between redraws of the live view: smooth enough to watch, a few ms of CPU a second."""
STATUS_INTERVAL = 10.0
"""Seconds between status lines when stderr is not a terminal and `--progress` asks for them."""
FRAME_BUDGET = 0.01
"""Most of one core the live view may spend drawing; a slow terminal gets fewer frames."""
RATE_WINDOW = 60.0
"""Seconds of history behind the rates and the ETA: recent enough to follow a change of pace,
long enough not to jump with every burst."""


@dataclass(slots=True)
class Tally:
    """The run's totals as the CLI counts them: one increment per final result.

    `total` stays None until the batch has been counted (in a thread, for big batches);
    `base` counts the results an earlier run left in the journal (--resume).
    """

    total: int | None = None
    base: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host at one instant, as the table shows it."""

    label: str
    state: str
    slots: int
    running: int
    done: int
    failed_attempts: int
    spec_won: int
    spec_lost: int
    mean_time: float | None
    heard_ago: float | None  # seconds since the last frame from the host
    retry_in: float | None = None  # seconds until the next connection try, backing off
    held_time: float = 0.0  # seconds polite mode held the host (its slots' time lost)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole run at one instant: `elapsed` seconds since it began."""

    elapsed: float
    total: int | None
    done: int  # final results, failures included, earlier runs' included
    failed: int
    running: int
    hosts: tuple[HostRow, ...] = ()

    @property
    def queued(self) -> int | None:
        """Jobs not finished and not running; None while the batch size is unknown."""
        return None if self.total is None else max(0, self.total - self.done - self.running)


def take_snapshot(
    tally: Tally, hosts: Mapping[str, HostState], elapsed: float, now: float
) -> Snapshot:
    """Read the counters (the tally's and each `HostState`'s) at loop time `now`."""
    rows = tuple(
        HostRow(
            label,
            _state(h),
            h.slots,
            h.running,
            h.done,
            h.failed_attempts,
            h.spec_won,
            h.spec_lost,
            h.mean_time,
            None if h.last_heard is None else max(0.0, now - h.last_heard),
            None if h.retry_at is None or h.state != "backing off" else max(0.0, h.retry_at - now),
            h.time_held(now),
        )
        for label, h in hosts.items()
    )
    running = sum(row.running for row in rows)
    total = tally.total
    done = tally.base + tally.done
    return Snapshot(elapsed, total, done, tally.failed, running, rows)


@dataclass(slots=True)
class Rates:
    """Jobs per second overall and per host, over the last `window` seconds of snapshots."""

    window: float = RATE_WINDOW
    _samples: deque[tuple[float, int, dict[str, int]]] = field(default_factory=deque)

    def observe(self, snap: Snapshot) -> None:
        """Remember the snapshot's counts; forget those older than the window (one kept)."""
        per_host = {row.label: row.done for row in snap.hosts}
        self._samples.append((snap.elapsed, snap.done, per_host))
        while len(self._samples) > 2 and snap.elapsed - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def overall(self) -> float | None:
        """Jobs per second, None until two samples span some time."""
        if len(self._samples) < 2:
            return None
        (t0, d0, _), (t1, d1, _) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def per_minute(self, label: str) -> float | None:
        """The host's finished jobs per minute."""
        if len(self._samples) < 2:
            return None
        (t0, _, h0), (t1, _, h1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return 60.0 * (h1.get(label, 0) - h0.get(label, 0)) / (t1 - t0)

    def eta(self, snap: Snapshot) -> float | None:
        """Seconds until every job is done at the current rate; None when unknowable."""
        rate = self.overall()
        if snap.total is None or not rate or rate <= 0:
            return None
        return max(0, snap.total - snap.done) / rate


# -- formatting ------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`: short enough for a table cell."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def job_time(seconds: float | None) -> str:
    """A job's run time with the precision that matters at its scale."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}s" if seconds < 60 else duration(seconds)


def _state(host: HostState) -> str:
    """A ready host whose jobs polite mode holds shows why in a word: "loaded", "low memory"."""
    if host.state == "ready" and host.held:
        return host.held.partition(":")[0]
    return str(host.state)


HELD_STATES = ("yielding", "loaded", "low memory")
"""The states of a ready host polite mode holds (the first word of dispatcher/polite.py's
reasons)."""


def host_state(row: HostRow) -> str:
    """The state column: `backing off 12s` says when the next try comes, `loaded 1m05s` how
    long polite mode has held the host in all (its time lost)."""
    if row.state == "backing off" and row.retry_in is not None:
        return f"backing off {duration(row.retry_in)}"
    if row.state in HELD_STATES:
        return f"{row.state} {duration(row.held_time)}"
    return {"failed": "given up", "closed": "closed"}.get(row.state, row.state)


def status_line(snap: Snapshot, rates: Rates) -> str:
    """One line for a log: counts, rate, ETA and how many hosts work."""
    total = "?" if snap.total is None else str(snap.total)
    queued = "?" if snap.queued is None else str(snap.queued)
    rate = rates.overall()
    ready = sum(row.state == "ready" for row in snap.hosts)
    return (
        f"anet: {snap.done}/{total} done, {snap.failed} failed, {snap.running} running,"
        f" {queued} queued; {'-' if rate is None else f'{rate:.1f}'} jobs/s,"
        f" ETA {duration(rates.eta(snap))}, elapsed {duration(snap.elapsed)};"
        f" {ready}/{len(snap.hosts)} hosts ready"
    )


_STATE_STYLES = {
    "ready": "green", "backing off": "yellow", "given up": "bold red", "loaded": "yellow",
    "low memory": "yellow", "yielding": "yellow",
}  # fmt: skip


def render(
    snap: Snapshot, rates: Rates, width: int = 100, max_rows: int | None = None
) -> RenderableType:
    """The live view: a bar with the counts, then one line per host, at most `max_rows` of them
    (a terminal shows no more; the hosts not ready come first, so trouble stays in sight).

    No line is wider than `width`: a line the terminal wraps breaks every row of the table, so
    a narrow terminal gets fewer columns instead (`fit_columns`). Lines are formatted as plain
    strings and only styled by rich: a rich Table measures every cell on every frame, which
    costs ~1 ms per host per frame.
    """
    from rich.console import Group

    hosts = list(snap.hosts)
    hidden = 0
    if max_rows is not None and len(hosts) > max_rows:
        hosts.sort(key=lambda row: row.state == "ready")  # stable: the given order otherwise
        hidden, hosts = len(hosts) - max(max_rows - 1, 0), hosts[: max(max_rows - 1, 0)]
    rows = [_cells(row, rates) for row in hosts]
    right = names_then_numbers(len(_COLUMNS), names=2)
    header = [name for name, _ in _COLUMNS]
    lines, starts, _ = fit_columns(header, rows, right, width, _DROPPED_FIRST)
    texts = [_counts_line(snap, rates, width), _line(lines[0], "bold")]
    for line, cells in zip(lines[1:], rows, strict=True):
        text = _line(line)
        style = next((s for k, s in _STATE_STYLES.items() if cells[1].startswith(k)), None)
        if style:
            text.stylize(style, starts[1], starts[1] + len(cells[1]))
        texts.append(text)
    if hidden:
        texts.append(_line(shorten(f"... and {hidden} more hosts, all ready", width), "dim"))
    return Group(*texts)


def _line(text: str, style: str = "") -> Text:
    """One line that is never wrapped: it was made to fit."""
    from rich.text import Text

    return Text(text, style=style, no_wrap=True, overflow="crop")


def _counts_line(snap: Snapshot, rates: Rates, width: int) -> Text:
    """The bar, then the counts; on a narrow terminal the counts that matter least go first
    (queued, rate, running), then the bar."""
    from rich.text import Text

    total = snap.total
    rate = rates.overall()
    parts = [
        (f" {snap.done}/{'?' if total is None else total} ", "bold"),
        (f"{snap.failed} failed", "red" if snap.failed else ""),
        (f", {snap.running} running", ""),
        (f", {'?' if snap.queued is None else snap.queued} queued", ""),
        (f"  {'-' if rate is None else f'{rate:.1f}'}/s", ""),
        (f"  ETA {duration(rates.eta(snap))}", ""),
    ]
    for dropped in (3, 4, 2):  # queued, rate, running: each can be told from the others
        if sum(len(text) for text, _ in parts) + 1 + _BAR_MIN <= width:
            break
        parts[dropped] = ("", "")
    counts = Text.assemble(*parts)
    bar = min(max(_BAR_MIN, width - 60), width - len(counts) - 1)
    if bar < _BAR_MIN:
        return _crop(counts, width)
    done = min(snap.done, total) if total else 0
    filled = round(bar * done / total) if total else 0
    finished = bool(total) and done >= total
    line = Text.assemble(
        ("━" * filled, "bar.finished" if finished else "bar.complete"),
        ("━" * (bar - filled), "bar.back"),
        " ",
        no_wrap=True,
        overflow="crop",
    )
    return line.append_text(counts)


def _crop(text: Text, width: int) -> Text:
    text.truncate(width, overflow="crop")
    text.no_wrap, text.overflow = True, "crop"
    return text


_BAR_MIN = 10
"""The narrowest bar worth drawing; below it the counts stand alone."""


def _cells(row: HostRow, rates: Rates) -> list[str]:
    per_minute = rates.per_minute(row.label)
    return [
        row.label, host_state(row), f"{row.running}/{row.slots}", str(row.done),
        "-" if per_minute is None else f"{per_minute:.0f}", job_time(row.mean_time),
        str(row.failed_attempts),
        "-" if row.spec_won < 0 else f"{row.spec_won}/{row.spec_lost}",  # a pool's run: uncounted
        "-" if row.heard_ago is None else f"{duration(row.heard_ago)} ago",
    ]  # fmt: skip


_COLUMNS = (
    ("host", "left"), ("state", "left"), ("running", "right"), ("jobs", "right"),
    ("jobs/min", "right"), ("mean", "right"), ("failed attempts", "right"),
    ("spec won/lost", "right"), ("heard", "right"),
)  # fmt: skip
_DROPPED_FIRST = (7, 8, 5, 6, 4, 2, 3)
"""The columns a narrow terminal loses, first to last: spec won/lost, heard, mean, failed
attempts, jobs/min, running, jobs. Host and state always stay."""


def render_text(snap: Snapshot, rates: Rates, width: int = 100, max_rows: int | None = None) -> str:
    """The live view as plain text (what the snapshot tests compare)."""
    from rich.console import Console

    console = Console(width=width, color_system=None, force_terminal=False, record=True,
                      file=_Null())  # fmt: skip
    console.print(render(snap, rates, width, max_rows))
    return console.export_text()


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


# -- the I/O shell ---------------------------------------------------------------------------


class _ConsoleStream:
    """A text stream for the log handler that prints whole lines above the live view."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _logs_through(stream: _ConsoleStream) -> Iterator[None]:
    """Send anet's log lines through the live view, so they do not tear its drawing."""
    handlers = [
        h for h in logging.getLogger("anet").handlers if isinstance(h, logging.StreamHandler)
    ]
    previous = [h.setStream(stream) for h in handlers]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            if old is not None:
                handler.setStream(old)


def is_terminal(stream: object) -> bool:
    """Whether a live view may draw on `stream`: a terminal (a test's StringIO or a pipe is not)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressView:
    """Redraw on a timer from `source()`: a live view on a terminal, else status lines.

    `source(elapsed)` returns the current `Snapshot`; `live` chooses the terminal view. Use as
    `async with view:`; leaving draws the last frame, so the final counts stay on screen.
    """

    def __init__(
        self,
        stream: TextIO,
        source: Callable[[float], Snapshot],
        *,
        live: bool,
        interval: float | None = None,
        status: Callable[[Snapshot, Rates], str] = status_line,
    ) -> None:
        self._stream = stream
        self._status = status  # a status line's text (JSON with --log-json: views/jsonlog.py)
        self._source = source
        self._live_mode = live
        self._interval = interval or (LIVE_INTERVAL if live else STATUS_INTERVAL)
        self._base_interval = self._interval
        self.rates = Rates()
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._logs: contextlib.ExitStack | None = None
        self._start = 0.0

    async def __aenter__(self) -> ProgressView:
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        if self._live_mode:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self._stream, stderr=True)
            self._live = Live(console=console, auto_refresh=False, redirect_stdout=False,
                              redirect_stderr=False, transient=False)  # fmt: skip
            self._live.start()
            self._logs = contextlib.ExitStack()
            self._logs.enter_context(_logs_through(_ConsoleStream(self._live)))
        self._task = loop.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._live is not None:
            self.refresh()
            self._live.stop()
            if self._logs is not None:
                self._logs.close()

    def snapshot(self) -> Snapshot:
        """The numbers now (also what the end summary shows)."""
        return self._source(asyncio.get_running_loop().time() - self._start)

    def refresh(self) -> Snapshot:
        """Read the counters once and draw them."""
        snap = self.snapshot()
        self.rates.observe(snap)
        if self._live is not None:
            started = time.process_time()
            width, height = self._live.console.size
            view = render(snap, self.rates, width, max_rows=max(height - 3, 3))
            self._live.update(view, refresh=True)
            cost = time.process_time() - started
            # Never more than FRAME_BUDGET of a core on drawing, whatever the terminal's size.
            self._interval = max(self._base_interval, cost / FRAME_BUDGET)
        else:
            self._stream.write(self._status(snap, self.rates) + "\n")
            self._stream.flush()
        return snap

    async def _tick(self) -> None:
        if self._live is None:  # status lines: the first one after an interval, not at once
            self.rates.observe(self.snapshot())
        while True:
            if self._live is not None:
                self.refresh()
            await asyncio.sleep(self._interval)
            if self._live is None:
                self.refresh()
