"""`anet`: argv in, exit status out; the work itself is `anet.api`.

`main()` wires the real process environment, `raw_main()` turns every outcome into an exit
status (a user mistake is one line on stderr, never a traceback; with `--log-json`, a JSON
line). Each subcommand is a thin module of its own (`cli/run.py`...); `anet BATCH` with no
subcommand name means `anet run BATCH`, `anet --find`/`--killall`/`--onall` are spellings of
the subcommands of those names, and options may come before the subcommand (`cli/argv.py`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from .. import logs
from .._version import __version__
from ..errors import AnetError, Stopped, UsageError
from ..views import diagnostics
from .argv import (
    COMMAND_LINE,
    VALUE_OPTIONS,
    arrange,
    names_this_machine,
    split_command,
    ssh_hosts,
)
from .common import Environment, ExitStatus, loop_factory

COMMANDS = {
    "run": ("run", "run_command"),
    "status": ("report", "status_command"),
    "report": ("report", "report_command"),
    "completion": ("report", "completion_command"),
    "journals": ("journals", "journals_group"),
    "find": ("machines", "find_command"),
    "killall": ("machines", "killall_command"),
    "onall": ("machines", "onall_command"),
    "hosts": ("machines", "hosts_group"),
    "sync": ("sync", "sync_command"),
    "up": ("pool", "up_command"),
    "pool": ("pool", "pool_command"),
    "down": ("pool", "down_command"),
    "submit": ("pool", "submit_command"),
    "ls": ("pool", "ls_command"),
    "attach": ("pool", "attach_command"),
    "wait": ("pool", "wait_command"),
    "cancel": ("pool", "cancel_command"),
}
"""Each subcommand's module and name. A module is imported when its command is used (or for
`--help`): `anet run` never loads the report's, `anet --version` none."""


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


def main() -> None:
    diagnostics.install()  # before anything is written: stderr must never block the work
    early_ssh = _start_early_ssh(sys.argv[1:], os.environ)
    early = not early_ssh and _start_early(sys.argv[1:], os.environ)
    try:
        status = raw_main()
    finally:
        if early:
            from ..remote import early as started

            started.discard()  # the run's own took it; else it was never used
        if early_ssh:
            from ..remote import earlyssh

            earlyssh.discard()  # when no run took its loop (a usage error): else a no-op
    exit_now(status)


def exit_now(status: int) -> NoReturn:
    """Exit with `status` once everything said is out, without the interpreter's teardown.

    Finalizing a run's 300 modules (asyncssh's, the engine's) took 20-30 ms of CPU on a
    quiet machine, 80 at load 20, after the last byte was written: the user waited for it,
    and a script for its next command. What exit must still do is done first: the atexit
    handlers (the stderr drain), then stdout and stderr flushed. A flush that fails (a reader
    gone) leaves the exit to Python, which reports it as it always has."""
    atexit._run_exitfuncs()  # they run once: this clears them
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # ValueError: a stream closed under us
        sys.exit(status)
    os._exit(status)


def _start_early(args: list[str], environ: Mapping[str, str]) -> bool:
    """Start this machine's dispatcher before the run's modules are imported, when the
    arguments say the run is here (anet/remote/early.py): its boot then overlaps them."""
    here = names_this_machine(args, cli.commands)
    if here is None:  # no hosts named: this machine, unless $ANET_HOSTS or a pool is up
        here = not environ.get("ANET_HOSTS") and ("--no-pool" in args or not _pool_up(environ))
    if not here or environ.get("ANET_NO_EARLY", "") not in ("", "0"):
        return False
    from ..remote import early

    try:
        early.start()
    except OSError:  # the run starts it the usual way, and says what is wrong then
        return False
    return True


def _start_early_ssh(args: list[str], environ: Mapping[str, str]) -> bool:
    """Connect to the hosts of `anet [run]|sync -S H... -H FILE...` before the run's modules
    are imported, when the arguments say which for sure (anet/remote/earlyssh.py): the
    handshakes and the dispatchers' boots then overlap the imports."""
    found = ssh_hosts(args, COMMANDS)
    if found is None or environ.get("ANET_NO_EARLY", "") not in ("", "0"):
        return False
    specs, sources, config, batch = found
    if config is not None and not os.path.isfile(config):
        return False  # click says so, and nothing is to be connected
    if batch is not None and not _holds_a_job(batch):
        return False  # an empty batch connects no host; a stream is not read twice
    from ..remote import earlyssh
    from ..remote.connect import Connector, SshOptions
    from ..remote.hosts import resolve_hosts

    options = SshOptions(config=None if config is None else Path(config))
    try:  # one spec per end machine, as the run resolves them (its notes are the run's to say)
        hosts = resolve_hosts(
            specs, sources, environ=environ, ssh_config=options.config_paths(), say=_unsaid
        )
    except Exception:  # a mistake or a config the run will refuse in its own words
        return False
    if any(host.local for host in hosts):
        return False
    earlyssh.start(hosts, Connector(options), loop_factory(environ))
    return True


def _unsaid(note: str) -> None:
    """Where the early start's notes of merged hosts go: nowhere, the run says them."""


def _holds_a_job(batch: str) -> bool:
    """A regular file with a job in its first 64 KiB (a byte other than a line end: a line of
    blanks is a job). Anything else (a FIFO, a device: read once, by the run) says no."""
    try:
        if not stat.S_ISREG(os.stat(batch).st_mode):  # before open: a FIFO's would block
            return False
        with open(batch, "rb") as file:
            return bool(file.read(1 << 16).strip(b"\r\n"))
    except OSError:
        return False


def _pool_up(environ: Mapping[str, str]) -> bool:
    from ..pool.place import DEFAULT_NAME, place

    return place(DEFAULT_NAME, environ).socket.exists()
