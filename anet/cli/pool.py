"""`anet up`, `down`, `submit`, `ls`, `attach`, `wait`, `cancel`: the resident master.

`up` starts a pool (anet/pool/): a daemon holding the connections and dispatchers, taking
batches from its owner's commands. Each of the others is one request to it over its socket.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import click

from dispatcher.polite import Polite

from .. import logs
from ..api import KEEPALIVE
from ..core.engine import RunPolicy
from ..core.halt import HaltPolicy
from ..errors import UsageError
from ..pool import daemon
from ..pool.client import Target, Via, deps_path, pool_options, request
from ..pool.place import DEFAULT_NAME, Place, place
from ..printable import printable
from ..remote.connect import SshOptions
from ..streams.retention import Policy
from ..streams.sinks import FORMATS, encoder_for
from ..views.tables import align_columns
from .common import (
    Environment,
    ExitStatus,
    F,
    FiniteFloat,
    HostArgs,
    host_options,
    run_async,
    ssh_config_option,
)
from .polite import polite_options
from .pooled import priority_option, start_joblog, write_run
from .trying import policy_options

pool_option = click.option(
    "--pool", "pool_name", default=DEFAULT_NAME, show_default=True, metavar="NAME",
    help="Which pool (several may be up, by name).",
)  # fmt: skip


def target_options(command: F) -> F:
    """--pool, --via, --ssh-config: one `target: Target` parameter (which pool, and where)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        env = click.get_current_context().find_object(Environment) or Environment()
        name, via, config = kwargs.pop("pool_name"), kwargs.pop("via"), kwargs.pop("ssh_config")
        # With --via, the socket's directory is the other machine's, asked there (client.py)
        remote = Via(via, SshOptions(config=config)) if via is not None else None
        kwargs["target"] = (place(name, env.environ), remote)
        return command(*args, **kwargs)

    wrapper = ssh_config_option(wrapper)
    wrapper = click.option(
        "--via", metavar="[USER@]HOST", help="The pool runs on that machine: reach it over SSH."
    )(wrapper)
    return pool_option(wrapper)  # type: ignore[return-value]


@click.command("up")
@host_options
@pool_option
@click.option(
    "--foreground", is_flag=True, help="Stay in the foreground (for systemd and the like)."
)
@click.option("--keepalive", type=FiniteFloat(min=1.0), default=KEEPALIVE, show_default=True,
              help="Seconds of silence after which a host is lost.")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="More lines in the pool's log.")
@polite_options
@click.pass_obj
def up_command(
    env: Environment, host_args: HostArgs, pool_name: str, foreground: bool, keepalive: float,
    verbose: int, polite: Polite,
) -> int:  # fmt: skip
    """Start a resident master: connect the hosts, keep them warm, take batches. Polite mode
    (--nice, --max-load, --memfree, --yield) is the pool's hosts', for every run."""
    where = place(pool_name, env.environ)
    # Jobs on this machine run where `anet up` was given, as `anet BATCH` runs them
    hosts, ssh = host_args.resolve(env), host_args.ssh_options(keepalive)
    keep = Policy.from_environ(env.environ).keep  # a bad setting is said here, not in the log
    config = daemon.PoolConfig(hosts, ssh, keepalive, os.getcwd(), polite=polite, keep_runs=keep)

    def start(ready: Any) -> int:
        logs.configure(max(verbose, 1), False, None)  # the daemon's stderr is its log
        return run_async(_serve(where, config, ready))

    if foreground:
        return start(lambda line: env.stderr.write(line + "\n"))
    line = daemon.detach(where, start)
    env.stderr.write(f"{line}; its log: {printable(str(where.log))}\n")
    return ExitStatus.OK


async def _serve(where: Place, config: daemon.PoolConfig, ready: Any) -> int:
    await daemon.serve(where, config, ready)
    return ExitStatus.OK


@click.command("down")
@target_options
@click.option("--wait", is_flag=True, help="Let the runs under way finish first (no new one).")
@click.pass_obj
def down_command(env: Environment, target: Target, wait: bool) -> int:
    """Stop the pool: its runs are cancelled (remote jobs killed), its hosts let go; with
    --wait, once its runs under way have ended."""
    run_async(request(target, {"op": "down", "wait": wait}))
    where, via = target
    deadline = time.monotonic() + 30
    while via is None and where.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the socket is gone once the pool has stopped
    env.stderr.write(f"pool {where.name!r} is down\n")
    return ExitStatus.OK


@click.command("submit")
@target_options
@policy_options
@click.option("-k", "--keep-order", is_flag=True, help="Results in job-id order.")
@priority_option
@click.option(
    "--joblog", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="One line per attempt (GNU parallel's joblog), added by the pool as attempts end.",
)  # fmt: skip
@click.argument("batch", type=click.Path(path_type=Path, dir_okay=False, allow_dash=False))
@click.argument("deps", required=False, type=click.Path(), metavar="[DEPS]")
@click.pass_obj
def submit_command(
    env: Environment, target: Target, policy: RunPolicy, halt: HaltPolicy, keep_order: bool,
    priority: int, joblog: Path | None, batch: Path, deps: str | None,
) -> int:  # fmt: skip
    """Give the pool a batch (and its DEPS, synced for this run alone); print its run id
    and return at once."""
    if deps is not None and target[1] is not None:  # the pool reads the folder where it runs
        raise UsageError("a deps folder goes with a pool on this machine, not --via")
    try:
        data = batch.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read batch file {str(batch)!r}: {exc.strerror}") from None
    options = pool_options(policy, halt, keep_order, priority)
    if joblog is not None:
        if target[1] is not None:  # the file would be made here, the lines added there
            raise UsageError("--joblog goes with a pool on this machine, not --via")
        options["joblog"] = start_joblog(joblog)
    if deps is not None:
        options["deps"] = deps_path(deps)
    message = {"op": "submit", "batch": data, "name": str(batch), "options": options}
    row = run_async(request(target, message))
    env.stdout.write(f"{row['id']}\n".encode())
    env.stdout.flush()
    return ExitStatus.OK


