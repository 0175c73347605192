"""`anet`'s entry point: the early connections first, then click and the CLI.

A run on SSH hosts waits for its handshakes, its hosts' logins and their dispatchers' boots;
started after click and the CLI's modules were imported, they began some 60 ms into the
process. Here they start first: the arguments are read by `anet.argscan` (no click, nothing
of the run), the hosts' connections or the local dispatcher are started (earlyssh.py,
early.py), and only then is `anet.cli` imported and run. The console script and `python -m
anet` both come here; `tests/test_startup.py` checks that nothing heavy is imported first.
"""

from __future__ import annotations

import atexit
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from .argscan import COMMANDS, ssh_hosts
from .loops import loop_factory
from .views import diagnostics


def main() -> None:
    diagnostics.install()  # before anything is written: stderr must never block the work
    args, environ = sys.argv[1:], os.environ
    allowed = environ.get("ANET_NO_EARLY", "") in ("", "0")  # else neither starts early
    early_ssh = allowed and _start_early_ssh(args, environ)
    from . import cli  # click and the CLI, while the early handshakes go on

    early = allowed and not early_ssh and _start_early(args, environ)
    try:
        status = cli.raw_main()
    finally:
        if early:
            from .remote import early as started

            started.discard()  # the run's own took it; else it was never used
        if early_ssh:
            from .remote import earlyssh

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
    from .cli import cli
    from .cli.argv import names_this_machine

    here = names_this_machine(args, cli.commands)
    if here is None:  # no hosts named: this machine, unless $ANET_HOSTS or a pool is up
        here = not environ.get("ANET_HOSTS") and ("--no-pool" in args or not _pool_up(environ))
    if not here:
        return False
    from .remote import early

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
    if found is None:
        return False
    specs, sources, config, batch = found
    if config is not None and not os.path.isfile(config):
        return False  # click says so, and nothing is to be connected
    config_path = None if config is None else Path(config)
    if batch is not None and not _holds_a_job(batch):
        return False  # an empty batch connects no host; a stream is not read twice
    from .remote import preconnect
    from .remote.hosts import listed_hosts, merge_hosts
    from .remote.sshlib import config_paths

    paths = config_paths(config_path)
    try:  # the hosts as the run resolves them (its notes are the run's to say)
        hosts = listed_hosts(specs, sources, environ=environ, say=_unsaid)
    except Exception:  # a mistake the run will refuse in its own words
        return False
    if any(host.local for host in hosts):
        return False
    preconnect.start(hosts, paths)  # sshd's side begins while asyncssh is imported
    from .remote import earlyssh
    from .remote.connect import Connector, SshOptions

    try:  # one spec per end machine, as the run merges them
        hosts = merge_hosts(hosts, paths, say=_unsaid)
    except Exception:  # a config the run will refuse in its own words
        preconnect.close_untaken()
        return False
    options = SshOptions(config=config_path)
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
    from .pool.place import DEFAULT_NAME, place

    return place(DEFAULT_NAME, environ).socket.exists()
