"""`anet status JOURNAL` and `anet report JOURNAL`: a run's numbers as text, or as an HTML page.

Both read the journal read-only, so they work while the batch still runs (and after). Given a
batch file instead, they read the journal `anet run BATCH` keeps for it by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import click

from .. import logs
from ..errors import UsageError
from ..streams.journal import default_journal_path
from ..views.progress import duration, job_time
from ..views.report import render_report, time_held
from ..views.stats import JobLine, RunStats, load
from ..views.tables import table
from .common import Environment, ExitStatus, log_options


def status_text(stats: RunStats) -> str:
    """What `anet status` prints: totals, per host, failed and slowest jobs."""
    done = stats.succeeded + stats.failed
    total = "?" if stats.total is None else str(stats.total)
    rate = f"{done / stats.wall:.1f} jobs/s" if stats.wall else "-"
    lines = [
        f"journal: {stats.path}",
        f"batch: {stats.meta.get('batch_path', '?')}",
        f"{done}/{total} jobs done, {stats.failed} failed, {stats.attempts} attempts,"
        f" {duration(stats.wall)} ({rate})",
    ]
    header = ["host", "jobs", "failed jobs", "attempts", "failed attempts", "jobs/min", "mean"]
    header.append("summed run time")  # of every attempt on every slot: may exceed the wall time
    rows = [
        [
            h.host,
            str(h.done),
            str(h.failed),
            str(h.attempts),
            str(h.failed_attempts),
            f"{60 * h.done / stats.wall:.0f}" if stats.wall else "-",
            job_time(h.mean),
            duration(h.busy),
        ]
        for h in stats.hosts
    ]
    if rows:
        lines += ["  " + line for line in table(header, rows)]
    lost = [e for e in stats.events if e[2] in ("lost", "failed")]
    if lost:
        lines.append(f"hosts lost or given up: {len(lost)} time(s); see `anet report`")
    if stats.held:  # polite mode held hosts: the time their slots were lost to the run
        lines.append(f"hosts held by polite mode: {duration(stats.time_held)}")
        lines += [f"  {host}: {time_held(kinds)}" for host, kinds in sorted(stats.held.items())]
    if stats.failed_jobs:
        lines.append(f"failed jobs ({stats.failed}):")
        lines += [f"  job {j.id} on {j.host}: {_ended(j)}" for j in stats.failed_jobs]
    if stats.slowest:
        slowest = ", ".join(f"{j.id} ({job_time(j.runtime)})" for j in stats.slowest[:5])
        lines.append(f"slowest jobs: {slowest}")
    return "".join(line + "\n" for line in lines)


def _ended(job: JobLine) -> str:
    """Its exit status, then why, unless why says it already (or it never exited)."""
    if job.status == "-" or job.status in job.why:
        return job.why
    return f"{job.status}: {job.why}"


JOURNAL = click.Path(path_type=Path, dir_okay=False)
SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first bytes of every SQLite file: anything else given as a journal is taken for a batch."""


def journal_of(path: Path, environ: Mapping[str, str]) -> Path:
    """`path` if it is a journal, else the default journal of the batch file `path`.

    From the file's first bytes only: a SQLite file that is not anet's is refused by the
    journal reader, naming it. A missing file is left to the reader too ("no journal at").
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(SQLITE_MAGIC))
    except OSError:
        return path
    if head == SQLITE_MAGIC:
        return path
    journal = default_journal_path(path, environ)
    if not journal.is_file():
        raise UsageError(
            f"{path} is not a journal, and no run of it as a batch is recorded (none at {journal})"
        )
    return journal


@click.command("status")
@click.argument("journal", type=JOURNAL, metavar="JOURNAL|BATCH")
@log_options
@click.pass_obj
def status_command(env: Environment, journal: Path) -> int:
    """Print how far the run recorded in JOURNAL is; works while it runs.

    Given the BATCH file instead, the journal its runs keep by default (`anet run BATCH`).

    \b
    Examples:
      anet status batch.txt
      anet status ~/.local/state/anet/journals/batch.txt-1a2b3c4d.sqlite
    """
    env.stdout.write(status_text(load(journal_of(journal, env.environ))).encode())
    env.stdout.flush()
    return ExitStatus.OK


@click.command("report")
@click.argument("journal", type=JOURNAL, metavar="JOURNAL|BATCH")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default="report.html",
    show_default=True, help="Where to write the page.",
)  # fmt: skip
@log_options
@click.pass_obj
def report_command(env: Environment, journal: Path, output: Path) -> int:
    """Write a self-contained HTML page about the run recorded in JOURNAL (or the default
    journal of the BATCH file, as `anet status` reads it).

    Throughput per host over time, run time distribution, hosts joining, lost and back,
    slowest and failed jobs. It needs no network to view.
    """
    page = render_report(load(journal_of(journal, env.environ)))
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    env.stderr.write(logs.line(f"report written to {output}", report=str(output)))
    return ExitStatus.OK


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_obj
def completion_command(env: Environment, shell: str) -> int:
    """Print the shell completion script for SHELL (click's own mechanism).

    \b
    bash: eval "$(anet completion bash)"     (or: eval "$(_ANET_COMPLETE=bash_source anet)")
    zsh:  eval "$(anet completion zsh)"
    """
    from click.shell_completion import get_completion_class

    # The whole command tree is the root of this command's context: found there, not imported
    # from anet.cli, which imports this module.
    tree = click.get_current_context().find_root().command
    completion = get_completion_class(shell)
    assert completion is not None  # the Choice above lists only shells click knows
    script = completion(tree, {}, "anet", "_ANET_COMPLETE").source()
    env.stdout.write(script.encode())
    env.stdout.flush()
    return ExitStatus.OK
