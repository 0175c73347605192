"""The one record every output format carries: a job's final result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spool import Output, Spool


@dataclass(frozen=True, slots=True, repr=False)
class JobResult:
    """A job's final result, as every output format and the results reader know it.

    `exit_code` and `signal` are exclusive: a job either exited or was killed. `error` explains a
    failure that is not the job's own doing (e.g. no host left to run it); then both are None.

    `stdout` and `stderr` are bytes. An output past spool.SPOOL_AT was spooled to a private
    file while the job ran: then reading `stdout` reads the file whole, at that moment (as
    much memory as the output is big). `out` and `err` give what the result holds, bytes or a
    `Spool` (`size`, `chunks()`): what anet's own writers use, and a program that expects
    outputs of gigabytes should too.
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

    @property
    def out(self) -> Output:
        """stdout as held: bytes, or a Spool for a big output."""
        return _STDOUT_SLOT.__get__(self, JobResult)  # type: ignore[no-any-return]

    @property
    def err(self) -> Output:
        """stderr as held: bytes, or a Spool for a big output."""
        return _STDERR_SLOT.__get__(self, JobResult)  # type: ignore[no-any-return]

    @property
    def spooled(self) -> bool:
        """Some of its output lives in a spool file rather than in memory."""
        return type(self.out) is Spool or type(self.err) is Spool

    @property
    def output_size(self) -> int:
        """stdout and stderr bytes together, without reading a spool."""
        return len(self.out) + len(self.err)

    def __repr__(self) -> str:
        fields = (
            f"id={self.id!r}, ok={self.ok!r}, exit_code={self.exit_code!r},"
            f" signal={self.signal!r}, host={self.host!r}, attempts={self.attempts!r},"
            f" duration={self.duration!r}, stdout={self.out!r}, stderr={self.err!r},"
            f" error={self.error!r}"
        )
        return f"JobResult({fields})"


class _Bytes:
    """The data descriptor behind `stdout`/`stderr`: the slot holds bytes or a Spool; the
    attribute always reads as bytes, so code written for small outputs keeps working."""

    __slots__ = ("_slot",)

    def __init__(self, slot: Any) -> None:
        self._slot = slot

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._slot.__get__(obj, owner)
        return value.read() if type(value) is Spool else value

    def __set__(self, obj: object, value: Output) -> None:
        self._slot.__set__(obj, value)


_STDOUT_SLOT = JobResult.__dict__["stdout"]
_STDERR_SLOT = JobResult.__dict__["stderr"]
JobResult.stdout = _Bytes(_STDOUT_SLOT)  # type: ignore[assignment,method-assign]
JobResult.stderr = _Bytes(_STDERR_SLOT)  # type: ignore[assignment,method-assign]
