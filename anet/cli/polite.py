"""Polite mode's options for `anet run`: --nice (more to come), as one `polite: Polite`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from dispatcher.polite import MAX_NICE, Polite

F = TypeVar("F", bound=Callable[..., Any])


def polite_options(command: F) -> F:
    """The polite-mode options, handed to the command as one `polite: Polite` parameter."""
    options = [
        click.option(
            "--nice", type=click.IntRange(0, MAX_NICE), default=0, metavar="N",
            help="Run jobs at niceness N (0-19; I/O priority follows it).",
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["polite"] = Polite(kwargs.pop("nice"))
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
