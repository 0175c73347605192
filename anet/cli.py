"""`anet BATCH`: argv in, exit status out; the work itself is `anet.api`.

`main()` wires the real process environment, `raw_main()` turns every outcome into an exit
status (a user mistake is one line on stderr, never a traceback), `program()` does the work
against an `Environment` that tests can replace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from . import __version__, logs
from .api import KEEPALIVE, Cluster, RunPolicy
from .batch import open_batch, read_batch
from .connect import SshOptions
from .errors import AnetError, UsageError
from .halt import Halt, HaltPolicy
from .hosts import resolve_hosts
from .journal import IdSet, Journal, JournalError, default_journal_path, fingerprint_batch
from .logs import get_logger
from .output import ResultOutput, open_output
from .record import JobResult
from .sinks import FORMATS, Encoder, encoder_for

log = get_logger()


class ExitStatus(IntEnum):
    """0, or the number of failed jobs up to 101 (GNU parallel's convention), or these."""

    OK = 0
    MAX_FAILED = 101
    INTERRUPTED = 130
    ERROR = 255


@dataclass(slots=True)
class Environment:
    """The process's outside world, replaceable in tests."""

    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout.isatty()


@dataclass(frozen=True, slots=True)
class RunArgs:
    """What `anet BATCH` was asked to do, parsed from the command line."""

    batch: Path
    hosts: tuple[str, ...] = ()
    host_files: tuple[Path, ...] = ()
    slots: int | None = None
    ssh_config: Path | None = None
    format: str | None = None
    keepalive: float = KEEPALIVE
    journal: Path | None = None
    resume: bool = False
    only_new: bool = False
    no_journal: bool = False
    policy: RunPolicy = field(default_factory=RunPolicy)
    halt: HaltPolicy = field(default_factory=HaltPolicy)


async def program(args: RunArgs, env: Environment) -> int:
    """Run the batch; the exit status counts failed jobs."""
    hosts = resolve_hosts(args.hosts, args.host_files, slots=args.slots, environ=env.environ)
    encoder = encoder_for(args.format or ("text" if env.stdout_isatty else "anet"))
    total = failed = 0
    halted = False
    with open_batch(args.batch) as batch, _open_journal(args, env) as journal:
        done = journal.succeeded_ids() if journal and args.resume else IdSet()
        output = await open_output(env.stdout)
        try:
            await output.write(encoder.header)
            if journal and args.resume and not args.only_new:
                for result in journal.succeeded_results():  # the stream is complete on its own
                    total += 1
                    await _emit(output, encoder, result)
            jobs = (job for job in read_batch(batch) if job.id not in done)
            ssh = SshOptions(config=args.ssh_config, keepalive=args.keepalive / 3)
            cluster = Cluster(hosts, ssh=ssh, keepalive=args.keepalive, policy=args.policy)
            size = _batch_size(args.batch) if args.halt.needs_total else None
            async with cluster:
                async for result in cluster.run(jobs, journal=journal):
                    total += 1
                    failed += not await _emit(output, encoder, result)
                    halt = args.halt.check(failed, size)
                    if halt is Halt.NOW:
                        log.warning(f"halting now: {failed} jobs failed; running jobs are killed")
                        break  # leaving the cluster kills every running job
                    if halt is Halt.SOON and not halted:
                        log.warning(f"halting soon: {failed} jobs failed; no new jobs start")
                        halted = True
                        cluster.drain()
        finally:
            await output.close()
    if failed:
        log.warning(f"{failed} of {total} jobs failed", failed=failed, total=total)
    return min(failed, ExitStatus.MAX_FAILED)


def _batch_size(path: Path) -> int:
    """Jobs in the batch, for a --halt percentage: one streaming pass over the file."""
    with open_batch(path) as batch:
        return sum(1 for _ in read_batch(batch))


@contextlib.contextmanager
def _open_journal(args: RunArgs, env: Environment) -> Iterator[Journal | None]:
    """The run's journal; without one asked for, an unwritable default only costs a warning."""
    if args.no_journal:
        if args.resume:
            raise UsageError("--resume needs the journal: drop --no-journal")
        yield None
        return
    path = args.journal or default_journal_path(args.batch, env.environ)
    fingerprint = fingerprint_batch(args.batch)
    try:
        journal = Journal.open(path, fingerprint, args.batch, resume=args.resume)
    except JournalError as exc:
        if args.resume or args.journal:
            raise
        log.warning(f"{exc}; running without a journal (no --resume for this run)")
        yield None
        return
    with journal:
        log.info(f"journal: {journal.path}", journal=str(journal.path))
        yield journal


async def _emit(output: ResultOutput, encoder: Encoder, result: JobResult) -> bool:
    """Write one result; False when the job failed or its result cannot be written."""
    try:
        data = encoder.encode(result)
    except ValueError as exc:  # e.g. over the format's record size limit
        log.error(f"job {result.id}: cannot write its result as {encoder.name}: {exc}")
        return False
    await output.write(data)
    return result.ok


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    """uvloop when it is installed: the master's per-job cost is mostly event-loop overhead."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


EPILOG = """\b
Examples:
  anet batch_examples/primes.txt > results.bin     # on this machine
  anet -H hosts.txt batch.txt | ./my_consumer      # on every machine in hosts.txt
  anet -S alice@node1 -S 8/bob@node2:2222 batch.txt
  anet -H hosts.txt batch.txt --format text        # readable; the default on a terminal
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("batch", type=click.Path(path_type=Path))
@click.option(
    "-S",
    "--host",
    "hosts",
    multiple=True,
    metavar="SPEC",
    help="[N/][user@]host[:port], ':' = local.",
)
@click.option(
    "-H", "--hosts", "host_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
    help="Hosts file: one SPEC a line, # comments. Default: $ANET_HOSTS, else this machine.",
)  # fmt: skip
@click.option("-j", "--slots", type=click.IntRange(min=1), help="Job slots on every host.")
@click.option(
    "--ssh-config", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="ssh client config replacing ~/.ssh/config.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(sorted(FORMATS)),
    help="Output on stdout. Default: anet when piped, text on a terminal.",
)  # fmt: skip
@click.option(
    "--keepalive", type=click.FloatRange(min=1.0), default=KEEPALIVE, show_default=True,
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
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv: debug).")
@click.option("--log-json", is_flag=True, help="Log lines on stderr as JSON.")
@click.version_option(__version__, prog_name="anet")
@click.pass_obj
def cli(
    env: Environment,
    batch: Path,
    hosts: tuple[str, ...],
    host_files: tuple[Path, ...],
    slots: int | None,
    ssh_config: Path | None,
    fmt: str | None,
    keepalive: float,
    retries: int,
    timeout: str | None,
    halt: str | None,
    no_speculate: bool,
    resume: bool,
    only_new: bool,
    journal: Path | None,
    no_journal: bool,
    verbose: int,
    log_json: bool,
) -> int:
    """Run each non-empty line of BATCH as a job on every core of the hosts.

    Results stream to stdout as jobs finish; the exit status is the number of failed jobs
    (at most 101), 130 after Ctrl-C, 255 for anet's own errors.
    """
    logs.configure(verbose, log_json, env.stderr)
    args = RunArgs(
        batch, hosts, host_files, slots, ssh_config, fmt, keepalive, journal, resume, only_new,
        no_journal, RunPolicy(retries, _timeout(timeout), not no_speculate),
        HaltPolicy.parse(halt),
    )  # fmt: skip
    return _run_async(program(args, env))


def _timeout(text: str | None) -> float | str | None:
    """Seconds as a number; a percentage stays text for the scheduler to parse and check."""
    if text is None or text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--timeout takes seconds or a percentage, not {text!r}") from None


def raw_main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Every outcome becomes an exit status; only a bug in anet prints a traceback."""
    env = env or Environment()
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="anet",
            standalone_mode=False,
            obj=env,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        env.stderr.write(f"anet: {exc.format_message()}\n")
        return ExitStatus.ERROR
    except AnetError as exc:
        env.stderr.write(f"anet: {exc}\n")
        return ExitStatus.ERROR
    except (KeyboardInterrupt, click.Abort):
        env.stderr.write("anet: interrupted; running jobs were stopped\n")
        return ExitStatus.INTERRUPTED
    return status if isinstance(status, int) else ExitStatus.OK


def main() -> None:
    sys.exit(raw_main())
