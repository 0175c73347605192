"""anet's log lines on stderr: one readable line per problem, or JSON for machines.

Messages are written to stand alone (`host1: connection refused: ...`); the key-values beside
them are for `--log-json` and `-v`, so the default output stays one clear line per event.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def _plain(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    return f"anet: {event.pop('event')}"


def _verbose(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    message = event.pop("event")
    level = event.pop("level", "")
    extra = " ".join(f"{key}={value}" for key, value in event.items() if key != "timestamp")
    return f"anet: {level}: {message}" + (f"  [{extra}]" if extra else "")


def configure(verbosity: int = 0, json: bool = False, stream: TextIO | None = None) -> None:
    """Warnings and errors by default; -v adds progress facts, -vv debugging detail."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    renderer = structlog.processors.JSONRenderer() if json else (_verbose if verbosity else _plain)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
