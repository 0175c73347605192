"""`anet --pipe CMD` and `anet --pipe-part -a FILE CMD`: GNU parallel's way of giving data to
jobs, as options of `anet run` (anet/pipeblocks.py cuts the blocks). With either, the batch
argument is the command every block runs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click

from ..core.batch import Job
from ..core.spool import spool_dir
from ..errors import UsageError
from ..pipeblocks import Blocks, Cutting, parts
from ..streams.retention import parse_size

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BLOCK = "1M"


@dataclass(frozen=True, slots=True)
class PipeArgs:
    """How the input becomes jobs: standard input in blocks, or a file's parts (`part_of`)."""

    cutting: Cutting
    part: bool = False  # --pipe-part: a file's parts (its path: `part_of`), not stdin's blocks
    part_of: Path | None = None
    command: bytes = b""


def pipe_options(command: F) -> F:
    """The --pipe options, handed to the command as one `pipe: PipeArgs | None` parameter."""
    options = [
        click.option("--pipe", is_flag=True, help="Cut stdin into blocks, each one job's stdin."),
        click.option(
            "--pipe-part", is_flag=True,
            help="Parts of -a FILE, each read at its offset as one job's stdin.",
        ),
        click.option(
            "--block", metavar="SIZE",
            help=f"With --pipe: about SIZE bytes a block (10M: powers of 1024). [{DEFAULT_BLOCK}]",
        ),
        click.option("--recend", metavar="STR", help="With --pipe: a record ends so. [\\n]"),
        click.option("--recstart", metavar="STR", help="With --pipe: a record starts so."),
        click.option(
            "--header", metavar="REGEX",
            help="With --pipe: the input's header (':' its first line, N its first N lines), "
            "written at the top of every block.",
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["pipe"] = _pipe_args(kwargs)
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _pipe_args(kwargs: dict[str, Any]) -> PipeArgs | None:
    """The options as given; the command and --pipe-part's file (`-a`, shared with command
    mode) are the run command's to add (cli/run.py)."""
    pipe, part = kwargs.pop("pipe"), kwargs.pop("pipe_part")
    block = kwargs.pop("block")
    texts = (kwargs.pop("recend"), kwargs.pop("recstart"), kwargs.pop("header"))
    if not (pipe or part):
        names = ("--block", "--recend", "--recstart", "--header")
        given = [n for n, v in zip(names, (block, *texts), strict=True) if v is not None]
        if given:
            raise UsageError(f"{given[0]} goes with --pipe or --pipe-part")
        return None
    if part and texts[2] is not None:
        raise UsageError("--header goes with --pipe, not --pipe-part")
    try:
        size = parse_size(block or DEFAULT_BLOCK)
    except ValueError:
        raise UsageError(f"--block takes a size (e.g. 10M), not {block!r}") from None
    return PipeArgs(Cutting.parse(size, *texts), part)


@contextlib.contextmanager
def pipe_jobs(
    pipe: PipeArgs, stdin: BinaryIO, environ: Mapping[str, str]
) -> Iterator[tuple[Iterator[Job], Callable[[int], None]]]:
    """The jobs, and what to call with a job's id once it has its final result (its block
    file goes); the block files all go on exit."""
    command = pipe.command
    if pipe.part_of is not None:
        if not pipe.part_of.is_file():
            raise UsageError(f"--pipe-part needs a regular file, not {str(pipe.part_of)!r}")
        yield parts(pipe.part_of, pipe.cutting, command), lambda _id: None
        return
    with Blocks(pipe.cutting, command, spool_dir(environ)) as blocks:
        yield blocks.jobs(stdin), blocks.done
