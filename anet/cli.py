"""`anet BATCH`: argv in, exit status out; the work itself is `anet.api`.

`main()` wires the real process environment, `raw_main()` turns every outcome into an exit
status (a user mistake is one line on stderr, never a traceback), `program()` does the work
against an `Environment` that tests can replace.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from . import __version__, logs
from .api import KEEPALIVE, Cluster
from .batch import open_batch, read_batch
from .connect import SshOptions
from .errors import AnetError
from .hosts import resolve_hosts
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


async def program(args: RunArgs, env: Environment) -> int:
    """Run the batch; the exit status counts failed jobs."""
    hosts = resolve_hosts(args.hosts, args.host_files, slots=args.slots, environ=env.environ)
    encoder = encoder_for(args.format or ("text" if env.stdout_isatty else "anet"))
    total = failed = 0
    with open_batch(args.batch) as batch:
        output = await open_output(env.stdout)
        try:
            await output.write(encoder.header)
            ssh = SshOptions(config=args.ssh_config, keepalive=args.keepalive / 3)
            async with Cluster(hosts, ssh=ssh, keepalive=args.keepalive) as cluster:
                async for result in cluster.run(read_batch(batch)):
                    total += 1
                    failed += not await _emit(output, encoder, result)
        finally:
            await output.close()
    if failed:
        log.warning(f"{failed} of {total} jobs failed", failed=failed, total=total)
    return min(failed, ExitStatus.MAX_FAILED)


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
    verbose: int,
    log_json: bool,
) -> int:
    """Run each non-empty line of BATCH as a job on every core of the hosts.

    Results stream to stdout as jobs finish; the exit status is the number of failed jobs
    (at most 101), 130 after Ctrl-C, 255 for anet's own errors.
    """
    logs.configure(verbose, log_json, env.stderr)
    args = RunArgs(batch, hosts, host_files, slots, ssh_config, fmt, keepalive)
    return _run_async(program(args, env))


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
