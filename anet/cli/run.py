"""`anet [run] BATCH`: run a batch on the hosts and stream the results to stdout."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from dispatcher.polite import Polite

from ..api import KEEPALIVE, Cluster, RunOptions, RunPlan, RunPolicy
from ..core.batch import STDIN, BatchSource, Job, count_jobs, open_source, read_batch
from ..core.engine import OutputCap
from ..core.halt import HaltPolicy
from ..core.spool import spool_dir
from ..deps.manifest import start_scan
from ..errors import UsageError
from ..logs import get_logger
from ..remote.hosts import HostSpec
from ..streams.delivery import Delivery
from ..streams.journal import (
    Journal,
    JournalBusy,
    JournalError,
    default_journal_path,
    fingerprint_batch,
)
from ..streams.output import open_output
from ..streams.retention import Policy, after_run, parse_size
from ..streams.sinks import FORMATS, TAGGED_TEXT, Encoder, encoder_for, output_cap
from ..views.observe import ObserveArgs, RunObservers
from . import common
from .common import Environment, ExitStatus, HostArgs, host_options, log_options, run_async
from .pipe import PipeArgs, pipe_jobs, pipe_options
from .polite import polite_options

log = get_logger()


@dataclass(frozen=True, slots=True)
class RunArgs:
    """What `anet BATCH` was asked to do, parsed from the command line."""

    batch: Path
    host_args: HostArgs = field(default_factory=HostArgs)
    format: str | None = None
    keepalive: float = KEEPALIVE
    journal: Path | None = None
    resume: bool = False
    only_new: bool = False
    no_journal: bool = False
    policy: RunPolicy = field(default_factory=RunPolicy)
    halt: HaltPolicy = field(default_factory=HaltPolicy)
    observe: ObserveArgs = field(default_factory=ObserveArgs)
    deps: str | None = None
    polite: Polite = field(default_factory=Polite)
    max_output: str | None = None
    pipe: PipeArgs | None = None  # --pipe, --pipe-part: `batch` is the command


async def program(args: RunArgs, env: Environment) -> int:
    """Run the batch; the exit status counts failed jobs."""
    hosts = args.host_args.resolve(env)
    encoder = _encoder(args.format, args.observe.tag, env.stdout_isatty)
    caps = (_max_output(args.max_output, env), output_cap(encoder))
    policy = dataclasses.replace(args.policy, caps=tuple(cap for cap in caps if cap))
    args = dataclasses.replace(args, policy=policy)
    # Retention applies to the default journals only; a bad setting is said before the run.
    retention = None if args.journal or args.no_journal else Policy.from_environ(env.environ)
    if args.pipe is not None and args.resume:
        raise UsageError("--resume cannot take up a --pipe run: its input was read only once")
    with (
        open_source(STDIN if args.pipe else args.batch, env.stdin) as source,
        _jobs(args, source, env) as (jobs, job_done),
        _open_journal(args, source, env) as journal,
        RunObservers(args.observe, env.stderr, source.path, journal) as seen,
    ):
        if source.is_stream and args.halt.needs_total:
            raise UsageError(f"--halt with a percentage needs a batch file, not {source.name}")
        options = RunOptions(
            journal,
            # The user's own --journal is required: no result leaves without it. The default
            # one only costs a warning when it breaks.
            journal_required=args.journal is not None,
            resume=args.resume,
            only_new=args.only_new,
            halt=args.halt,
            batch_size=count_jobs(source.path) if source.path and args.halt.needs_total else None,
            keep_order=args.observe.keep_order,
            mark_delivered=False,  # Delivery marks a result once the kernel has its bytes
            arrived=seen.arrived,
        )
        plan = RunPlan(jobs, options)
        seen.tally.base = len(plan.done)
        seen.tally.total = options.batch_size  # counted for --halt N%: not counted again
        async with Delivery(await open_output(env.stdout), encoder, journal) as out:
            await _run(args, env, hosts, seen, plan, out, job_done)
    seen.print_summary()
    if retention is not None and journal is not None:
        after_run(journal.path, retention, seen.tally.total)
    if plan.halted:
        _say_halted(out.failed, seen, source.path)
    elif out.failed:
        log.warning(f"{out.failed} of {out.total} jobs failed", failed=out.failed, total=out.total)
    return min(out.failed, ExitStatus.MAX_FAILED)


def _say_halted(failed: int, seen: RunObservers, batch: Path | None) -> None:
    """The last word after --halt: the jobs it left undone, not "2 of 2 jobs failed"."""
    total = seen.tally.total
    if total is None and batch is not None:  # the count in the background had not finished
        with contextlib.suppress(OSError, UsageError):
            total = count_jobs(batch)
    failed_jobs = "1 job" if failed == 1 else f"{failed} jobs"
    if total is None:  # a batch from a stream: what was left of it is unknown
        log.warning(f"{failed_jobs} failed; halted before the end of the batch", failed=failed)
        return
    undone = max(total - seen.tally.base - seen.tally.done, 0)
    log.warning(
        f"{failed_jobs} failed; halted with {undone} of {total} jobs not done",
        failed=failed, undone=undone, total=total,
    )  # fmt: skip


async def _run(
    args: RunArgs,
    env: Environment,
    hosts: list[HostSpec],
    seen: RunObservers,
    plan: RunPlan,
    out: Delivery,
    job_done: Callable[[int], None],
) -> None:
    """The cluster's part: connect, sync the deps, run the jobs, stream their results out."""
    ssh = args.host_args.ssh_options(args.keepalive)
    # The deps scan runs in a thread while the hosts connect; its error stops the run before
    # any deps byte is sent (hosts wait for the scan before their sync starts).
    tree = start_scan(args.deps, env.environ) if args.deps else None
    cluster = Cluster(
        hosts, ssh=ssh, keepalive=args.keepalive, policy=args.policy, deps=tree, polite=args.polite
    )
    async with cluster, seen.watching(cluster):
        if tree is not None:
            await tree  # a DepsError (one line) ends the run before any job starts
        async for result in cluster.run(plan):
            await out.emit(result)
            job_done(result.id)


