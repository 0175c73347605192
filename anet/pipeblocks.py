"""`--pipe`: standard input cut into blocks at record boundaries, one job's stdin each.

GNU parallel's rules, as its manual states them: a block is about `block` bytes, cut where a
record ends (`recend`, default a newline) and the next starts (`recstart`, default anything):
at the last such boundary within the block size, or, when a record is longer than that, at the
first boundary after it; a `header` (a regular expression matched at the start of the input,
`:` for the first line, a number for that many lines) is written at the top of every block.

Memory stays bounded whatever the input's size: each block goes to a file of its own in a
private spool folder (0700, its files 0600) as it is read, a piece at a time; a cut reads back
only the bytes after the boundary (the start of the next block). A block's file is kept until
its job has a final result, so a retry or a speculative copy reads the same block again
(`Blocks.done`), and the folder goes when the run ends. The jobs are made as the scheduler
pulls them: it reads ahead only as far as the hosts can take jobs.

`--pipe-part` reads no input through the master: the parts of a seekable file are found by
seeking to each multiple of the block size and reading on to the next boundary, and each job's
sender reads its part straight from the file (`FilePart`).
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .core.batch import FilePart, Job
from .errors import UsageError

PIECE = 1 << 20
"""Bytes read from the input at a time (and read back at a cut, at most a piece and a record)."""
MAX_HEADER = PIECE
"""A header must lie within the input's first piece."""


@dataclass(frozen=True, slots=True)
class Cutting:
    """Where blocks are cut: about `block` bytes, between `recend` and `recstart`."""

    block: int = 1 << 20
    recend: bytes = b"\n"
    recstart: bytes = b""
    header: bytes | None = None  # a regular expression (bytes), matched at the input's start

    @classmethod
    def parse(
        cls, block: int, recend: str | None, recstart: str | None, header: str | None
    ) -> Cutting:
        """From the command line: escapes (`\\n`, `\\t`, `\\x00`) in recend and recstart;
        `--recstart` alone means no recend, as in GNU parallel; `--header :` is the first line,
        `--header N` the first N lines. UsageError for what cannot cut anything."""
        if block < 1:
            raise UsageError(f"--block must be at least 1 byte, not {block}")
        end = _unescape(recend, "--recend") if recend is not None else None
        start = _unescape(recstart, "--recstart") if recstart is not None else b""
        if end is None:
            end = b"" if recstart is not None else b"\n"
        if not end and not start:
            raise UsageError("--recend and --recstart cannot both be empty: no record would end")
        return cls(block, end, start, _header_pattern(header))


def _unescape(text: str, option: str) -> bytes:
    try:
        return codecs.escape_decode(text.encode())[0]  # type: ignore[no-any-return]
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None


def _header_pattern(header: str | None) -> bytes | None:
    if header is None:
        return None
    if header == ":":
        return rb".*\n"
    if header.isdigit():
        return rb"(?:.*\n){%d}" % int(header)
    try:
        re.compile(header.encode())
    except re.error as exc:
        raise UsageError(f"--header {header!r} is not a regular expression: {exc}") from None
    return header.encode()


