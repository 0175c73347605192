"""How hard a run tries: --retries, --timeout, --no-speculate and --halt, for the commands that
start runs (`anet run`, and `anet submit` to a pool): one definition, one meaning."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..core.engine import RunPolicy
from ..core.halt import HaltPolicy
from ..errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


def policy_options(command: F) -> F:
    """The options, handed to the command as `policy: RunPolicy` and `halt: HaltPolicy`."""
    options = [
        click.option(
            "--retries", type=click.IntRange(min=0), default=2, show_default=True,
            help="Run a failed job again up to N times, preferably on another host.",
        ),
        click.option(
            "--timeout", metavar="SECONDS|N%",
            help="Kill (and retry) a job running longer; N% of the median successful run time.",
        ),
        click.option(
            "--halt", metavar="WHEN,fail=N[%]",
            help="now,fail=N: kill all and stop after N failed jobs; soon,...: start no new job.",
        ),
        click.option(
            "--no-speculate", is_flag=True, help="Never start copies of slow jobs elsewhere."
        ),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        retries, timeout = kwargs.pop("retries"), kwargs.pop("timeout")
        speculate = not kwargs.pop("no_speculate")
        kwargs["policy"] = RunPolicy(retries, parse_timeout(timeout), speculate)
        kwargs["halt"] = HaltPolicy.parse(kwargs.pop("halt"))
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def parse_timeout(text: str | None) -> float | str | None:
    """Seconds as a number; a percentage stays text for the scheduler to parse and check."""
    if text is None or text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--timeout takes seconds or a percentage, not {text!r}") from None
