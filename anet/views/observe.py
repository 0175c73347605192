"""What `anet run` shows and keeps besides the result stream: progress, summary, joblog, results
folder. One object per run gathers them, so `cli_run.program` only wires. Each result is seen
when it arrives (`arrived`: counts, the failed list, the results folder), before keep-order
holds it back (that is the run's own business: runs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from .. import logs
from ..core.batch import count_jobs
from ..core.record import JobResult
from ..streams.joblog import Joblog
from ..streams.journal import Journal
from ..streams.resultsdir import ResultsDir
from . import jsonlog
from .progress import ProgressView, Snapshot, Tally, is_terminal, take_snapshot
from .summary import FailedJobs, render_summary

if TYPE_CHECKING:
    from ..api import Cluster


@dataclass(frozen=True, slots=True)
class ObserveArgs:
    """--joblog, --results, -k, --tag, --quiet, --progress as given."""

    joblog: Path | None = None
    results: Path | None = None
    keep_order: bool = False
    tag: bool = False
    quiet: bool = False
    progress: bool = False


def progress_view(
    args: ObserveArgs, stderr: TextIO, source: Callable[[float], Snapshot]
) -> ProgressView | None:
    """The live view on a terminal; status lines elsewhere only with --progress (a run
    standalone or through a pool alike).

    A status line every 10 s into a pipe that nobody reads would fill it in about 96
    minutes; a log file that wants them asks for them. With --log-json stderr is JSON lines
    only: no live view, and the status lines are JSON records.
    """
    if args.quiet:
        return None
    if logs.is_json():
        if not args.progress:
            return None
        return ProgressView(stderr, source, live=False, status=jsonlog.status_line)
    live = is_terminal(stderr) or os.environ.get("ANET_PROGRESS") == "live"
    if not live and not args.progress:
        return None
    return ProgressView(stderr, source, live=live)


class RunObservers:
    """Everything a run writes besides stdout; use as a context manager around the run."""

    def __init__(
        self,
        args: ObserveArgs,
        stderr: TextIO,
        batch: Path | None,
        journal: Journal | None,
    ) -> None:
        self.args = args
        self._stderr = stderr
        self._batch = batch
        self._journal = journal
        self.tally = Tally()
        self.failed = FailedJobs()
        self._joblog = Joblog.open(args.joblog) if args.joblog else None
        self._results = ResultsDir(args.results) if args.results else None
        self.final: Snapshot | None = None

    def __enter__(self) -> RunObservers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._joblog is not None:
            self._joblog.close()

    # -- wiring ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watching(self, cluster: Cluster) -> AsyncIterator[None]:
        """Joblog and progress for the run's duration; keeps the last snapshot for the summary."""
        if self._joblog is not None:
            cluster.observe_attempts(self._joblog.write)
        loop = asyncio.get_running_loop()
        start = loop.time()
        source = self._source(cluster)
        view = self._view(source)
        counting = loop.create_task(self._count())
        try:
            if view is None:
                yield
            else:
                async with view:
                    yield
            if not self.args.quiet and cluster.connected:  # a run with nothing to do: none
                self.final = source(loop.time() - start)
        finally:
            counting.cancel()

    def _view(self, source: Callable[[float], Snapshot]) -> ProgressView | None:
        return progress_view(self.args, self._stderr, source)

    def _source(self, cluster: Cluster) -> Callable[[float], Snapshot]:
        def source(elapsed: float) -> Snapshot:
            now = asyncio.get_running_loop().time()
            return take_snapshot(self.tally, cluster.hosts, elapsed, now)

        return source

    async def _count(self) -> None:
        if self._batch is None or self.tally.total is not None:  # a stream, or counted already
            return
        with contextlib.suppress(Exception):  # a progress bar without a total is still useful
            self.tally.total = await asyncio.to_thread(count_jobs, self._batch)

    # -- per result --------------------------------------------------------------------------

    def arrived(self, result: JobResult) -> Awaitable[None] | None:
        """A final result came from the cluster. Its results folder is written by a thread (a
        spooled output may be gigabytes: heartbeats and other hosts must not wait for it); the
        run awaits it before the result goes on, so a folder is whole before its result is
        written out and marked delivered, as when it was written on the loop."""
        self.tally.done += 1
        if not result.ok:
            self.tally.failed += 1
            self.failed.add(result)
        if self._results is None:
            return None
        return asyncio.to_thread(self._results.write, result)

    # -- the end -----------------------------------------------------------------------------

    def print_summary(self) -> None:
        """On stderr, unless --quiet or the run never started; a JSON record with --log-json."""
        if self.args.quiet or self.final is None:
            return
        journal = self._journal.path if self._journal is not None else None
        places = summary_places(journal, self.args.joblog, self.args.results)
        self._stderr.write(end_summary(self.final, self.failed, places))
        self._stderr.flush()


def summary_places(
    journal: Path | str | None, joblog: Path | str | None, results: Path | str | None
) -> list[tuple[str, Path | str]]:
    """The (what, where) pairs the end summary names: the run's files it has."""
    named = (("journal", journal), ("joblog", joblog), ("results", results))
    return [(what, where) for what, where in named if where is not None]


def end_summary(snap: Snapshot, failed: FailedJobs, places: list[tuple[str, Path | str]]) -> str:
    """The end summary as `anet run` prints it on stderr (a pool's run too): a table, or one
    JSON record with --log-json."""
    if logs.is_json():
        return jsonlog.summary_line(snap, failed, places)
    return render_summary(snap, failed, places)
