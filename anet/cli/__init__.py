"""`anet`: argv in, exit status out; the work itself is `anet.api`.

`main()` wires the real process environment, `raw_main()` turns every outcome into an exit
status (a user mistake is one line on stderr, never a traceback). Each subcommand is a thin
module of its own (`cli_*.py`); `anet BATCH` with no subcommand name means `anet run BATCH`,
and `anet --find`/`--killall`/`--onall` are spellings of the subcommands of those names.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from .._version import __version__
from ..errors import AnetError, Stopped
from ..printable import printable
from ..views import diagnostics
from .common import Environment, ExitStatus
from .journals import journals_group
from .machines import COMMANDS as MACHINE_COMMANDS
from .report import completion_command, report_command, status_command
from .run import run_command
from .sync import sync_command

DEFAULT_COMMAND = "run"
OPTION_COMMANDS = {"--find": "find", "--killall": "killall", "--onall": "onall"}
"""Options that name a subcommand, as the original ANet and GNU parallel spell them."""


class AnetGroup(click.Group):
    """A group whose default subcommand is `run`: `anet -S h batch.txt` is `anet run -S h ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in OPTION_COMMANDS:
            args = [OPTION_COMMANDS[args[0]], *args[1:]]
        elif args and args[0] not in self.commands and args[0] not in _GROUP_OPTIONS:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


_GROUP_OPTIONS = ("-h", "--help", "--version")


@click.group(
    cls=AnetGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  anet batch.txt > results.bin                    # every core of this machine
  anet -H hosts.txt batch.txt --joblog jobs.tsv   # on the machines in hosts.txt
  anet -H hosts.txt -k --format text batch.txt    # readable, in job order
  anet -H hosts.txt batch.txt deps/               # jobs run in a synced copy of deps/
  anet sync -H hosts.txt deps/                    # only the sync (delta, atomic)
  anet --find 'my_sim' -H hosts.txt               # processes matching, on every host
  anet hosts check -H hosts.txt --write-ok ok.txt # which hosts are usable
  anet status JOURNAL                             # how far a run is, while it runs
  anet report JOURNAL -o report.html              # throughput, hosts, failures: one page
  anet journals                                   # the journals kept, and how big
  eval "$(anet completion bash)"                  # tab completion (zsh too)

`anet BATCH` means `anet run BATCH`; `anet COMMAND --help` tells more.""",
)
@click.version_option(__version__, prog_name="anet")
def cli() -> None:
    """Run batches of shell commands on every core of the machines you can reach over SSH."""


cli.add_command(run_command)
for _observing in (status_command, report_command, journals_group, completion_command):
    cli.add_command(_observing)
for _command in MACHINE_COMMANDS:  # find, killall, onall, hosts
    cli.add_command(_command)
cli.add_command(sync_command)


def raw_main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Every outcome becomes an exit status; only a bug in anet prints a traceback."""
    env = env or Environment()
    try:
        status: Any = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="anet",
            standalone_mode=False,
            obj=env,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `anet`: the help, no "anet:" prefix
        env.stderr.write(f"{exc.format_message()}\n")
        return ExitStatus.USAGE
    except click.ClickException as exc:
        env.stderr.write(f"anet: {exc.format_message()}\n")
        return ExitStatus.ERROR
    except Stopped as exc:
        _say(env, f"anet: {exc}")
        return 128 + exc.signum
    except AnetError as exc:  # may carry what a host said: "no usable host (h1: ...)"
        env.stderr.write(f"anet: {printable(str(exc))}\n")
        return ExitStatus.ERROR
    except (KeyboardInterrupt, click.Abort):
        _say(env, "anet: interrupted; running jobs were stopped")
        return ExitStatus.INTERRUPTED
    return status if isinstance(status, int) else ExitStatus.OK


def _say(env: Environment, line: str) -> None:
    """A last line that may have nowhere to go (a hung-up terminal): never a traceback."""
    with contextlib.suppress(OSError):
        env.stderr.write(f"{line}\n")
        env.stderr.flush()


def main() -> None:
    diagnostics.install()  # before anything is written: stderr must never block the work
    sys.exit(raw_main())
