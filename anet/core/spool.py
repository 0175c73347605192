"""Job output too big to keep in the master's memory: spooled to a private file as it arrives.

An attempt's output stays in memory (a bytearray, then `bytes` in its result: the common case,
`echo ID`, pays nothing more) until its stdout and stderr together pass `SPOOL_AT`; from then on
each stream goes to a `Spool`: a temporary file (0600) unlinked as soon as it is made,
so no other process can open it and nothing is left on disk when it is dropped, or when the
master dies, however it dies: there is nothing to clean up at the next start. The files live
under `spool_dir()` (a 0700 directory beside the journals, on disk: /tmp is often a tmpfs,
which is memory again).

A result whose output was spooled carries the `Spool` (see record.py): sinks, the journal and
--results copy it in `CHUNK`s, so the master's memory is bounded by the work in flight however
much a job prints (invariant 4). The file goes when the last reference to the result does
(CPython frees it at once), or at `close()` for an attempt whose output became moot (a
speculative copy that lost, a killed one).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SPOOL_AT: Final = 1 << 20
"""Output bytes (stdout and stderr together) an attempt keeps in memory; beyond, it spools."""
CHUNK: Final = 1 << 20
"""Bytes read from a spool at a time by whatever copies it (sinks, journal, results folder)."""


@dataclass(frozen=True, slots=True)
class OutputCap:
    """The most output one attempt may give: past `size` bytes (of stdout alone with
    `stdout_only`, else of both streams) it is killed and its job fails, with no retry (it would
    print as much again); the failure reads "its output passed {why}"."""

    size: int
    why: str
    stdout_only: bool = False


def spool_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/anet/spool` (~/.local/state/anet/spool): on disk, private to the user."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is invalid and ignored
        state = os.path.join(env.get("HOME") or str(Path.home()), ".local", "state")
    return Path(state, "anet", "spool")


def _private_dir(directory: Path) -> str:
    """The spool directory, made 0700 if new; the system's temporary directory if it cannot be
    made (a read-only home): spooling there beats holding gigabytes in memory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(directory)
    except OSError:
        return tempfile.gettempdir()


class Spool:
    """One output stream in an unlinked 0600 file: `write` as it arrives, then `size`,
    `chunks()`, `read()` (whole: for callers that asked for bytes), `tail(n)`."""

    __slots__ = ("_fd", "size")

    def __init__(self, directory: Path | None = None) -> None:
        where = _private_dir(directory if directory is not None else spool_dir())
        self._fd, name = tempfile.mkstemp(prefix="out-", dir=where)  # 0600
        os.unlink(name)  # open but nameless: gone with the last fd, even after a kill -9
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`; OSError (ENOSPC...) is the caller's to turn into a failed job."""
        view = memoryview(data)
        while view:  # at an explicit offset: readers pread, no file position is shared
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]

    def chunks(self, size: int = CHUNK, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The contents (from `start` up to `stop`) in pieces of at most `size` bytes."""
        offset, end = start, self.size if stop is None else min(stop, self.size)
        while offset < end:
            piece = os.pread(self._fd, min(size, end - offset), offset)
            if not piece:
                raise OSError(f"spool file shorter than its {self.size} bytes")
            offset += len(piece)
            yield piece

    def read(self) -> bytes:
        """The whole contents at once (as much memory as the output is big)."""
        return b"".join(self.chunks(max(self.size, 1)))

    def tail(self, size: int) -> bytes:
        """The last `size` bytes at most."""
        start = max(self.size - size, 0)
        return os.pread(self._fd, self.size - start, start)

    def close(self) -> None:
        """Give the disk space back now (else it goes with the last reference)."""
        fd = getattr(self, "_fd", -1)  # unset if mkstemp failed in __init__
        if fd >= 0:
            self._fd = -1
            os.close(fd)

    def __len__(self) -> int:
        return self.size

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spool {self.size} bytes>"


Output = bytes | Spool
"""A stream of a result as the master holds it: bytes when small, else spooled."""


def chunks(
    output: Output, size: int = CHUNK, start: int = 0, stop: int | None = None
) -> Iterator[bytes]:
    """`output` (from `start` up to `stop`) in pieces: the bytes themselves (no copy when
    whole), or a spool read in `size` pieces."""
    if isinstance(output, Spool):
        yield from output.chunks(size, start, stop)
    elif start or (stop is not None and stop < len(output)):
        if piece := output[start:stop]:
            yield piece
    elif output:
        yield output


def tail(output: Output, size: int) -> bytes:
    """The last `size` bytes of `output`."""
    return output.tail(size) if isinstance(output, Spool) else output[-size:]