@click.command("ls")
@target_options
@click.pass_obj
def ls_command(env: Environment, target: Target) -> int:
    """The pool's runs: id, state, done/failed/total, started, batch."""
    reply = run_async(request(target, {"op": "ls"}))
    runs = [
        {**row, "run": row["id"], "batch": row["name"], "started": _clock(row["started"])}
        for row in reply["runs"]
    ]
    _print_table(env, ("run", "state", "done", "failed", "total", "started", "batch"), runs)
    return ExitStatus.OK


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


_NUMBERS = frozenset({"run", "done", "failed", "total", "slots", "running"})


def _print_table(env: Environment, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Rows the pool sent, as a plain table on stdout: numbers right, the rest left, every
    cell made printable (a host's error or a batch name may hold anything)."""
    cells = [[printable(str(row[c])) for c in columns] for row in rows]
    lines, _ = align_columns(columns, cells, [c in _NUMBERS for c in columns])
    env.stdout.write("".join(line.rstrip() + "\n" for line in lines).encode())


@click.group("pool", invoke_without_command=True)
@target_options
@click.pass_context
def pool_command(ctx: click.Context, target: Target) -> int:
    """The pool's hosts: state, slots, jobs running and done, why one is held or failing;
    `anet pool add SPEC...` and `anet pool drain SPEC...` change them."""
    ctx.meta["pool_target"] = target
    if ctx.invoked_subcommand is not None:
        return ExitStatus.OK
    env: Environment = ctx.obj
    reply = run_async(request(target, {"op": "ping"}))
    _print_table(env, ("host", "state", "slots", "running", "done", "note"), reply["hosts"])
    env.stdout.write(f"pid {reply['pid']}\n".encode())
    return ExitStatus.OK


@pool_command.command("add")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.pass_context
def pool_add_command(ctx: click.Context, specs: tuple[str, ...]) -> int:
    """Add hosts ([N/][user@]host[:port], as -S takes them) to the running pool; returns once
    each is ready or failed, as `anet up` does. The pool's next start (`anet up` of its name)
    has them too."""
    env: Environment = ctx.obj
    reply = run_async(request(ctx.meta["pool_target"], {"op": "add", "hosts": list(specs)}))
    _print_table(env, ("host", "state", "slots", "running", "done", "note"), reply["hosts"])
    return ExitStatus.OK


@pool_command.command("drain")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.pass_context
def pool_drain_command(ctx: click.Context, specs: tuple[str, ...]) -> int:
    """Let hosts go: they get no new job (those queued there run elsewhere), their running
    jobs finish, then their dispatchers stop. Returns once every one has gone; the pool's
    next start leaves them out too."""
    env: Environment = ctx.obj
    reply = run_async(request(ctx.meta["pool_target"], {"op": "drain", "hosts": list(specs)}))
    env.stderr.write("".join(f"{printable(label)}: drained\n" for label in reply["drained"]))
    return ExitStatus.OK


@click.command("attach")
@target_options
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default=None,
              help="Output format (default: anet, or text on a terminal).")  # fmt: skip
@click.argument("run_id", type=int)
@click.pass_obj
def attach_command(env: Environment, target: Target, fmt: str | None, run_id: int) -> int:
    """The run's results from its start, each once, then live until it ends."""
    encoder = encoder_for(fmt or ("text" if env.stdout_isatty else "anet"))
    return run_async(_attach(env, target, run_id, encoder))


async def _attach(env: Environment, target: Target, run_id: int, encoder: Any) -> int:
    row, _ = await write_run(env, target, run_id, encoder)
    return _status(env, row)


def _status(env: Environment, row: dict[str, Any]) -> int:
    """As `anet run` exits: the failed jobs' count up to 101; 130 for a cancelled run."""
    state = str(row.get("state", ""))
    if state != "done":
        env.stderr.write(f"run {row.get('id')}: {printable(state)}\n")
        return ExitStatus.INTERRUPTED if state == "cancelled" else ExitStatus.ERROR
    return min(int(row["failed"]), ExitStatus.MAX_FAILED)


@click.command("wait")
@target_options
@click.argument("run_id", type=int)
@click.pass_obj
def wait_command(env: Environment, target: Target, run_id: int) -> int:
    """Wait for the run to end; exit as `anet run` would have."""
    row = run_async(request(target, {"op": "wait", "run": run_id}))
    return _status(env, row)


@click.command("cancel")
@target_options
@click.argument("run_id", type=int)
@click.pass_obj
def cancel_command(env: Environment, target: Target, run_id: int) -> int:
    """Cancel the run: its running jobs are killed; what finished stays in its journal."""
    row = run_async(request(target, {"op": "cancel", "run": run_id}))
    env.stderr.write(f"run {row['id']}: {printable(row['state'])}\n")
    return ExitStatus.OK
