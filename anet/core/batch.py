"""Read a batch file as the original ANet numbered it: one job per non-empty line.

The file is read as bytes and lazily, line by line: a 1,000,000-line batch costs the memory of
the jobs in flight, not of the file, and commands keep any non-UTF-8 bytes. A job's id is the
0-based index of its line among the non-empty lines; a line of only white space counts as empty.
A trailing CR is dropped, so a batch saved on Windows runs the same.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError


@dataclass(frozen=True, slots=True)
class Job:
    """One line of the batch: `command` runs with `sh -c` on the end machine."""

    id: int
    command: bytes


def parse_lines(lines: Iterable[bytes]) -> Iterator[Job]:
    """Number the non-empty lines; the pure core of `read_batch`."""
    next_id = 0
    for line in lines:
        command = line.removesuffix(b"\n").removesuffix(b"\r")
        if command.strip():
            yield Job(next_id, command)
            next_id += 1


def open_batch(path: str | os.PathLike[str]) -> BinaryIO:
    """Open early, so a missing or unreadable batch is a clear error before any host is touched."""
    try:
        if os.path.isdir(path):
            raise UsageError(f"batch file {os.fspath(path)!r} is a directory")
        return open(path, "rb")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot read batch file {os.fspath(path)!r}: {reason}") from None


STDIN = "-"
"""The batch argument that means standard input, as GNU parallel and most tools spell it."""


@dataclass(frozen=True, slots=True)
class BatchSource:
    """An open batch, and whether it can be read again.

    A regular file can: its fingerprint keys the journal, a thread counts its jobs for the
    progress bar, --resume finds it again. Standard input, a pipe or a FIFO is a *stream*,
    read exactly once as the jobs are needed (`path` is None): reading it a second time would
    take lines from the jobs, or wait for ever for a writer that is gone.
    """

    stream: BinaryIO
    name: str
    path: Path | None

    @property
    def is_stream(self) -> bool:
        return self.path is None


@contextlib.contextmanager
def open_source(arg: str | os.PathLike[str], stdin: BinaryIO) -> Iterator[BatchSource]:
    """The batch named on the command line, `-` being standard input (always a stream)."""
    if os.fspath(arg) == STDIN:
        yield BatchSource(stdin, "standard input", None)
        return
    with open_batch(arg) as stream:
        regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
        yield BatchSource(stream, os.fspath(arg), Path(arg) if regular else None)


def read_batch(stream: BinaryIO) -> Iterator[Job]:
    """Jobs from an open binary stream, read as they are needed."""
    return parse_lines(iter(stream.readline, b""))


def count_jobs(path: str | os.PathLike[str]) -> int:
    """Jobs in a batch file: one streaming pass (in a thread for a big one). The one place the
    batch is counted: a --halt percentage, the progress bar's total, `anet status`."""
    with open_batch(path) as stream:
        return sum(1 for _ in read_batch(stream))


MAX_COMMAND = 128 * 1024
"""Linux's limit on one exec argument (MAX_ARG_STRLEN): `sh -c` cannot take a longer command."""


def unrunnable(command: bytes) -> str | None:
    """Why no host can run `command`, or None. Such a job fails on the master, at once, with
    this reason: sending it would only fail on every host in turn."""
    if len(command) > MAX_COMMAND:
        return f"command of {len(command)} bytes is longer than {MAX_COMMAND}"
    if b"\0" in command:
        return "command contains a NUL byte"
    return None


def as_jobs(commands: Iterable[str | bytes]) -> Iterator[Job]:
    """Jobs for the API's `Cluster.run(commands)`: strings are encoded as UTF-8.

    Unlike a batch file, every command counts: an empty one is a job that does nothing, so the
    caller's list index is the job id.
    """
    for job_id, command in enumerate(commands):
        yield Job(job_id, command.encode() if isinstance(command, str) else command)
