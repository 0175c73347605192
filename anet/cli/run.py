"""`anet [run] BATCH`: run a batch on the hosts and stream the results to stdout."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dispatcher.polite import Polite

from ..api import KEEPALIVE, Cluster, RunOptions, RunPlan, RunPolicy
from ..core.batch import STDIN, Job, count_jobs, open_source, read_batch
from ..core.engine import OutputCap
from ..core.files import FileRules
from ..core.halt import HaltPolicy
from ..core.inputs import Generated, Tags, generate
from ..core.readahead import ReadAhead
from ..core.spool import spool_dir
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
from ..streams.linebuffer import LineBuffer
from ..streams.output import open_output
from ..streams.retention import after_run, parse_size, run_policy, settle_own
from ..streams.sinks import (
    PLAIN,
    TAGGED_TEXT,
    WRITTEN,
    Encoder,
    encoder_for,
    output_cap,
    plain_tagged,
)
from ..views.observe import ObserveArgs, RunObservers
from . import common
from .argv import COMMAND_LINE
from .common import (
    Environment,
    ExitStatus,
    HostArgs,
    host_options,
    journal_key,
    log_options,
    run_async,
)
from .files import file_options
from .pipe import PipeArgs, pipe_jobs, pipe_options
from .polite import polite_options
from .pooled import pool_target, priority_option, say_halted, through_pool
from .trying import policy_options

if TYPE_CHECKING:
    import asyncio

    from ..deps.manifest import Tree

log = get_logger()

"""Where `anet`'s group leaves GNU parallel's command line (`argv.CommandLine`) for `run`."""


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
    generated: Generated | None = None
    """Command mode: the batch a template and its inputs make (`batch` is then unused)."""
    pipe: PipeArgs | None = None  # --pipe, --pipe-part: `batch` is the command
    line_buffer: bool = False  # plain's lines as they come (streams/linebuffer.py)
    priority: int = 1  # through a pool: this run's weight among the runs sharing its hosts


async def program(args: RunArgs, env: Environment) -> int:
    """Run the batch; the exit status counts failed jobs."""
    hosts = args.host_args.resolve(env)
    encoder = _encoder(args.format, args.observe.tag, env.stdout_isatty)
    args = _capped(args, env, encoder)
    retention = run_policy(bool(args.journal or args.no_journal), env.environ)
    if args.pipe is not None and args.resume:
        raise UsageError("--resume cannot take up a --pipe run: its input was read only once")
    with (
        _open_batch(args, env) as source,
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
            batch_size=source.count() if args.halt.needs_total else None,
            keep_order=args.observe.keep_order,
            mark_delivered=False,  # Delivery marks a result once the kernel has its bytes
            arrived=seen.arrived,
        )
        plan = RunPlan(source.jobs, options)
        if source.tags is not None:  # plain --tag: the tags of the jobs made, and made again
            source.tags.done = plan.done
            encoder = plain_tagged(source.tags.pop)
        lines = None
        if args.line_buffer:
            tags = source.tags
            lines = LineBuffer(encoder, tags and tags.peek, tags and tags.pop)
            encoder = lines.encoder
        seen.tally.base = len(plan.done)
        seen.tally.total = source.total  # counted for --halt N% or the journal: not again
        async with Delivery(await open_output(env.stdout), encoder, journal) as out:
            if lines is not None:
                lines.write = out.write
            await _run(args, env, hosts, seen, plan, out, source.done, lines)
        settled = False
        if retention is not None and journal is not None:  # all out and marked: before the close
            settled = settle_own(journal, retention, seen.tally.total)
    seen.print_summary()
    if retention is not None and journal is not None:
        after_run(journal.path, retention, seen.tally.total, settled=settled)
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
    undone = None if total is None else max(total - seen.tally.base - seen.tally.done, 0)
    say_halted(failed, undone, total)


async def _run(
    args: RunArgs,
    env: Environment,
    hosts: list[HostSpec],
    seen: RunObservers,
    plan: RunPlan,
    out: Delivery,
    job_done: Callable[[int], None],
    lines: LineBuffer | None = None,
) -> None:
    """The cluster's part: connect, sync the deps, run the jobs, stream their results out."""
    ssh = args.host_args.ssh_options(args.keepalive)
    # The deps scan runs in a thread while the hosts connect; its error stops the run before
    # any deps byte is sent (hosts wait for the scan before their sync starts).
    tree = _start_scan(args.deps, env) if args.deps else None
    cluster = Cluster(
        hosts, ssh=ssh, keepalive=args.keepalive, policy=args.policy, deps=tree, polite=args.polite
    )
    if lines is not None:
        cluster.observe_output(lines)
    async with cluster, seen.watching(cluster):
        if tree is not None:
            await tree  # a DepsError (one line) ends the run before any job starts
        async for result in cluster.run(plan):
            await out.emit(result)
            job_done(result.id)


