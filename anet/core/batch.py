"""Read a batch file as the original ANet numbered it: one job per non-empty line.

The original read its batch in text mode and kept every line that is not the empty string:
a lone CR, a CRLF and an LF each end a line (Python's universal newlines), and a line of only
blanks is a job like any other (`sh -c " "` prints nothing and exits 0). So a job is a maximal
run of bytes holding neither CR nor LF, and its id is its 0-based index among those runs.

The file is read as bytes and lazily, a bounded piece at a time: a 1,000,000-line batch costs
the memory of the jobs in flight, not of the file (even one whose lines end in CR alone), and
commands keep any non-UTF-8 bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError
from .files import JobFiles


@dataclass(frozen=True, slots=True)
class FilePart:
    """`length` bytes of a file from `offset` (a `--pipe` block, a `--pipe-part` part): read
    again from the file by every attempt of its job, never held in memory."""

    path: Path
    offset: int = 0
    length: int | None = None  # None: to the end of the file


JobInput = bytes | Path | FilePart
"""What a job reads on its stdin: bytes, a whole file, or a part of one."""


@dataclass(frozen=True, slots=True)
class Job:
    """One line of the batch: `command` runs with `sh -c` on the end machine.

    `stdin`, when given, is the job's standard input (else /dev/null): bytes, a file's path (a
    str is a path too) or a `FilePart`. Every attempt of the job (a retry, a speculative copy)
    reads it again from the start, so it is a value or a file, never a stream.

    `files`: what goes to the host before the job and comes back after it (--transfer,
    --return: core/files.py); the job then runs in a folder of its own there.
    """

    id: int
    command: bytes
    stdin: JobInput | None = None
    files: JobFiles | None = None

    def __post_init__(self) -> None:
        stdin = self.stdin
        if stdin is None or type(stdin) in (bytes, FilePart):
            return
        if isinstance(stdin, bytearray | memoryview):
            object.__setattr__(self, "stdin", bytes(stdin))
        elif isinstance(stdin, str | os.PathLike):
            object.__setattr__(self, "stdin", Path(stdin))
        else:
            raise TypeError(f"a job's stdin is bytes or a path, not {type(stdin).__name__}")


NUMBERING = "original-anet"
"""The rule that gives jobs their ids, as a journal records it: --resume must never match the
ids of one rule with the jobs of another (anet's first rule made no job of a white-space-only
line and ended no line at a lone CR)."""


def numbered_alike(path: str | os.PathLike[str]) -> bool:
    """Whether anet's first rule gave this batch file the ids NUMBERING gives it: it did unless
    a line holds only blanks or a lone CR ends one. (A journal of that rule resumes then.)"""
    try:
        with open(path, "rb") as stream:
            for line in stream:  # split at LF only, as the first rule did
                text = line.removesuffix(b"\n").removesuffix(b"\r")
                if b"\r" in text or (text and not text.strip()):
                    return False
    except OSError:  # unreadable now: assume the worst
        return False
    return True


READ_SIZE = 64 * 1024
"""At most this much is read at once: a line is read whole unless it is longer, and a file
with no LF at all (lone-CR line ends) is still read a piece at a time. (From a pipe, a line
ended by a lone CR therefore starts once an LF, 64 KiB or the end of the input follows.)"""


def parse_lines(pieces: Iterable[bytes]) -> Iterator[Job]:
    """Number the non-empty lines of a file given as consecutive pieces of it, cut anywhere;
    the pure core of `read_batch`."""
    return map(Job, itertools.count(), _lines(pieces))


def _lines(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The non-empty lines; a line cut over several pieces is joined once its end is seen.

    `bytes.splitlines` ends a line exactly where a text-mode read does: at LF, CRLF or a lone
    CR (never at the other characters `str.splitlines` knows). A CRLF cut between two pieces
    counts as two line ends with an empty line between them: never a job, so no matter.
    """
    unfinished: list[bytes] = []  # the start of a line whose end has not been read yet
    for piece in pieces:
        lines = piece.splitlines()
        ended = piece.endswith((b"\n", b"\r"))
        if not ended and len(lines) <= 1:  # no line end in this piece at all
            unfinished.append(piece)
            continue
        if unfinished:
            unfinished.append(lines[0])
            lines[0] = b"".join(unfinished)
            unfinished = []
        if not ended:
            unfinished.append(lines.pop())
        yield from filter(None, lines)
    last = b"".join(unfinished)
    if last:
        yield last


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
    return parse_lines(iter(lambda: stream.readline(READ_SIZE), b""))


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