MIN_MAX_OUTPUT = 1 << 30
"""The default --max-output is a quarter of the spool directory's free space, at least this."""


def _max_output(text: str | None, env: Environment) -> OutputCap | None:
    """--max-output: the most one job may print (stdout and stderr) before it is killed and
    failed; its output is spooled to disk past spool.SPOOL_AT, so this bounds the disk a job
    takes (the master's memory is bounded anyway). `off`: no limit."""
    if text is not None and text.strip().lower() in ("off", "none"):
        return None
    if text is not None:
        try:
            size = parse_size(text)
        except ValueError:
            raise UsageError(f"--max-output takes a size (e.g. 4G), not {text!r}") from None
        return OutputCap(size, f"--max-output {text}")
    where = spool_dir(env.environ)
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        stat = os.statvfs(where)
        size = max(stat.f_bavail * stat.f_frsize // 4, MIN_MAX_OUTPUT)
    except OSError:
        size = MIN_MAX_OUTPUT
    return OutputCap(size, f"{size >> 20} MiB (--max-output: a quarter of the free disk)")


def _encoder(name: str | None, tag: bool, stdout_isatty: bool) -> Encoder:
    """The output format; --tag is a variant of text, the default on a terminal."""
    if tag:
        if name not in (None, "text"):
            raise UsageError(f"--tag goes with --format text, not {name}")
        return TAGGED_TEXT
    return encoder_for(name or ("text" if stdout_isatty else "anet"))


@contextlib.contextmanager
def _jobs(
    args: RunArgs, source: BatchSource, env: Environment
) -> Iterator[tuple[Iterator[Job], Callable[[int], None]]]:
    """The batch's jobs, or --pipe's (a job per block); and what to call with the id of a job
    that has its final result (a --pipe block is then removed)."""
    if args.pipe is None:
        yield read_batch(source.stream), lambda _id: None
        return
    if args.batch.is_file() and not os.access(args.batch, os.X_OK):
        raise UsageError(
            f"--pipe runs COMMAND on every block: {str(args.batch)!r} is a file, not a command"
        )
    with pipe_jobs(args.pipe, os.fsencode(args.batch), source.stream, env.environ) as made:
        yield made


@contextlib.contextmanager
def _open_journal(args: RunArgs, source: BatchSource, env: Environment) -> Iterator[Journal | None]:
    """The run's journal; without one asked for, an unwritable default only costs a warning.

    A batch read from a stream has no default journal: it cannot be read again, so it could
    never be resumed (--journal FILE still keeps one, for `anet status` and `anet report`).
    """
    if args.resume and (args.no_journal or source.is_stream):
        why = "drop --no-journal" if args.no_journal else f"{source.name} can only be read once"
        raise UsageError(f"--resume needs the journal of a batch file: {why}")
    if args.no_journal or (source.is_stream and args.journal is None):
        yield None
        return
    path = args.journal or default_journal_path(args.batch, env.environ)
    fingerprint = fingerprint_batch(args.batch) if source.path else f"stream:{uuid.uuid4()}"
    try:
        journal = Journal.open(path, fingerprint, args.batch, resume=args.resume)
    except JournalBusy:
        raise
    except JournalError as exc:
        if args.resume or args.journal:
            raise
        log.warning(f"{exc}; running without a journal (no --resume for this run)")
        yield None
        return
    with journal:
        log.info(f"journal: {journal.path}", journal=str(journal.path))
        yield journal


EPILOG = """\b
Examples:
  anet batch_examples/primes.txt > results.bin     # on this machine
  anet -H hosts.txt batch.txt | ./my_consumer      # on every machine in hosts.txt
  anet -S alice@node1 -S 8/bob@node2:2222 batch.txt
  anet -H hosts.txt batch.txt --format text        # readable; the default on a terminal
  anet -H hosts.txt batch.txt deps/                # jobs run inside a synced copy of deps/
"""


@click.command("run", epilog=EPILOG)
@click.argument("batch", type=click.Path(path_type=Path))
@click.argument("deps", required=False, type=click.Path(), metavar="[DEPS]")
@host_options
@click.option(
    "--format", "fmt", type=click.Choice(sorted(FORMATS)),
    help="Output on stdout. Default: anet when piped, text on a terminal.",
)  # fmt: skip
@click.option(
    "--keepalive", type=common.FiniteFloat(min=1.0), default=KEEPALIVE, show_default=True,
    metavar="SECONDS", help="Declare a silent host lost after this long (and its jobs requeued).",
)  # fmt: skip
@click.option(
    "--retries", type=click.IntRange(min=0), default=2, show_default=True,
    help="Run a failed job again up to N times, preferably on another host.",
)  # fmt: skip
@click.option(
    "--timeout", metavar="SECONDS|N%",
    help="Kill (and retry) a job running longer; N% of the median successful run time.",
)  # fmt: skip
@click.option(
    "--halt", metavar="WHEN,fail=N[%]",
    help="now,fail=N: kill all and stop after N failed jobs; soon,...: start no new job.",
)  # fmt: skip
@polite_options
@pipe_options
@click.option("--no-speculate", is_flag=True, help="Never start copies of slow jobs elsewhere.")
@click.option(
    "--resume", is_flag=True,
    help="Skip the jobs that succeeded in this batch's last run (their results come first).",
)  # fmt: skip
@click.option("--only-new", is_flag=True, help="With --resume: do not repeat earlier results.")
@click.option(
    "--journal", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="Where results are recorded for --resume. Default: under $XDG_STATE_HOME/anet.",
)  # fmt: skip
@click.option("--no-journal", is_flag=True, help="Record nothing; --resume is then impossible.")
@click.option(
    "--joblog", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="One line per attempt, GNU parallel's joblog columns (tab-separated).",
)  # fmt: skip
@click.option(
    "--results", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
    help="Also write each job's stdout, stderr and meta.json under DIR/<id>/.",
)  # fmt: skip
@click.option(
    "-k", "--keep-order", is_flag=True,
    help="Results in job-id order (those waiting for an earlier job wait on disk).",
)  # fmt: skip
@click.option("--tag", is_flag=True, help="Text format: prefix each output line with id and host.")
@click.option(
    "--max-output", metavar="SIZE|off",
    help="Kill and fail a job printing more (e.g. 4G). Default: a quarter of the free disk.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress view, no end summary.")
@click.option(
    "--progress", is_flag=True,
    help="Status lines every 10 s on stderr even when it is not a terminal (a log file).",
)  # fmt: skip
@log_options
@click.pass_obj
def run_command(
    env: Environment,
    batch: Path,
    deps: str | None,
    host_args: HostArgs,
    fmt: str | None,
    keepalive: float,
    retries: int,
    timeout: str | None,
    halt: str | None,
    polite: Polite,
    pipe: PipeArgs | None,
    no_speculate: bool,
    resume: bool,
    only_new: bool,
    journal: Path | None,
    no_journal: bool,
    joblog: Path | None,
    results: Path | None,
    keep_order: bool,
    tag: bool,
    max_output: str | None,
    quiet: bool,
    progress: bool,
) -> int:
    """Run each non-empty line of BATCH as a job on every core of the hosts.

    With DEPS (a folder, or a file), every host first gets an identical copy of it, and its
    jobs run inside that copy: `deps/` syncs the folder's contents, `deps` the folder itself.
    The copy is also `dependencies/` there, as the original ANet's batches expect.

    Results stream to stdout as jobs finish; the exit status is the number of failed jobs
    (at most 101), 130 after Ctrl-C, 255 for anet's own errors.
    """
    args = RunArgs(
        batch, host_args, fmt, keepalive, journal, resume, only_new, no_journal,
        RunPolicy(retries, _timeout(timeout), not no_speculate), HaltPolicy.parse(halt),
        observe=ObserveArgs(joblog, results, keep_order, tag, quiet, progress),
        deps=deps, polite=polite, max_output=max_output, pipe=pipe,
    )  # fmt: skip
    return run_async(program(args, env))


def _timeout(text: str | None) -> float | str | None:
    """Seconds as a number; a percentage stays text for the scheduler to parse and check."""
    if text is None or text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--timeout takes seconds or a percentage, not {text!r}") from None
