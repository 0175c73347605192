"""Polls with a deadline: how a test waits for something to happen, instead of a fixed sleep.

A fixed sleep is too short on a loaded machine (the test flakes) and too long everywhere else
(the suite crawls); a poll returns as soon as the thing happened and fails, saying what it
waited for, once the deadline has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL = 0.02
"""How often a condition is asked again: short next to every deadline used here."""


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """``condition()``'s first true value, asked every INTERVAL; AssertionError naming ``what``
    if it is still false after ``timeout`` seconds (it is asked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        _give_up_after(deadline, timeout, what)
        time.sleep(INTERVAL)
    return value


async def until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """:func:`wait_until` for a coroutine: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        _give_up_after(deadline, timeout, what)
        await asyncio.sleep(INTERVAL)
    return value


def _give_up_after(deadline: float, timeout: float, what: str) -> None:
    if time.monotonic() >= deadline:
        raise AssertionError(f"not within {timeout:g}s: {what}")


def journal_rows(journal: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a journal that a running anet may be writing, read-only: what a test polls to
    see a result committed or a host event recorded ([] while the file does not exist yet)."""
    if not journal.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()
