"""`anet journals` and `anet journals clean`: the default journals, listed and removed.

The policy that keeps them in bounds on its own is anet/streams/retention.py; these commands
show what it left and let a person remove more (never a journal a run holds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..printable import printable
from ..streams.journal import journals_dir
from ..streams.retention import Cleaning, JournalInfo, Policy, clean, parse_age, survey
from ..views.tables import align_columns, size_text
from .common import Environment, ExitStatus

HEADER = ["batch", "last run", "state", "jobs", "failed", "outputs", "size", "journal"]
RIGHT = [False, False, False, True, True, False, True, False]
"""Numbers flush right, names and words flush left."""


def limits(policy: Policy) -> str:
    """`limits: 20 journals, 1.0 GiB`, or what the settings turned off."""
    keep = "no count limit" if policy.keep is None else f"{policy.keep} journals"
    size = "no size limit" if policy.max_size is None else size_text(policy.max_size)
    return f"limits: {keep}, {size}"


def listing(directory: Path, infos: list[JournalInfo], policy: Policy) -> str:
    """What `anet journals` prints: a table, the most recent first, then the totals."""
    if not infos:
        return f"no journals in {printable(str(directory))} ({limits(policy)})\n"
    rows = [_row(info) for info in infos]
    used = size_text(sum(info.size for info in infos))
    lines = [
        f"journals in {printable(str(directory))}:",
        *align_columns(HEADER, rows, RIGHT)[0],
        f"{len(infos)} journal{'s' * (len(infos) != 1)}, {used} ({limits(policy)})",
    ]
    return "".join(line + "\n" for line in lines)


def _row(info: JournalInfo) -> list[str]:
    total = "?" if info.total is None else str(info.total)
    if info.dropped:
        outputs = "dropped"
    elif info.owed and info.holder is None:  # while a run writes, results are on their way
        outputs = f"{info.owed} owed"  # --resume --only-new would write these
    else:
        outputs = "kept"
    state = info.state if info.holder in (None, 0) else f"{info.state} (pid {info.holder})"
    return [
        printable(info.batch),
        time.strftime("%Y-%m-%d %H:%M", time.localtime(info.modified)),
        state,
        f"{info.done}/{total}",
        str(info.failed),
        outputs,
        size_text(info.size),
        printable(info.path.name),
    ]


@click.group("journals", invoke_without_command=True)
@click.pass_context
def journals_group(ctx: click.Context) -> int | None:
    """List the default journals: batch, last run, state, jobs done, size.

    \b
    States: complete (every job has a final result), interrupted, running (a run holds it),
    unknown (the batch file changed or is gone), damaged.
    Outputs: dropped (a finished run: the job table stays), kept, or N owed (results
    --resume --only-new would write).
    Limits: ANET_JOURNALS_KEEP (20), ANET_JOURNALS_MAX_SIZE (1G), or `off`;
    ANET_JOURNALS_KEEP_OUTPUTS=1 keeps finished runs' outputs. See docs/guide.md.
    """
    if ctx.invoked_subcommand is not None:
        return None
    env: Environment = ctx.find_object(Environment) or Environment()
    policy = Policy.from_environ(env.environ)
    directory = journals_dir(env.environ)
    env.stdout.write(listing(directory, survey(directory), policy).encode())
    env.stdout.flush()
    return ExitStatus.OK


class Age(click.ParamType):
    """`30s`, `90m`, `12h`, `7d`, `2w`; a bare number counts days."""

    name = "age"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_age(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an age such as 30m, 12h, 7d or 2w.", param, ctx)


@journals_group.command("clean")
@click.option("--all", "everything", is_flag=True, help="Remove every journal no run holds.")
@click.option(
    "--older-than", type=Age(), metavar="AGE",
    help="Remove the journals last written longer ago than AGE (30m, 12h, 7d, 2w).",
)  # fmt: skip
@click.pass_obj
def clean_command(env: Environment, everything: bool, older_than: float | None) -> int:
    """Remove journals; without an option, apply the retention policy now.

    A journal a running anet holds is never removed. --all and --older-than remove whole
    journals, also those of interrupted runs (a later --resume of their batch then has
    nothing to resume).
    """
    if everything and older_than is not None:
        raise click.UsageError("give --all or --older-than, not both")
    policy = Policy.from_environ(env.environ)
    directory = journals_dir(env.environ)
    done = clean(directory, policy, everything=everything, older_than=older_than)
    env.stdout.write(cleaning_text(done).encode())
    env.stdout.flush()
    for error in done.errors:
        env.stderr.write(f"anet: {printable(error)}\n")
    return ExitStatus.ERROR if done.errors else ExitStatus.OK


def cleaning_text(done: Cleaning) -> str:
    """One line per journal removed, dropped or kept busy, and the space freed."""
    lines = [
        *(
            f"removed {_named(info)} ({info.state}, {size_text(info.size)})"
            for info in done.removed
        ),
        *(f"dropped the outputs of {_named(info)}, kept its job table" for info in done.dropped),
        *(f"kept {printable(info.path.name)}: in use by a running anet" for info in done.busy),
    ]
    if not (done.removed or done.dropped):
        lines.append("nothing to remove")
    else:
        lines.append(f"freed {size_text(done.freed)}")
    return "".join(line + "\n" for line in lines)


def _named(info: JournalInfo) -> str:
    return f"{printable(info.path.name)} of {printable(info.batch)}"
