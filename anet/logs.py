"""anet's log lines on stderr: one readable line per problem, or JSON for machines.

Messages are written to stand alone (`host1: connection refused: ...`); the key-values beside
them are for `--log-json` and `-v`, so the default output stays one clear line per event.

structlog renders, the stdlib logger named "anet" delivers. A program that uses anet as a
library and configures nothing gets Python's default: warnings and errors on stderr, never a
line on its stdout. The CLI calls `configure()` to choose the level and the rendering.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, TextIO

from .printable import printable

_LOGGER = logging.getLogger("anet")
_style = {"verbose": False, "json": False}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


@functools.cache
def _structlog() -> Any:
    """structlog, imported when the first line is rendered: its import costs more than the
    rest of `anet --version` (it loads rich for its tracebacks), and most runs log nothing."""
    import structlog

    return structlog


@functools.cache
def _json() -> Any:
    return _structlog().processors.JSONRenderer()


@functools.cache
def _stamp() -> Any:
    return _structlog().processors.TimeStamper(fmt="iso", utc=True)


def _render(logger: Any, name: str, event: dict[str, Any]) -> str:
    """One line; what a host said in it (a reason, a hostname) has its control codes escaped.
    JSON needs no more: the renderer escapes every control and non-ASCII character."""
    if _style["json"]:
        return str(_json()(logger, name, event))
    message = printable(str(event.pop("event")))
    if not _style["verbose"]:
        return f"anet: {message}"
    level = event.pop("level", "")
    extra = " ".join(
        f"{key}={printable(str(value))}" for key, value in event.items() if key != "timestamp"
    )
    return f"anet: {level}: {message}" + (f"  [{extra}]" if extra else "")


def get_logger() -> Logger:
    """The logger every anet module writes to."""
    return Logger()


class Logger:
    """structlog's logger over the stdlib one named "anet", built on the first line that the
    level lets through: a line below the level costs one `isEnabledFor` and imports nothing."""

    _real: Any = None

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if not _LOGGER.isEnabledFor(_LEVELS[level]):
            return
        if Logger._real is None:
            structlog = _structlog()
            processors = [structlog.processors.add_log_level, _stamp(), _render]
            Logger._real = structlog.wrap_logger(_LOGGER, processors=processors)
        getattr(Logger._real, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)


def is_json() -> bool:
    """Whether stderr carries JSON lines only (`--log-json`): then everything anet writes there,
    not only log lines (a summary, a table, an error at exit), is a JSON object."""
    return _style["json"]


def line(message: str, level: str = "info", **fields: Any) -> str:
    """A line for stderr that is not a log record but must look like one, whatever the level
    filter: `anet: message` (escaped: it may hold what a host said), or with `--log-json` a JSON
    object with a log record's keys (`event`, `level`, `timestamp`) beside `fields`."""
    if _style["json"]:
        event = _stamp()(None, level, {**fields, "event": message, "level": level})
        return f"{_json()(None, level, event)}\n"
    return f"anet: {printable(message)}\n"


def configure(verbosity: int = 0, json: bool = False, stream: TextIO | None = None) -> None:
    """Warnings and errors by default; -v adds progress facts, -vv debugging detail."""
    _style["verbose"], _style["json"] = verbosity > 0, json
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    _LOGGER.propagate = False
