"""What every `anet` subcommand shares: the outside world, exit statuses, host options.

Subcommands live in their own modules (`cli_*.py`) and build on these, so each stays a thin
layer over `anet.api`; `anet.cli` assembles them into the one `anet` command.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, TypeVar

import click

from ..errors import Stopped
from ..loops import loop_factory

if TYPE_CHECKING:  # imported where used: `anet --version` needs neither, nor asyncio
    from ..remote.connect import SshOptions
    from ..remote.hosts import HostSpec

F = TypeVar("F", bound=Callable[..., Any])


class ExitStatus(IntEnum):
    """0, or the number of failed jobs up to 101 (GNU parallel's convention), or these."""

    OK = 0
    MAX_FAILED = 101
    INTERRUPTED = 130
    ERROR = 255


@dataclass(slots=True)
class Environment:
    """The process's outside world, replaceable in tests."""

    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout.isatty()


@dataclass(frozen=True, slots=True)
class HostArgs:
    """Which machines a command addresses, from -S/-H/-j/--ssh-config."""

    hosts: tuple[str, ...] = ()
    host_files: tuple[str, ...] = ()
    """-H's words as typed: `./slurm` names a file, `slurm` the allocation (`read_source`)."""
    slots: int | None = None
    ssh_config: Path | None = None
    accept_new_hosts: bool = False

    def resolve(self, env: Environment) -> list[HostSpec]:
        """The hosts, one spec per end machine as the ssh config and name resolution say."""
        from ..remote.connect import SshOptions
        from ..remote.hosts import resolve_hosts

        config = SshOptions(config=self.ssh_config).config_paths()
        return resolve_hosts(
            self.hosts, self.host_files, slots=self.slots, environ=env.environ, ssh_config=config
        )

    def ssh_options(self, keepalive: float) -> SshOptions:
        from ..remote.connect import SshOptions

        return SshOptions(
            config=self.ssh_config, keepalive=keepalive / 3, accept_new_hosts=self.accept_new_hosts
        )


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf: nan compares false with everything, so a
    bound set to it is never (or always) reached, e.g. `--keepalive nan` dropped every host."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


ssh_config_option = click.option(
    "--ssh-config", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="ssh client config replacing ~/.ssh/config.",
)  # fmt: skip
"""--ssh-config, for the commands that take -S/-H (`host_options`) and for `hosts scan`."""


def host_options(command: F) -> F:
    """-S, -H, -j, --ssh-config, --accept-new-hosts: one `host_args: HostArgs` parameter."""

    options = [
        click.option(
            "-S", "--host", "hosts", multiple=True, metavar="SPEC",
            help="[N/][user@]host[:port], ':' = local; node[01-40] ranges too.",
        ),
        click.option(
            "-H", "--hosts", "host_files", multiple=True, metavar="FILE",
            help="Hosts file (one SPEC a line), Ansible inventory[:GROUP], 'slurm' or 'pbs'"
            " (the allocation). Default: $ANET_HOSTS, else this machine.",
        ),
        click.option("-j", "--slots", type=click.IntRange(min=1), help="Job slots on every host."),
        ssh_config_option,
        click.option(
            "--accept-new-hosts", is_flag=True,
            help="Record the keys of hosts known_hosts has never seen; a changed key is refused.",
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["host_args"] = HostArgs(
            kwargs.pop("hosts"), kwargs.pop("host_files"), kwargs.pop("slots"),
            kwargs.pop("ssh_config"), kwargs.pop("accept_new_hosts"),
        )  # fmt: skip
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def log_options(command: F) -> F:
    """-v and --log-json, applied before the command runs."""
    from .. import logs

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        env = click.get_current_context().find_object(Environment) or Environment()
        logs.configure(kwargs.pop("verbose"), kwargs.pop("log_json"), env.stderr)
        return command(*args, **kwargs)

    wrapper = click.option("--log-json", is_flag=True, help="Log lines on stderr as JSON.")(wrapper)
    wrapper = click.option(
        "-v", "--verbose", count=True, help="More log lines on stderr (-vv: debug)."
    )(wrapper)
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def quiet_host_failures() -> Iterator[None]:
    """For a command that asks each host once and reports every failure in its answer (a
    table): the cluster's own "; retrying" warnings would repeat them, and untruly, since the
    command will not try again. Shown with -v."""
    logger = logging.getLogger("anet")
    level = logger.level
    if level in (logging.NOTSET, logging.WARNING):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end a run the way Ctrl-C does (asyncio.Runner handles SIGINT itself)."""


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """uvloop when it is installed: the master's per-job cost is mostly event-loop overhead.

    ANET_NO_UVLOOP=1 forces the stock loop, for benchmarks and for ruling uvloop out of a bug.
    """
    import asyncio

    # The loop the SSH hosts were connected on before this command's modules were imported
    # (remote/earlyssh.py), if `main` started that: looked up, not imported, for the others.
    earlyssh = sys.modules.get("anet.remote.earlyssh")
    early = earlyssh.handover() if earlyssh is not None else None
    factory = (lambda: early) if early is not None else loop_factory(os.environ)
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            return runner.run(_stoppable(coro))
        finally:
            if earlyssh is not None:
                earlyssh.close_untaken()


async def _stoppable(coro: Coroutine[Any, Any, int]) -> int:
    """Run `coro`; TERM or HUP cancels it, as asyncio.Runner does on Ctrl-C, so the same
    cleanup runs (remote jobs killed, results written or left owed, journal committed), and
    then raises Stopped. A second such signal ends anet at once, the way the signal would."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    caught: list[int] = []

    def stop(signum: int) -> None:
        if caught:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        caught.append(signum)
        task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if caught:
            raise Stopped(caught[0]) from None
        raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def journal_key(text: str) -> Path:
    """What a generated batch's default journal is named after: the directory and the
    command's text (its inputs are its fingerprint: changed ones are refused, not new)."""
    first = re.sub(r"[^A-Za-z0-9._-]+", "_", text.split()[0] if text.split() else "")[:40]
    return Path.cwd() / f"{first or 'command'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
