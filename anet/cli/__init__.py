"""`anet`: argv in, exit status out; the work itself is `anet.api`.

`anet.launch.main()` wires the real process environment (and connects early, before this
package and click are imported), `raw_main()` turns every outcome into an exit status (a
user mistake is one line on stderr, never a traceback; with `--log-json`, a JSON line).
Each subcommand is a thin module of its own (`cli/run.py`...); `anet BATCH` with no
subcommand name means `anet run BATCH`, `anet --find`/`--killall`/`--onall` are spellings of
the subcommands of those names, and options may come before the subcommand (`cli/argv.py`).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import click

from .. import logs
from .._version import __version__
from ..argscan import COMMANDS, VALUE_OPTIONS
from ..errors import AnetError, Stopped, UsageError
from .argv import COMMAND_LINE, arrange, split_command
from .common import Environment, ExitStatus


class LazyCommands(Mapping[str, click.Command]):
    """The group's commands by name, each imported from its module on first use."""

    def __getitem__(self, name: str) -> click.Command:
        module, attribute = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(f".{module}", __name__), attribute)
        return command

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class AnetGroup(click.Group):
    """A group whose default subcommand is `run` (`anet -S h batch.txt` is `anet run -S h
    batch.txt`), and whose subcommands take their options before their name too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args, ctx.meta[COMMAND_LINE] = split_command(args, self.commands, VALUE_OPTIONS)  # `:::`
        return super().parse_args(ctx, arrange(args, self.commands, VALUE_OPTIONS).argv)


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
  anet status batch.txt                           # how far its run is, while it runs
  anet report batch.txt -o report.html            # throughput, hosts, failures: one page
  anet journals                                   # the journals kept, and how big
  anet up -H hosts.txt; anet submit batch.txt     # a resident master: runs outlive the terminal
  eval "$(anet completion bash)"                  # tab completion (zsh too)

`anet BATCH` means `anet run BATCH`; options may come before COMMAND too
(`anet -H hosts.txt --find x`); `anet COMMAND --help` tells more.""",
)
@click.version_option(__version__, prog_name="anet")
def cli() -> None:
    """Run batches of shell commands on every core of the machines you can reach over SSH."""


cli.commands = LazyCommands()  # type: ignore[assignment]  (read only: nothing adds to it)


def raw_main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Every outcome becomes an exit status; only a bug in anet prints a traceback."""
    env = env or Environment()
    args = list(sys.argv[1:] if argv is None else argv)
    # Before parsing: with --log-json, even a usage error is a JSON line.
    logs.configure(0, "--log-json" in itertools.takewhile(lambda a: a != "--", args), env.stderr)
    try:
        status: Any = cli.main(args=args, prog_name="anet", standalone_mode=False, obj=env)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `anet`: the help, no "anet:" prefix
        env.stderr.write(f"{exc.format_message()}\n")
        return ExitStatus.ERROR  # 2 would read as "2 jobs failed"
    except click.ClickException as exc:
        _say(env, _click_message(exc) + _shadow_hint(args, exc))
        return ExitStatus.ERROR
    except Stopped as exc:
        _say(env, str(exc))
        return 128 + exc.signum
    except AnetError as exc:  # may carry what a host said: "no usable host (h1: ...)"
        _say(env, str(exc) + _shadow_hint(args, exc))
        return ExitStatus.ERROR
    except (KeyboardInterrupt, click.Abort):
        _say(env, "interrupted; running jobs were stopped")
        return ExitStatus.INTERRUPTED
    return status if isinstance(status, int) else ExitStatus.OK


def _click_message(exc: click.ClickException) -> str:
    """click's message; an unknown option also names the command that lacks it, since options
    given before the command's name go to it (`anet -q status J`: status has no -q)."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.NoSuchOption) and ctx is not None and ctx.parent is not None:
        return f"{ctx.command_path.partition(' ')[2]}: {message}"  # "anet status" -> "status"
    return message


def _shadow_hint(args: list[str], exc: Exception) -> str:
    """When a command's usage error may mean the user wanted the batch file of its name."""
    if not isinstance(exc, (click.UsageError, UsageError)):
        return ""
    shadowed = arrange(args, cli.commands, VALUE_OPTIONS).shadowed
    return f" (to run the batch file {shadowed}, say `anet run {shadowed}`)" if shadowed else ""


def _say(env: Environment, line: str) -> None:
    """A last line, an error (a hung-up terminal may leave it nowhere to go: never a traceback)."""
    with contextlib.suppress(OSError):
        env.stderr.write(logs.line(line, "error"))
        env.stderr.flush()
