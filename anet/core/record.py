"""The one record every output format carries: a job's final result."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .spool import Output, Spool


@dataclass(frozen=True, slots=True)
class JobResult:
    """A job's final result, as every output format and the results reader know it.

    `exit_code` and `signal` are exclusive: a job either exited or was killed. `error` explains a
    failure that is not the job's own doing (e.g. no host left to run it); then both are None.

    `stdout` and `stderr` are bytes. An output past spool.SPOOL_AT was spooled to a private
    file while the job ran (the result is then a `SpooledResult`): reading its `stdout` reads
    the file whole, at that moment (as much memory as the output is big). `out` and `err` give
    what the result holds, bytes or a `Spool` (`size`, `chunks()`): what anet's own writers
    use, and what a program that expects outputs of gigabytes should use too.
    """

    id: int
    ok: bool
    exit_code: int | None
    signal: int | None
    host: str
    attempts: int
    duration: float
    stdout: bytes
    stderr: bytes
    error: str | None = None

    spooled: ClassVar[bool] = False
    """Some of its output lives in a spool file (a `SpooledResult`)."""

    @property
    def out(self) -> Output:
        """stdout as held: bytes, or a Spool for a big output (a `SpooledResult`)."""
        return self.stdout

    @property
    def err(self) -> Output:
        """stderr as held: bytes, or a Spool for a big output."""
        return self.stderr

    @property
    def output_size(self) -> int:
        """stdout and stderr bytes together, without reading a spool."""
        return len(self.stdout) + len(self.stderr)


_STDOUT_SLOT: Any = JobResult.__dict__["stdout"]
_STDERR_SLOT: Any = JobResult.__dict__["stderr"]

_RESULT_SETTERS: Any = tuple(JobResult.__dict__[f.name].__set__ for f in fields(JobResult))


def new_result(
    id: int,
    ok: bool,
    exit_code: int | None,
    signal: int | None,
    host: str,
    attempts: int,
    duration: float,
    stdout: bytes,
    stderr: bytes,
    error: str | None = None,
) -> JobResult:
    """`JobResult(...)`, made a job at a time by the engine: a frozen dataclass's `__init__`
    sets each field through `object.__setattr__`, a lookup and a call each; this sets the
    slots directly (about 40% less a result). Same fields, same order (a test holds it to
    the dataclass's)."""
    made = _new(JobResult)
    a, b, c, d, e, f, g, h, i, j = _RESULT_SETTERS
    a(made, id)
    b(made, ok)
    c(made, exit_code)
    d(made, signal)
    e(made, host)
    f(made, attempts)
    g(made, duration)
    h(made, stdout)
    i(made, stderr)
    j(made, error)
    return made


_new = object.__new__


class SpooledResult(JobResult):
    """A result with an output too big for memory: `stdout`/`stderr` read their spool whole
    when asked for (lazily, each time); `out`/`err` give the Spool itself. A subclass, so a
    result held in memory (the common case) pays nothing for this."""

    __slots__ = ()
    spooled: ClassVar[bool] = True

    @property  # type: ignore[override]
    def stdout(self) -> bytes:
        held = _STDOUT_SLOT.__get__(self, JobResult)
        return held.read() if isinstance(held, Spool) else held  # type: ignore[no-any-return]

    @stdout.setter
    def stdout(self, value: Output) -> None:  # dataclass __init__ sets it; frozen after
        _STDOUT_SLOT.__set__(self, value)

    @property  # type: ignore[override]
    def stderr(self) -> bytes:
        held = _STDERR_SLOT.__get__(self, JobResult)
        return held.read() if isinstance(held, Spool) else held  # type: ignore[no-any-return]

    @stderr.setter
    def stderr(self, value: Output) -> None:
        _STDERR_SLOT.__set__(self, value)

    @property
    def out(self) -> Output:
        return _STDOUT_SLOT.__get__(self, JobResult)  # type: ignore[no-any-return]

    @property
    def err(self) -> Output:
        return _STDERR_SLOT.__get__(self, JobResult)  # type: ignore[no-any-return]

    @property
    def output_size(self) -> int:
        return len(self.out) + len(self.err)

    def __eq__(self, other: object) -> bool:
        """Equal to a JobResult with the same fields and output bytes (reads the spools)."""
        if not isinstance(other, JobResult):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = JobResult.__hash__

    def __repr__(self) -> str:
        held = {"stdout": self.out, "stderr": self.err}
        shown = (f"{name}={held.get(name, getattr(self, name))!r}" for name in _FIELDS)
        return f"SpooledResult({', '.join(shown)})"


_FIELDS = [field.name for field in fields(JobResult)]
