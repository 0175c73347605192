"""asyncssh, loaded when the first SSH host needs it, and its ssh config parser made cheap.

Importing asyncssh costs about 0.1 s (its crypto and OpenSSL bindings): a run on this machine
alone, `anet --version` and the report never need it, so nothing imports it at module level;
`asyncssh()` is the one door. Its exception classes are needed where a channel may fail:
`channel_errors()` names them only once asyncssh is loaded (until then none can be raised).

asyncssh parses the whole ssh config again for every host it resolves (the `Host` blocks are
matched while parsing), and that parse is mostly `shlex.split` of every line: with one block
per host, 64 hosts cost 64 x 64 blocks, 2.2 s of the master's CPU in a 32-host start (cProfile).
The lines are the same each time, so the split is remembered per line: the files are read per
host still (cheap), tokenised once per run.
"""

from __future__ import annotations

import functools
import shlex
import sys
from types import ModuleType
from typing import Any

SPLIT_CACHE = 1 << 14
"""Distinct config lines remembered: a config of 16,384 different lines still parses right,
only the lines beyond that are split again."""


class _RememberingShlex:
    """What asyncssh.config uses of `shlex` (`split`), with each line's split remembered;
    a copy of the list is returned, since the parser is free to change it."""

    def __init__(self) -> None:
        self._split = functools.lru_cache(maxsize=SPLIT_CACHE)(_split_tuple)

    def split(self, line: str) -> list[str]:
        return list(self._split(line))

    def __getattr__(self, name: str) -> Any:  # anything else of shlex, unchanged
        return getattr(shlex, name)


def _split_tuple(line: str) -> tuple[str, ...]:
    return tuple(shlex.split(line))


@functools.cache
def asyncssh() -> ModuleType:
    """The asyncssh package, imported on first use, its config parser tokenising once."""
    import asyncssh as module
    import asyncssh.config

    asyncssh.config.shlex = _RememberingShlex()  # type: ignore[assignment]
    return module


def channel_errors() -> tuple[type[BaseException], ...]:
    """What a failing SSH or pipe channel raises: OSError, and asyncssh.Error once loaded."""
    loaded = sys.modules.get("asyncssh")
    return (OSError,) if loaded is None else (OSError, loaded.Error)
