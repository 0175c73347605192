"""GNU parallel's input sources: `::: a b`, `:::: file`, `-a file`, linked `:::+`, `--colsep`.

Each source gives a list of arguments: the words after `:::`, or the lines of a file (`-` is
standard input; with `--null` items end at NUL instead, so an argument may hold a newline).
Several sources make their cartesian product, the first one outermost, as GNU parallel does
(`::: a b ::: 1 2` -> a 1, a 2, b 1, b 2); a source after `:::+` or `::::+` is *linked* to the
one before it instead: taken side by side, as long as the shorter lasts. `-a` files come first.
With `--colsep REGEX` each argument is split into columns (each trimmed of white space, as
GNU parallel's --colsep implies --trim rl); the columns of all sources are `{1}`, `{2}`...

The first group of sources is read lazily, as the jobs are needed, so a million-line argument
file costs the jobs in flight; the others (e.g. a parameter list crossed with it) are held in
memory, since the product goes over them again for each argument of the first. `Generated` is
the batch they make with a template: its jobs, and an identity for the journal.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from .batch import STDIN, Job
from .files import FileRules
from .template import Template, TemplateError

MARKERS = {":::": False, ":::+": True, "::::": False, "::::+": True}
"""The words that start an input source (`::::` ones name files), and whether it is linked."""
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Arguments given on the command line (`args`), or the items of a file (`path`)."""

    args: tuple[bytes, ...] | None = None
    path: str | None = None
    linked: bool = False


def parse_sources(words: Sequence[str], arg_files: Sequence[str] = ()) -> list[Source]:
    """The sources of `-a FILE`... then of `words` (which start with a marker, if any)."""
    sources = [Source(path=path) for path in arg_files]
    at = 0
    while at < len(words):
        marker = words[at]
        end = next((i for i in range(at + 1, len(words)) if words[i] in MARKERS), len(words))
        values = words[at + 1 : end]
        if not values:
            raise TemplateError(f"{marker} has nothing after it: give it arguments")
        linked = MARKERS[marker]
        if marker.startswith("::::"):
            sources += [
                Source(path=path, linked=linked and i == 0) for i, path in enumerate(values)
            ]
        else:
            sources.append(Source(args=tuple(map(os.fsencode, values)), linked=linked))
        at = end
    if sources and sources[0].linked:
        raise TemplateError(f"{words[0]} links to a source before it, and there is none")
    return sources


@dataclass(frozen=True, slots=True)
class Inputs:
    """The sources and how to read them: `records()` gives each job's columns."""

    sources: tuple[Source, ...]
    colsep: bytes | None = None
    null: bool = False
    _split: re.Pattern[bytes] | None = field(default=None, compare=False)

    @classmethod
    def make(cls, sources: Sequence[Source], colsep: str | None, null: bool) -> Inputs:
        """Checked early: a bad regex or an unreadable file is one line before any host."""
        split = None
        if colsep is not None:
            try:
                split = re.compile(os.fsencode(colsep))
            except re.error as exc:
                raise TemplateError(
                    f"--colsep {colsep!r} is not a regular expression: {exc}"
                ) from None
        for source in sources:
            if source.path is not None and source.path != STDIN:
                _open(source.path).close()
        if sum(source.path == STDIN for source in sources) > 1:
            raise TemplateError("standard input (-) can be only one input source")
        return cls(tuple(sources), None if colsep is None else os.fsencode(colsep), null, split)

    @property
    def is_stream(self) -> bool:
        """Whether a source is standard input: it can be read only once."""
        return any(source.path == STDIN for source in self.sources)

    def records(self, stdin: BinaryIO) -> Iterator[tuple[bytes, ...]]:
        """Every job's arguments (columns), in GNU parallel's order."""
        groups = _groups(self.sources)
        first = self._group(groups[0], stdin)
        rest = [list(self._group(group, stdin)) for group in groups[1:]]
        for head in first:  # not in product(): it would read the whole first group at once
            for tail in itertools.product(*rest):
                yield self._columns(head + tuple(itertools.chain.from_iterable(tail)))

    def _group(self, group: list[Source], stdin: BinaryIO) -> Iterator[tuple[bytes, ...]]:
        # linked sources last as long as the shortest, as GNU parallel's :::+ do
        return zip(*(self._items(source, stdin) for source in group), strict=False)

    def _items(self, source: Source, stdin: BinaryIO) -> Iterator[bytes]:
        if source.args is not None:
            return iter(source.args)
        assert source.path is not None
        sep = b"\0" if self.null else b"\n"
        if source.path == STDIN:
            return _split_items(stdin, sep)
        return _file_items(source.path, sep)

    def _columns(self, values: tuple[bytes, ...]) -> tuple[bytes, ...]:
        if self._split is None:
            return values
        split = self._split.split
        return tuple(column.strip() for value in values for column in split(value))


def _groups(sources: Sequence[Source]) -> list[list[Source]]:
    """Sources in linked groups: a linked source joins the group of the one before it."""
    groups: list[list[Source]] = []
    for source in sources:
        if source.linked:
            groups[-1].append(source)
        else:
            groups.append([source])
    return groups


