"""The one record every output format carries: a job's final result."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobResult:
    """A job's final result, as every output format and the results reader know it.

    `exit_code` and `signal` are exclusive: a job either exited or was killed. `error` explains a
    failure that is not the job's own doing (e.g. no host left to run it); then both are None.
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
