"""`anet BATCH` through a running pool (`anet up`): the same command, the same stdout bytes and
exit status, without a start-up of its own (docs/daemon.md).

A run goes through the pool when one is up (the default pool, or `--pool NAME`) and the run
asks nothing a pool's run cannot do yet (`_standalone_only`: hosts of its own, a stream,
--pipe, --line-buffer, polite options of its own...). A batch file goes as its bytes; a
command and its sources (`:::`, `::::`, `-a`) as the jobs this command makes. Its deps folder
is read by the pool (same user, same machine), synced for this run alone. The pool's run
keeps the journal a standalone run keeps (so --resume, --only-new and `anet status BATCH` work
alike) and the output caps this command works out (--max-output, the format's). --joblog is
written by the pool (a line per attempt, into the file this command made), --results DIR by
this command (its directory, its permissions).
Otherwise it runs standalone, saying why in one line; with `--pool NAME` named, that line is
the error instead. `--no-pool` always runs standalone. Ctrl-C cancels the pool's run (its jobs
are killed), as it stops a standalone one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..api import KEEPALIVE
from ..core.batch import read_batch
from ..core.record import JobResult
from ..errors import AnetError, UsageError
from ..logs import get_logger
from ..pool.client import Target, attach, deps_path, pool_options, request
from ..pool.place import DEFAULT_NAME, place
from ..pool.wire import WireError
from ..streams.delivery import Delivery
from ..streams.joblog import Joblog
from ..streams.journal import default_journal_path
from ..streams.output import open_output
from ..streams.resultsdir import ResultsDir
from ..streams.retention import after_run, run_policy
from ..streams.sinks import Encoder, plain_tagged
from ..views.observe import end_summary, progress_view, summary_places
from ..views.progress import HostRow, Snapshot, Tally
from ..views.summary import FailedJobs
from .common import Environment, ExitStatus, journal_key

if TYPE_CHECKING:
    from .run import RunArgs

log = get_logger()

priority_option = click.option(
    "--priority", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="Through a pool: this run's share of the hosts, weighed against the other runs'.",
)  # fmt: skip


def pool_target(args: RunArgs, env: Environment, name: str | None, no_pool: bool) -> Target | None:
    """The pool this run goes through, or None to run standalone: never silently (a run that
    asks what a pool's run cannot do says so in one line, or with `--pool NAME`, fails)."""
    if no_pool:
        return None
    where = place(name or DEFAULT_NAME, env.environ)
    if name is None and not where.socket.exists():
        return None  # the common case, no pool: not even a connection is tried
    why = _standalone_only(args, env.environ)
    if why is not None:
        if name is not None:
            raise UsageError(f"{why} is not done through a pool yet: leave out --pool {name}")
        log.warning(f"{why}: running standalone, not through the pool")
        return None
    return where, None


def _standalone_only(args: RunArgs, environ: Mapping[str, str]) -> str | None:
    """What of this run only a standalone master does, named as the user gave it; else None
    (docs/daemon.md has the table of every option)."""
    hosts, generated = args.host_args, args.generated
    checks = [
        (bool(hosts.hosts or hosts.host_files or hosts.slots), "-S/-H/-j"),
        (bool(environ.get("ANET_HOSTS")), "$ANET_HOSTS"),
        (args.keepalive != KEEPALIVE, "--keepalive (a pool's hosts keep `anet up`'s)"),
        (args.pipe is not None, "--pipe"),
        (args.line_buffer, "--line-buffer"),
        (generated is not None and generated.files.any, "--transfer/--return"),
        (generated is not None and generated.inputs.is_stream, "a source read from stdin"),
        (args.polite != type(args.polite)(), "polite mode (a pool's hosts take it at `anet up`)"),
        (generated is None and not args.batch.is_file(), "a batch from a stream"),
    ]
    return next((name for hit, name in checks if hit), None)


async def through_pool(args: RunArgs, env: Environment, target: Target, encoder: Encoder) -> int:
    """Submit the batch, write its results as they come, exit as `anet run` does."""
    jobs, key, options, tags = _submission(args, env)
    retention = run_policy(bool(args.journal or args.no_journal), env.environ)
    if tags is not None:  # plain --tag: each result's line prefix, from the jobs made here
        encoder = plain_tagged(lambda job_id: tags.pop(job_id, b""))
    seen = args.observe
    options.update(pool_options(args.policy, args.halt, seen.keep_order, args.priority))
    options.update(journal_options(args, env, key))
    if seen.joblog is not None:
        options["joblog"] = start_joblog(seen.joblog)
    if args.deps is not None:
        options["deps"] = deps_path(args.deps)
    # --results DIR is written here, by the command: in its directory, with its permissions
    results = ResultsDir(seen.results) if seen.results is not None else None
    name = str(Path(key).resolve())
    row = await request(target, {"op": "submit", **jobs, "name": name, "options": options})
    last: dict[str, Any] = {}
    failed = FailedJobs()
    try:
        async with _progress(args, env, target, row) as progress:
            last, out = await write_run(
                env, target, row["id"], encoder,
                results=results, failed=failed, progress=progress, summary=not seen.quiet,
            )  # fmt: skip
    finally:
        if not last:  # Ctrl-C, a closed stdout: the pool's run must not go on alone
            with contextlib.suppress(AnetError, OSError):
                await asyncio.shield(request(target, {"op": "cancel", "run": row["id"]}))
    if last.get("state") != "done":
        raise AnetError(f"the pool's run {row['id']} ended: {last.get('state')}")
    if "summary" in last:
        places = summary_places(row.get("journal"), seen.joblog, seen.results)
        env.stderr.write(summary_text(last, failed, places))
        env.stderr.flush()
    if retention is not None:  # the default journal, as a standalone run's end settles it
        after_run(Path(options["journal"]), retention, last.get("total"))
    if last.get("halted"):
        say_halted(out.failed, max(last["total"] - last["done"], 0), last["total"])
    elif out.failed:
        log.warning(f"{out.failed} of {out.total} jobs failed", failed=out.failed, total=out.total)
    return min(out.failed, ExitStatus.MAX_FAILED)


def say_halted(failed: int, undone: int | None, total: int | None) -> None:
    """The last word after --halt, standalone or through a pool: the jobs it left undone, not
    "2 of 2 jobs failed" (`undone` and `total` None: a batch from a stream)."""
    failed_jobs = "1 job" if failed == 1 else f"{failed} jobs"
    if total is None or undone is None:  # a batch from a stream: what was left is unknown
        log.warning(f"{failed_jobs} failed; halted before the end of the batch", failed=failed)
        return
    log.warning(
        f"{failed_jobs} failed; halted with {undone} of {total} jobs not done",
        failed=failed, undone=undone, total=total,
    )  # fmt: skip


Submission = tuple[dict[str, Any], Path, dict[str, Any], dict[int, bytes] | None]


def _submission(args: RunArgs, env: Environment) -> Submission:
    """What the submit carries: the batch file's bytes, or the jobs a command and its sources
    make (each a job, numbered by position as GNU parallel numbers them); the key its journal
    is known by; for a command, the fingerprint and name a standalone run gives that journal
    (so --resume takes up a run begun either way); and with plain --tag, every job's tag."""
    generated, tagged = args.generated, args.observe.tag and args.format == "plain"
    if generated is None:
        try:
            data = args.batch.read_bytes()
        except OSError as exc:
            why = exc.strerror
            raise UsageError(f"cannot read batch file {str(args.batch)!r}: {why}") from None
        tags = {job.id: job.command for job in read_batch(io.BytesIO(data))} if tagged else None
        return {"batch": data}, args.batch, {}, tags
    made = list(generated.tagged(env.stdin))  # from files: a stream runs standalone
    fingerprint, _ = generated.identity(env.stdin)
    key = journal_key(generated.text)
    tags = {job.id: tag for job, tag in made} if tagged else None
    extra = {"fingerprint": fingerprint, "what": "inputs"}
    return {"commands": [job.command for job, _ in made]}, key, extra, tags


def journal_options(args: RunArgs, env: Environment, key: Path) -> dict[str, Any]:
    """The journal a standalone run of this batch keeps (--journal FILE, else its default
    one, named after `key`), for the pool's run to keep too: `anet status BATCH`, `--resume`
    and a later standalone run find it where they look. With --no-journal, the pool keeps
    its own."""
    if args.no_journal:
        if args.resume:
            raise UsageError("--resume needs the journal of a batch file: drop --no-journal")
        return {}
    path = args.journal or default_journal_path(key, env.environ)
    return {"journal": str(path.resolve()), "resume": args.resume, "only_new": args.only_new}


def start_joblog(path: Path) -> str:
    """The joblog's file made here, its header written (the command's permissions and umask,
    its directory: a mistake is its one line); the pool adds a line per attempt to it."""
    Joblog.open(path).close()
    return str(path.resolve())


def summary_text(last: dict[str, Any], failed: FailedJobs, places: list[tuple[str, Any]]) -> str:
    """The end summary `anet run` prints, from a pool's run's last row: the run's own numbers
    by host (speculation is not counted per run: `-`)."""
    summary = last["summary"]
    hosts = tuple(
        HostRow(label, state, slots, 0, done, failed_attempts, -1, -1, mean, None)
        for label, state, slots, done, failed_attempts, mean in summary["hosts"]
    )
    snap = Snapshot(summary["wall"], last["total"], last["done"], last["failed"], 0, hosts)
    return end_summary(snap, failed, places)


async def write_run(
    env: Environment,
    target: Target,
    run_id: int,
    encoder: Encoder,
    *,
    results: ResultsDir | None = None,
    failed: FailedJobs | None = None,
    progress: PoolProgress | None = None,
    summary: bool = False,
) -> tuple[dict[str, Any], Delivery]:
    """A pool's run's results on stdout as `anet run` writes them (Delivery: a big output in
    parts, a reader that stops is waited for), each also in `results` (before it is written
    out, as a standalone run does), counted in `progress` and, failed, in `failed`; its last
    row ({} if the stream broke off), with the run's summary if asked."""
    last: dict[str, Any] = {}
    async with Delivery(await open_output(env.stdout), encoder, None) as out:
        async for item in attach(target, run_id, summary=summary):
            if isinstance(item, dict):
                last = item
                continue
            if results is not None:  # a big output is written by a thread, as `anet run` does
                await asyncio.to_thread(results.write, item)
            if failed is not None and not item.ok:
                failed.add(item)
            if progress is not None:
                progress.arrived(item)
            await out.emit(item)
    return last, out


PROGRESS_POLL = 1.0
"""Seconds between two asks of the pool for its hosts' rows while a progress view shows them."""


class PoolProgress:
    """The progress view's numbers for a run of a pool's: the counts from the results this
    command got, the hosts' rows (the run's own jobs by host, and every run's running ones)
    asked of the pool every PROGRESS_POLL seconds."""

    def __init__(self, total: int | None) -> None:
        self.tally = Tally(total=total)
        self.rows: list[list[Any]] = []

    def arrived(self, result: JobResult) -> None:
        self.tally.done += 1
        self.tally.failed += not result.ok

    def snapshot(self, elapsed: float) -> Snapshot:
        hosts = tuple(
            HostRow(label, state, slots, running, done, failed_attempts, -1, -1, mean, None)
            for label, state, slots, done, failed_attempts, mean, running in self.rows
        )
        running = sum(row.running for row in hosts)
        return Snapshot(
            elapsed, self.tally.total, self.tally.done, self.tally.failed, running, hosts
        )

    async def ask(self, target: Target, run_id: int) -> None:
        """The hosts' rows now (kept as they were if the pool does not answer: the next ask)."""
        with contextlib.suppress(AnetError, OSError, WireError):
            self.rows = (await request(target, {"op": "progress", "run": run_id}))["hosts"]

    async def poll(self, target: Target, run_id: int) -> None:
        while True:
            await self.ask(target, run_id)
            await asyncio.sleep(PROGRESS_POLL)


@contextlib.asynccontextmanager
async def _progress(
    args: RunArgs, env: Environment, target: Target, row: dict[str, Any]
) -> AsyncIterator[PoolProgress | None]:
    """The progress view a standalone run would show (on a terminal, or with --progress),
    for the time of the run; None when there is none."""
    progress = PoolProgress(row.get("total"))
    view = progress_view(args.observe, env.stderr, progress.snapshot)
    if view is None:
        yield None
        return
    async with asyncio.TaskGroup() as tasks:
        poller = tasks.create_task(progress.poll(target, row["id"]))
        try:
            async with view:
                yield progress
                await progress.ask(target, row["id"])  # the last frame shows the run's end
        finally:
            poller.cancel()
