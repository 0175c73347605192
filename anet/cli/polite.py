"""Polite mode's options for `anet run`, as one `polite: Polite`: dispatcher/polite.py does the
work on the end machines."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from dispatcher.polite import MAX_NICE, NO_LIMIT, Polite

from ..errors import UsageError
from ..streams.retention import parse_size
from .common import FiniteFloat

F = TypeVar("F", bound=Callable[..., Any])

YIELD_IDLE = 300.0
"""Seconds without input after which a person at a machine counts as away (--yield)."""
YIELD_MOVE = 900.0
"""Seconds a job may stay suspended for a person before it is killed, to run elsewhere."""


def polite_options(command: F) -> F:
    """The polite-mode options, handed to the command as one `polite: Polite` parameter."""
    options = [
        click.option(
            "--nice", type=click.IntRange(0, MAX_NICE), default=0, metavar="N",
            help="Run jobs at niceness N (0-19; I/O priority follows it).",
        ),
        click.option(
            "--max-load", type=FiniteFloat(min=0.0), metavar="L",
            help="Start no job on a host while more than L threads of other processes run there.",
        ),
        click.option(
            "--memfree", metavar="SIZE",
            help="Start no job on a host with less memory available (512M, 2G: powers of 1024).",
        ),
        click.option(
            "--memfree-kill", is_flag=True,
            help="With --memfree: under half of SIZE, kill the youngest job (it runs again).",
        ),
        click.option(
            "--yield", "yield_to_people", is_flag=True,
            help="Suspend a host's jobs while a person works at it (a local session's input).",
        ),
        click.option(
            "--yield-idle", type=FiniteFloat(min=1.0), default=YIELD_IDLE, show_default=True,
            metavar="SECONDS", help="With --yield: a person is away after this long without input.",
        ),
        click.option(
            "--yield-move", type=FiniteFloat(min=0.0), default=YIELD_MOVE, show_default=True,
            metavar="SECONDS", help="With --yield: kill a job suspended this long, to rerun it.",
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        max_load, kill = kwargs.pop("max_load"), kwargs.pop("memfree_kill")
        if kill and kwargs["memfree"] is None:
            raise UsageError("--memfree-kill needs --memfree SIZE: it kills under half of SIZE")
        kwargs["polite"] = Polite(
            kwargs.pop("nice"),
            NO_LIMIT if max_load is None else max_load,
            _kib(kwargs.pop("memfree")),
            kill,
            *_yielding(kwargs),
        )
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _kib(size: str | None) -> int:
    """--memfree's SIZE in KiB (0: none), as GNU parallel reads it: a bare number is bytes."""
    if size is None:
        return 0
    try:
        kib = -(-parse_size(size) // 1024)  # rounded up: 1000 bytes still asks for something
    except ValueError:
        raise UsageError(f"--memfree takes a size such as 512M or 2G, not {size!r}") from None
    return kib


def _yielding(kwargs: dict[str, Any]) -> tuple[float, float]:
    """--yield's (idle, move) for Polite: (0, 0) without it."""
    idle, move = kwargs.pop("yield_idle"), kwargs.pop("yield_move")
    if not kwargs.pop("yield_to_people"):
        return 0.0, 0.0
    return idle, move