class Blocks:
    """The blocks of one input, as jobs running `command`; a context manager that removes the
    spool folder (and every block still in it) on exit."""

    def __init__(self, cutting: Cutting, command: bytes, spool: Path) -> None:
        self._cutting = cutting
        self._command = command
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="pipe-", dir=spool))
        self._files: dict[int, Path] = {}

    def __enter__(self) -> Blocks:
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def done(self, job_id: int) -> None:
        """The job has its final result: its block is not read again."""
        path = self._files.pop(job_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def jobs(self, stream: BinaryIO) -> Iterator[Job]:
        """One job per block of `stream`, ids from 0, each block read when its job is pulled."""
        first = stream.read(PIECE)
        header = _match_header(self._cutting.header, first)
        pieces = _chain(first[len(header) :], lambda: stream.read(PIECE))
        for job_id, path in enumerate(self._cut(pieces, header)):
            self._files[job_id] = path
            yield Job(job_id, self._command, stdin=path)

    def _cut(self, pieces: Iterator[bytes], header: bytes) -> Iterator[Path]:
        cutter = _Cutter(self._cutting)
        tail = b""
        while True:
            path, tail, more = self._one_block(cutter, pieces, header, tail)
            if path is not None:
                yield path
            if not more:
                return

    def _one_block(
        self, cutter: _Cutter, pieces: Iterator[bytes], header: bytes, tail: bytes
    ) -> tuple[Path | None, bytes, bool]:
        """Write the next block to a file: (its path or None if empty, the bytes after its
        cut, whether input is left)."""
        fd, name = tempfile.mkstemp(dir=self.folder, prefix="block-")  # mode 0600
        path = Path(name)
        with os.fdopen(fd, "w+b") as file:
            file.write(header)
            cutter.start()
            for piece in _chain(tail, lambda: next(pieces, b"")):
                file.write(piece)
                cut = cutter.feed(piece)
                if cut is not None:
                    file.flush()
                    end = len(header) + cut
                    after = os.pread(file.fileno(), file.tell() - end, end)
                    file.truncate(end)
                    return path, after, True
            empty = cutter.size == 0
        if empty:
            path.unlink()
            return None, b"", False
        return path, b"", False


class _Cutter:
    """Finds where the current block ends, fed its bytes piece by piece (pure logic)."""

    def __init__(self, cutting: Cutting) -> None:
        self._block = cutting.block
        self._pattern = cutting.recend + cutting.recstart
        self._end_len = len(cutting.recend)
        self.start()

    def start(self) -> None:
        self.size = 0  # bytes of the block so far
        self._within = 0  # the last boundary at or before the block size (0: none yet)
        self._overlap = b""  # the last bytes of the block, for a pattern cut between pieces

    def feed(self, piece: bytes) -> int | None:
        """Take the next bytes of the block; where it ends (bytes from its start), once known."""
        base = self.size - len(self._overlap)
        data = self._overlap + piece
        self.size += len(piece)
        keep = len(self._pattern) - 1
        self._overlap = data[len(data) - keep :] if keep else b""
        pattern, end_len = self._pattern, self._end_len
        limit = self._block - base  # a boundary at or before this (in `data`) is within
        if limit > 0:
            at = data.rfind(pattern, 0, min(len(data), limit - end_len + len(pattern)))
            if at >= 0 and base + at + end_len > 0:
                self._within = base + at + end_len
        if self.size < self._block:
            return None
        if self._within:
            return self._within
        at = data.find(pattern, max(0, limit - end_len + 1))
        while at >= 0 and base + at + end_len <= 0:  # a boundary at the block's very start
            at = data.find(pattern, at + 1)
        return base + at + end_len if at >= 0 else None


def _chain(first: bytes, more: Callable[[], bytes]) -> Iterator[bytes]:
    """`first`, then what `more()` gives until it gives b""."""
    if first:
        yield first
    while piece := more():
        yield piece


def _match_header(pattern: bytes | None, first: bytes) -> bytes:
    if pattern is None:
        return b""
    match = re.match(pattern, first)
    return match.group(0) if match else b""


def parts(path: Path, cutting: Cutting, command: bytes) -> Iterator[Job]:
    """`--pipe-part`: a job per part of the file, each read by its own sender at its offset."""
    try:
        size = path.stat().st_size
        file = open(path, "rb")  # noqa: SIM115  (closed by the generator below)
    except OSError as exc:
        raise UsageError(f"--pipe-part: cannot read {str(path)!r}: {exc.strerror}") from None
    return _parts(file, path, size, cutting, command)


def _parts(
    file: BinaryIO, path: Path, size: int, cutting: Cutting, command: bytes
) -> Iterator[Job]:
    with file:
        start, job_id = 0, 0
        while start < size:
            end = _boundary_after(file, start + cutting.block, size, cutting)
            yield Job(job_id, command, stdin=FilePart(path, start, end - start))
            start, job_id = end, job_id + 1


def _boundary_after(file: BinaryIO, at: int, size: int, cutting: Cutting) -> int:
    """The first record boundary at or after `at`, read from the file there; `size` if none."""
    if at >= size:
        return size
    pattern, end_len = cutting.recend + cutting.recstart, len(cutting.recend)
    pos = max(0, at - end_len)  # a record end just before `at` makes a boundary at it
    file.seek(pos)
    carry = b""
    while piece := file.read(PIECE):
        data, data_at = carry + piece, pos - len(carry)
        found = data.find(pattern)
        while found >= 0 and data_at + found + end_len < at:
            found = data.find(pattern, found + 1)
        if found >= 0:
            return data_at + found + end_len
        pos += len(piece)
        keep = len(pattern) - 1
        carry = data[len(data) - keep :] if keep else b""
    return size