def _capped(args: RunArgs, env: Environment, encoder: Encoder) -> RunArgs:
    """The run with its output caps: --max-output's, and the most the format carries."""
    caps = (_max_output(args.max_output, env), output_cap(encoder))
    policy = dataclasses.replace(args.policy, caps=tuple(cap for cap in caps if cap))
    return dataclasses.replace(args, policy=policy)


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
        if name not in (None, "text", "plain"):
            raise UsageError(f"--tag goes with --format text or plain, not {name}")
        return PLAIN if name == "plain" else TAGGED_TEXT  # plain's tags come with the jobs
    return encoder_for(name or ("text" if stdout_isatty else "anet"))


@dataclass(slots=True)
class _Batch:
    """The jobs of a batch file, a stream or a generated batch, and what a journal knows it by:
    `key`, from which its default path derives, and `identity()`, its fingerprint."""

    jobs: Iterator[Job]
    name: str
    path: Path | None  # a batch file, which can be read again (to count it)
    key: Path
    what: str  # what --resume finds changed: "batch file", "inputs"
    is_stream: bool
    _identity: Callable[[], tuple[str, int | None]]
    total: int | None = None
    tags: Tags | None = None
    done: Callable[[int], None] = lambda _id: None
    """Called with each job's id once it has its final result (a --pipe block is removed)."""

    def identity(self) -> str:
        fingerprint, total = self._identity()
        self.total = self.total if total is None else total
        return fingerprint

    def count(self) -> int | None:
        if self.total is None and self.path is not None:
            self.total = count_jobs(self.path)
        elif self.total is None and not self.is_stream:
            self.identity()
        return self.total


@contextlib.contextmanager
def _open_batch(args: RunArgs, env: Environment) -> Iterator[_Batch]:
    """The batch file (or `-`), in command mode the batch the template makes, or with --pipe
    a job per block of standard input (or per part of --pipe-part's file)."""
    if args.pipe is not None:
        with (
            open_source(STDIN, env.stdin) as source,
            pipe_jobs(args.pipe, source.stream, env.environ) as (jobs, done),
        ):
            # stdin's blocks in a thread, a few ahead (each is a file of up to --block bytes):
            # a producer that pauses must not stall the run; --pipe-part's parts are seeks
            ahead = ReadAhead(jobs, max_jobs=4) if args.pipe.part_of is None else None
            try:
                yield _Batch(
                    ahead or jobs, source.name, None, args.batch, "input", True,
                    _stream_identity, done=done,
                )  # fmt: skip
            finally:
                if ahead is not None:
                    ahead.close()
        return
    generated = args.generated
    plain_tag = args.observe.tag and args.format == "plain"
    tags = Tags(lambda: _tagged_again(args, env)) if plain_tag else None
    if generated is not None:
        stream = generated.inputs.is_stream
        pairs = generated.tagged(env.stdin)
        made = tags.jobs(pairs) if tags else (job for job, _ in pairs)
        ahead = ReadAhead(made) if stream else None  # a producer's pause must not stall the run
        try:
            yield _Batch(
                ahead or made,
                "standard input" if stream else repr(generated.text),
                None, journal_key(generated.text), "inputs", stream,
                lambda: _stream_identity() if stream else generated.identity(env.stdin), tags=tags,
            )  # fmt: skip
        finally:
            if ahead is not None:
                ahead.close()
        return
    with open_source(args.batch, env.stdin) as source:
        path = source.path
        identity = (lambda: (fingerprint_batch(path), None)) if path else _stream_identity
        jobs = read_batch(source.stream)
        jobs = tags.jobs((job, job.command) for job in jobs) if tags else jobs
        if source.is_stream:  # `./make_jobs | anet -`: a producer's pause must not stall the run
            jobs = ReadAhead(jobs)
        try:
            yield _Batch(
                jobs, source.name, path, args.batch, "batch file", source.is_stream, identity,
                tags=tags,
            )  # fmt: skip
        finally:
            if isinstance(jobs, ReadAhead):
                jobs.close()


