"""`anet sync DEPS`: only the deps sync, to every host, with a table of what each one got.

Useful before a series of batches: each later `anet BATCH DEPS` then costs one round trip
per host for the deps. On a terminal, large transfers show a progress line on stderr.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

import click

from .. import logs
from ..api import KEEPALIVE, Cluster
from ..deps.manifest import Tree, start_scan
from ..deps.sync import SyncReport
from ..errors import HostError
from ..printable import printable
from ..remote.session import HostSession
from ..views.progress import is_terminal
from ..views.tables import align_columns, size_text
from . import common
from .common import Environment, ExitStatus, HostArgs, host_options, log_options, run_async

PROGRESS_EVERY = 0.5


@click.command("sync")
@click.argument("deps", type=click.Path())
@host_options
@click.option(
    "--keepalive", type=common.FiniteFloat(min=1.0), default=KEEPALIVE, show_default=True,
    metavar="SECONDS", help="Declare a silent host lost after this long.",
)  # fmt: skip
@log_options
@click.pass_obj
def sync_command(env: Environment, deps: str, host_args: HostArgs, keepalive: float) -> int:
    """Make every host hold an identical copy of DEPS (only what changed travels).

    `deps/` syncs the folder's contents, `deps` the folder itself. The exit status is the
    number of hosts that could not be synced.
    """
    with common.quiet_host_failures():  # the table tells each host's failure
        return run_async(sync_program(env, deps, host_args, keepalive))


async def sync_program(env: Environment, deps: str, host_args: HostArgs, keepalive: float) -> int:
    hosts = host_args.resolve(env)
    scan = start_scan(deps, env.environ)
    meter = _Meter(env.stderr)
    cluster = Cluster(
        hosts, ssh=host_args.ssh_options(keepalive), keepalive=keepalive, deps=scan,
        sync_progress=meter.add,
    )  # fmt: skip

    async def report(session: HostSession) -> SyncReport:
        return cluster.sync_reports[session.label]  # ready means synced

    async with cluster:
        cluster.connect()  # the handshakes and dispatcher boots overlap the scan
        tree = await scan  # a DepsError ends it here, in one line, and closes the cluster
        async with asyncio.TaskGroup() as tasks:
            shown = tasks.create_task(meter.show()) if meter.enabled else None
            outcomes = await cluster.each_host(report, HostError)
            if shown is not None:
                shown.cancel()
    meter.clear()
    env.stderr.write((render_records if logs.is_json() else render_table)(tree, outcomes))
    failed = sum(isinstance(o, HostError) for o in outcomes)
    return min(failed, ExitStatus.MAX_FAILED)


def render_table(tree: Tree, outcomes: list[SyncReport | HostError]) -> str:
    """One line per host: what travelled, what was reused, how long it took, or why not."""
    header = ("host", "result", "files sent", "bytes sent", "reused", "seconds")
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        if isinstance(outcome, HostError):
            rows.append((outcome.host, f"FAILED: {printable(outcome.reason)}", "", "", "", ""))
            continue
        rows.append(
            (
                outcome.host, _result(outcome), str(outcome.files_sent),
                size_text(outcome.bytes_sent), str(outcome.reused), f"{outcome.seconds:.2f}",
            )
        )  # fmt: skip
    lines, _ = align_columns(header, rows, [False] * len(header))
    deps = f"deps: {len(tree.entries)} entries, {tree.files} files, {size_text(tree.size)}"
    return "".join(f"{line}\n" for line in [deps, *lines])


def render_records(tree: Tree, outcomes: list[SyncReport | HostError]) -> str:
    """The table's contents as JSON lines (--log-json): the deps, then one record per host."""
    lines = [logs.line("deps", entries=len(tree.entries), files=tree.files, bytes=tree.size)]
    for outcome in outcomes:
        if isinstance(outcome, HostError):
            lines.append(
                logs.line(
                    f"{outcome.host}: not synced: {outcome.reason}", "error",
                    host=outcome.host, result="failed", reason=outcome.reason,
                )
            )  # fmt: skip
            continue
        lines.append(
            logs.line(
                f"{outcome.host}: {_result(outcome)}", host=outcome.host, result=_result(outcome),
                files_sent=outcome.files_sent, bytes_sent=outcome.bytes_sent,
                reused=outcome.reused, seconds=round(outcome.seconds, 3),
            )
        )  # fmt: skip
    return "".join(lines)


def _result(outcome: SyncReport) -> str:
    if outcome.waited_for_shared:
        return "shared copy"
    return "up to date" if outcome.files_sent == 0 and outcome.reused == 0 else "ok"


class _Meter:
    """Bytes sent so far, shown on a timer (never per chunk) when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.sent = 0
        self._shown = False
        self.enabled = is_terminal(stream) and not logs.is_json()

    def add(self, _host: str, n: int) -> None:
        self.sent += n

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")

    async def show(self) -> None:
        start = time.monotonic()
        while True:  # cancelled when every host is done
            await asyncio.sleep(PROGRESS_EVERY)
            if not self.sent:
                continue
            rate = self.sent / max(time.monotonic() - start, 1e-6)
            self._stream.write(
                f"\ranet sync: {size_text(self.sent)} sent ({size_text(int(rate))}/s)\x1b[K"
            )
            self._stream.flush()
            self._shown = True
