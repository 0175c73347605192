"""The per-job file options of `anet run` (GNU parallel's --transfer, --return, --cleanup)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..core.files import FileRules

F = TypeVar("F", bound=Callable[..., Any])


def file_options(command: F) -> F:
    """The options, handed to the command as one `files: FileRules` parameter."""
    options = [
        click.option(
            "--transfer", is_flag=True,
            help="Command mode: send each argument naming a file to the host before its job"
            " (the job runs in a folder of its own there).",
        ),
        click.option(
            "--transferfile", "--tf", "transfer_files", multiple=True, metavar="TEMPLATE",
            help="Command mode: send this file (a template: {}, {.}...) before the job.",
        ),
        click.option(
            "--return", "returns", multiple=True, metavar="TEMPLATE",
            help="Command mode: bring this file back after the job (e.g. {.}.out).",
        ),
        click.option(
            "--cleanup", is_flag=True,
            help="Remove the job's sent and returned files on the host after it.",
        ),
        click.option(
            "--trc", multiple=True, metavar="TEMPLATE",
            help="--transfer --return TEMPLATE --cleanup.",
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        names = ("transfer", "transfer_files", "returns", "cleanup", "trc")
        given = (kwargs.pop(name) for name in names)
        kwargs["files"] = FileRules.parse(*given, plus=kwargs["plus"])
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