def _tagged_again(args: RunArgs, env: Environment) -> Iterator[tuple[Job, bytes]]:
    """The jobs and tags of a resumed batch once more, for the results it writes again (only a
    batch that can be read again is resumed)."""
    if args.generated is not None:
        yield from args.generated.tagged(env.stdin)
        return
    with open_source(args.batch, env.stdin) as source:
        yield from ((job, job.command) for job in read_batch(source.stream))


def _stream_identity() -> tuple[str, None]:
    return f"stream:{uuid.uuid4()}", None


@contextlib.contextmanager
def _open_journal(args: RunArgs, source: _Batch, env: Environment) -> Iterator[Journal | None]:
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
    path = args.journal or default_journal_path(source.key, env.environ)
    try:
        journal = Journal.open(
            path, source.identity(), source.key, resume=args.resume, what=source.what
        )
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
  anet -H hosts.txt 'gzip -9 {}' ::: *.log         # GNU parallel's way (docs/parallel.md)
  anet --dry-run 'sim --seed {1} --size {2}' ::: 1 2 ::: 10 100   # the commands, not run
"""


@click.command("run", epilog=EPILOG)
@click.argument("batch", required=False, type=click.Path(path_type=Path))
@click.argument("deps", required=False, type=click.Path(), metavar="[DEPS]")
@host_options
@click.option(
    "-a", "--arg-file", multiple=True, metavar="FILE",
    help="Command mode: FILE's lines are an input source, as after `::::`.",
)  # fmt: skip
@click.option("--colsep", metavar="REGEX", help="Command mode: split arguments into {1} {2}...")
@click.option("-0", "--null", is_flag=True, help="Command mode: input files' items end at NUL.")
@click.option(
    "--plus",
    is_flag=True,
    help="Command mode: also GNU parallel's {+/} {+.} {+..} {+...} {..} {...} {/..} {/...}.",
)
@click.option(
    "-N", "--max-replace-args", "per_job", type=click.IntRange(min=0), default=1,
    metavar="N", help="Command mode: N arguments a job ({1} {2}... number them on).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the jobs' commands, one a line; run none.")
@click.option(
    "--deps", "deps_option", type=click.Path(), metavar="DEPS",
    help="The deps folder (or file), as the DEPS argument gives it in batch mode.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(sorted(WRITTEN)),
    help="Output on stdout. Default: anet when piped, text on a terminal. plain: only the"
    " jobs' stdout, per job (GNU parallel's).",
)  # fmt: skip
@click.option(
    "--keepalive", type=common.FiniteFloat(min=1.0), default=KEEPALIVE, show_default=True,
    metavar="SECONDS", help="Declare a silent host lost after this long (and its jobs requeued).",
)  # fmt: skip
@policy_options
@polite_options
@pipe_options
@file_options
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
    "--line-buffer", "--lb", "line_buffer", is_flag=True,
    help="Plain format: the jobs' stdout lines as they come, lines of jobs interleaved.",
)  # fmt: skip
@click.option(
    "--max-output", metavar="SIZE|off",
    help="Kill and fail a job printing more (e.g. 4G). Default: a quarter of the free disk.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress view, no end summary.")
@click.option(
    "--progress", is_flag=True,
    help="Status lines every 10 s on stderr even when it is not a terminal (a log file).",
)  # fmt: skip
@click.option("--pool", "pool_name", metavar="NAME", help="Run through this pool (anet up).")
@click.option("--no-pool", is_flag=True, help="Run standalone even when a pool is up.")
@priority_option
@log_options
@click.pass_obj
def run_command(
    env: Environment,
    batch: Path | None,
    deps: str | None,
    host_args: HostArgs,
    arg_file: tuple[str, ...],
    colsep: str | None,
    null: bool,
    plus: bool,
    per_job: int,
    dry_run: bool,
    deps_option: str | None,
    fmt: str | None,
    keepalive: float,
    policy: RunPolicy,
    halt: HaltPolicy,
    polite: Polite,
    pipe: PipeArgs | None,
    files: FileRules,
    resume: bool,
    only_new: bool,
    journal: Path | None,
    no_journal: bool,
    joblog: Path | None,
    results: Path | None,
    keep_order: bool,
    tag: bool,
    line_buffer: bool,
    max_output: str | None,
    quiet: bool,
    progress: bool,
    pool_name: str | None,
    no_pool: bool,
    priority: int,
) -> int:
    """Run each non-empty line of BATCH as a job on every core of the hosts; or, as GNU
    parallel does, `anet [OPTIONS] COMMAND ::: ARGS` (`::::`, `-a FILE`): COMMAND once per
    argument, `{}` in it replaced (docs/parallel.md).

    With DEPS (a folder, or a file), every host first gets an identical copy of it, and its
    jobs run inside that copy: `deps/` syncs the folder's contents, `deps` the folder itself.
    The copy is also `dependencies/` there, as the original ANet's batches expect.

    Results stream to stdout as jobs finish; the exit status is the number of failed jobs
    (at most 101), 130 after Ctrl-C, 255 for anet's own errors.
    """
    if pipe is not None:  # the data is stdin or --pipe-part's file; the command is BATCH's word
        pipe, generated = _pipe_command(batch, pipe, arg_file, colsep, null), None
    else:
        generated = _command_mode(batch, deps, arg_file, colsep, null, plus)
    if (per_job != 1 or plus) and generated is None:
        given = "-N" if per_job != 1 else "--plus"
        raise UsageError(
            f"{given} goes with a command and its sources: anet {given} COMMAND ::: ARGS"
        )
    if per_job != 1:
        generated = dataclasses.replace(generated, per_job=per_job)  # type: ignore[arg-type]
    if files.any:
        if generated is None:
            raise UsageError(
                "--transfer, --return and --trc go with a command and its sources:"
                " anet [OPTIONS] COMMAND ::: FILES"
            )
        generated = dataclasses.replace(generated, files=files)
    if deps_option is not None and deps is not None:
        raise UsageError("give the deps folder once: as DEPS or as --deps")
    if dry_run:
        return _dry_run(batch, generated, env)
    if line_buffer:
        fmt, policy = _line_buffered(fmt, keep_order, policy)
    args = RunArgs(
        batch or Path(), host_args, fmt, keepalive, journal, resume, only_new, no_journal,
        policy, halt,
        observe=ObserveArgs(joblog, results, keep_order, tag, quiet, progress),
        deps=deps or deps_option, polite=polite, max_output=max_output, generated=generated,
        pipe=pipe, line_buffer=line_buffer, priority=priority,
    )  # fmt: skip
    target = pool_target(args, env, pool_name, no_pool)
    if target is not None:  # a pool is up: the run is one of its runs (cli/pooled.py)
        encoder = _encoder(args.format, args.observe.tag, env.stdout_isatty)
        return run_async(through_pool(_capped(args, env, encoder), env, target, encoder))
    return run_async(program(args, env))


def _start_scan(deps: str, env: Environment) -> asyncio.Future[Tree]:
    """The deps scan, started (anet/deps/manifest.py, imported by a run that has deps only)."""
    from ..deps.manifest import start_scan

    return start_scan(deps, env.environ)


def _line_buffered(fmt: str | None, keep_order: bool, policy: RunPolicy) -> tuple[str, RunPolicy]:
    """--line-buffer's format (plain, GNU parallel's output) and policy: no speculative
    copies, whose lines would come twice (a failed try's lines come, as in GNU parallel)."""
    if fmt not in (None, "plain"):
        raise UsageError(f"--line-buffer goes with --format plain, not {fmt}")
    if keep_order:
        raise UsageError("--line-buffer prints lines as they come: it does not go with -k")
    return "plain", dataclasses.replace(policy, speculate=False)


def _command_mode(
    batch: Path | None,
    deps: str | None,
    arg_file: tuple[str, ...],
    colsep: str | None,
    null: bool,
    plus: bool = False,
) -> Generated | None:
    """GNU parallel's command line, if it is one (`argv.split_command` found it), as a batch."""
    line = click.get_current_context().meta.get(COMMAND_LINE)
    if line is None:
        if batch is None:
            raise click.UsageError("Missing argument 'BATCH'.")
        if colsep is not None or null or arg_file:
            raise UsageError(
                "-a, --colsep and --null go before a command and its sources:"
                " anet [OPTIONS] COMMAND ::: ARGS (or :::: FILE, or -a FILE among the OPTIONS)"
            )
        return None
    assert batch is None and deps is None  # split_command left no word for them
    return generate(line.command, line.sources, arg_file, colsep, null, plus=plus)


def _pipe_command(
    batch: Path | None, pipe: PipeArgs, arg_file: tuple[str, ...], colsep: str | None, null: bool
) -> PipeArgs:
    """--pipe's command (the BATCH word, or the words before any source), and --pipe-part's
    file (the one -a FILE): GNU parallel's `--pipe-part -a big.csv 'wc -l'`."""
    line = click.get_current_context().meta.get(COMMAND_LINE)
    if line is not None and line.sources:
        raise UsageError("--pipe and --pipe-part take their data from stdin or -a FILE, not :::")
    if colsep is not None or null:
        raise UsageError("--colsep and --null go with a command's ::: sources, not --pipe")
    if pipe.part and len(arg_file) != 1:
        raise UsageError("--pipe-part needs the file to cut: -a FILE (one)")
    if not pipe.part and arg_file:
        raise UsageError("-a FILE goes with --pipe-part (with --pipe the data is stdin)")
    if line is not None:
        command = " ".join(line.command).encode()
    elif batch is None:
        raise click.UsageError("Missing argument 'COMMAND' (--pipe runs it on every block).")
    elif batch.is_file() and not os.access(batch, os.X_OK):
        raise UsageError(
            f"--pipe runs COMMAND on every block: {str(batch)!r} is a file, not a command"
        )
    else:
        command = os.fsencode(batch)
    part_of = Path(arg_file[0]) if pipe.part else None
    return dataclasses.replace(pipe, command=command, part_of=part_of)


def _dry_run(batch: Path | None, generated: Generated | None, env: Environment) -> int:
    """--dry-run: every job's command and a newline, as `parallel --dry-run` prints them."""
    out = env.stdout
    try:
        if generated is not None:
            out.writelines(command + b"\n" for command in generated.commands(env.stdin))
        else:
            assert batch is not None
            with open_source(batch, env.stdin) as source:
                out.writelines(job.command + b"\n" for job in read_batch(source.stream))
        out.flush()
    except BrokenPipeError:  # `anet --dry-run ... | head`: the reader has all it wanted
        with contextlib.suppress(OSError, ValueError):  # and no flush at exit may fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return ExitStatus.OK
