"""The event loop anet runs on: uvloop's when it is installed, else asyncio's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


def loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's when it is installed and `ANET_NO_UVLOOP` is unset, else asyncio's (a module
    of its own: `anet`'s entry point needs it before the CLI is imported)."""
    import asyncio

    if environ.get("ANET_NO_UVLOOP", "") in ("", "0"):
        try:
            import uvloop

            return uvloop.new_event_loop  # type: ignore[no-any-return]
        except ImportError:
            pass
    return asyncio.new_event_loop
