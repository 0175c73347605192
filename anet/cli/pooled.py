"""`anet BATCH` through a running pool (`anet up`): the same command, the same stdout bytes and
exit status, without a start-up of its own (docs/daemon.md).

A run goes through the pool when one is up (the default pool, or `--pool NAME`) and the run
asks nothing a pool's run cannot do yet: no hosts of its own (-S, -H, -j, $ANET_HOSTS), a batch
file (not a stream), and none of --pipe, command mode, polite options or --max-output. Its deps
folder is read by the pool (same user, same machine), synced for this run alone. The pool's
run keeps the journal a standalone run keeps (so --resume, --only-new and `anet status BATCH`
work alike). --joblog is written by the pool (a line per
attempt, into the file this command made), --results DIR by this command (its directory, its
permissions).
Otherwise it runs standalone, as before; with `--pool NAME` named, such an option is one line
of error instead. `--no-pool` always runs standalone. Ctrl-C cancels the pool's run (its jobs
are killed), as it stops a standalone one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import AnetError, UsageError
from ..logs import get_logger
from ..pool.client import Target, attach, pool_options, request
from ..pool.place import DEFAULT_NAME, place
from ..streams.delivery import Delivery
from ..streams.joblog import Joblog
from ..streams.journal import default_journal_path
from ..streams.output import open_output
from ..streams.resultsdir import ResultsDir
from ..streams.sinks import Encoder
from ..views.observe import end_summary, summary_places
from ..views.progress import HostRow, Snapshot
from ..views.summary import FailedJobs
from .common import Environment, ExitStatus

if TYPE_CHECKING:
    from .run import RunArgs

log = get_logger()

priority_option = click.option(
    "--priority", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="Through a pool: this run's share of the hosts, weighed against the other runs'.",
)  # fmt: skip


def pool_target(args: RunArgs, env: Environment, name: str | None, no_pool: bool) -> Target | None:
    """The pool this run goes through, or None to run standalone."""
    if no_pool:
        return None
    where = place(name or DEFAULT_NAME, env.environ)
    if name is None and not where.socket.exists():
        return None  # the common case, no pool: not even a connection is tried
    why = _standalone_only(args, env.environ)
    if why is not None:
        if name is not None:
            raise UsageError(f"{why} is not done through a pool yet: leave out --pool {name}")
        log.info(f"{why}: running standalone, not through the pool")
        return None
    return where, None


def _standalone_only(args: RunArgs, environ: Mapping[str, str]) -> str | None:
    """What of this run only a standalone master does, named as the user gave it; else None."""
    hosts = args.host_args
    checks = [
        (bool(hosts.hosts or hosts.host_files or hosts.slots), "-S/-H/-j"),
        (bool(environ.get("ANET_HOSTS")), "$ANET_HOSTS"),
        (args.pipe is not None, "--pipe"),
        (args.line_buffer, "--line-buffer"),
        (args.generated is not None, "a command with ::: sources"),
        (args.max_output is not None, "--max-output"),
        (args.observe.tag and args.format == "plain", "--format plain --tag"),
        (args.polite != type(args.polite)(), "polite mode"),
        (not args.batch.is_file(), "a batch from a stream"),
    ]
    return next((name for hit, name in checks if hit), None)


async def through_pool(args: RunArgs, env: Environment, target: Target, encoder: Encoder) -> int:
    """Submit the batch, write its results as they come, exit as `anet run` does."""
    try:
        data = args.batch.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read batch file {str(args.batch)!r}: {exc.strerror}") from None
    seen = args.observe
    options = pool_options(args.policy, args.halt, seen.keep_order, args.priority)
    options.update(journal_options(args, env))
    if seen.joblog is not None:
        options["joblog"] = start_joblog(seen.joblog)
    if args.deps is not None:
        options["deps"] = deps_path(args.deps)
    # --results DIR is written here, by the command: in its directory, with its permissions
    results = ResultsDir(seen.results) if seen.results is not None else None
    name = str(Path(args.batch).resolve())
    row = await request(target, {"op": "submit", "batch": data, "name": name, "options": options})
    last: dict[str, Any] = {}
    failed = FailedJobs()
    try:
        last, out = await write_run(
            env, target, row["id"], encoder, results=results, failed=failed, summary=not seen.quiet
        )
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
    if out.failed:
        log.warning(f"{out.failed} of {out.total} jobs failed", failed=out.failed, total=out.total)
    return min(out.failed, ExitStatus.MAX_FAILED)


def journal_options(args: RunArgs, env: Environment) -> dict[str, Any]:
    """The journal a standalone run of this batch keeps (--journal FILE, else its default
    one), for the pool's run to keep too: `anet status BATCH`, `--resume` and a later
    standalone run find it where they look. With --no-journal, the pool keeps its own."""
    if args.no_journal:
        if args.resume:
            raise UsageError("--resume needs the journal of a batch file: drop --no-journal")
        return {}
    path = args.journal or default_journal_path(args.batch, env.environ)
    return {"journal": str(path.resolve()), "resume": args.resume, "only_new": args.only_new}


def deps_path(argument: str) -> str:
    """The deps argument as the pool reads it: an absolute path on this machine (the pool
    runs as this user here), its trailing slash kept (rsync's rule: the folder's contents)."""
    return os.path.join(os.getcwd(), argument)


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
    summary: bool = False,
) -> tuple[dict[str, Any], Delivery]:
    """A pool's run's results on stdout as `anet run` writes them (Delivery: a big output in
    parts, a reader that stops is waited for), each also in `results` (before it is written
    out, as a standalone run does) and, failed, in `failed`; its last row ({} if the stream
    broke off), with the run's summary if asked."""
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
            await out.emit(item)
    return last, out