def _open(path: str) -> BinaryIO:
    try:
        if os.path.isdir(path):
            raise TemplateError(f"input file {path!r} is a directory")
        return open(path, "rb")
    except OSError as exc:
        raise TemplateError(f"cannot read input file {path!r}: {exc.strerror or exc}") from None


def _file_items(path: str, sep: bytes) -> Iterator[bytes]:
    with _open(path) as stream:
        yield from _split_items(stream, sep)


def _split_items(stream: BinaryIO, sep: bytes) -> Iterator[bytes]:
    """Items ended by `sep` (the last one may lack it), read a piece at a time."""
    pending = b""
    for piece in iter(lambda: stream.read1(READ_SIZE), b""):  # type: ignore[attr-defined]
        *items, pending = (pending + piece).split(sep)
        yield from items
    if pending:
        yield pending


@dataclass(frozen=True, slots=True)
class Generated:
    """The batch a template and its inputs make: job i (from 0) is GNU parallel's job i+1."""

    template: Template
    inputs: Inputs
    text: str
    """The command as typed, for names and messages."""
    files: FileRules = field(default_factory=FileRules)
    """--transfer, --return, --cleanup: each job's files (core/files.py)."""
    per_job: int = 1
    """-N: this many arguments (records) a job, their columns numbered on: {1} {2}..."""

    def tagged(self, stdin: BinaryIO) -> Iterator[tuple[Job, bytes]]:
        """The jobs, generated as they are needed (a command with a newline is still one job),
        each with its tag: its arguments joined by spaces, as GNU parallel's --tag shows them."""
        files = self.files.files if self.files.any else None
        records = self.inputs.records(stdin)
        if self.per_job != 1:
            records = _per_job(records, self.per_job)
        for index, args in enumerate(records):
            command = self.template.expand(args, index + 1)
            job_files = files(args, index + 1) if files is not None else None
            yield Job(index, command, files=job_files), b" ".join(args)

    def jobs(self, stdin: BinaryIO) -> Iterator[Job]:
        return (job for job, _ in self.tagged(stdin))

    def commands(self, stdin: BinaryIO) -> Iterator[bytes]:
        return (job.command for job in self.jobs(stdin))

    def identity(self, stdin: BinaryIO) -> tuple[str, int]:
        """(sha256 of every command, how many): a journal belongs to exactly these commands, so
        `--resume` refuses changed inputs as it refuses a changed batch file. One pass."""
        digest = hashlib.sha256(b"anet generated batch 1\0")
        count = 0
        for command in self.commands(stdin):
            digest.update(len(command).to_bytes(8, "little"))
            digest.update(command)
            count += 1
        return digest.hexdigest(), count


def _per_job(records: Iterator[tuple[bytes, ...]], n: int) -> Iterator[tuple[bytes, ...]]:
    """GNU parallel's -N: `n` records a job, their columns one after another (the last job
    takes what is left); -N0 reads a record a job and gives it none."""
    if n == 0:
        return (() for _ in records)
    return (
        tuple(itertools.chain.from_iterable(chunk))
        for chunk in iter(lambda: tuple(itertools.islice(records, n)), ())
    )


def generate(
    command: Sequence[str],
    sources: Sequence[str],
    arg_files: Iterable[str] = (),
    colsep: str | None = None,
    null: bool = False,
    per_job: int = 1,
    plus: bool = False,
) -> Generated:
    """The batch of GNU parallel's command line: `command` words, then `sources` words."""
    template = Template.parse([os.fsencode(word) for word in command], plus=plus)
    found = parse_sources(sources, list(arg_files))
    if not found:
        raise TemplateError("no input source: give ::: ARGS, :::: FILE or -a FILE")
    inputs = Inputs.make(found, colsep, null)
    return Generated(template, inputs, " ".join(command), per_job=per_job)


class Tags:
    """Each job's tag (GNU parallel's --tag: its arguments) from when the job is made until its
    result is written: the jobs in flight, never the whole batch. The results a resumed run
    writes again (ids in `done`, in id order) get theirs from a second pass, `again()`."""

    def __init__(self, again: Callable[[], Iterator[tuple[Job, bytes]]]) -> None:
        self.done: Container[int] = ()
        """The ids the run skips (set once the plan knows them, before the first job)."""
        self._again = again
        self._cursor: Iterator[tuple[Job, bytes]] | None = None
        self._pending: dict[int, bytes] = {}

    def jobs(self, tagged: Iterable[tuple[Job, bytes]]) -> Iterator[Job]:
        for job, tag in tagged:
            if job.id not in self.done:  # the plan drops it: its earlier result comes again()
                self._pending[job.id] = tag
            yield job

    def peek(self, job_id: int) -> bytes:
        """The tag of a job in flight (--line-buffer prints its lines before its result)."""
        return self._pending.get(job_id, b"")

    def pop(self, job_id: int) -> bytes:
        """The tag of the job whose result is being written (once per result)."""
        tag = self._pending.pop(job_id, None)
        if tag is not None:
            return tag
        if self._cursor is None:
            self._cursor = self._again()
        return next((tag for job, tag in self._cursor if job.id == job_id), b"")
