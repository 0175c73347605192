"""`--joblog FILE`: one line per attempt in GNU parallel's joblog layout, so its tools read it.

    Seq  Host  Starttime  JobRuntime  Send  Receive  Exitval  Signal  Command

tab-separated, a header line first. Seq is the anet job id; Starttime is Unix time with
milliseconds; JobRuntime is seconds with milliseconds as the host measured it; Send is always
0 (jobs get no stdin); Receive is the bytes of stdout and stderr. A job killed by a signal has
Exitval 0 and its Signal, as GNU parallel writes it; an attempt lost with its host (no exit at
all) has Exitval -1, Signal 0. Every try appears: retries, speculative copies and their losers.
Line breaks and tabs in a command are written as spaces, so one attempt stays one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import UsageError
from .journal import AttemptRecord

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


@dataclass(frozen=True, slots=True)
class JoblogRow:
    """One line of a joblog, read back."""

    seq: int
    host: str
    start: float
    runtime: float
    send: int
    receive: int
    exitval: int
    signal: int
    command: str


def format_row(record: AttemptRecord, command: bytes) -> str:
    """The joblog line for one attempt."""
    exitval = -1 if record.exit_code is None and record.signal is None else record.exit_code or 0
    text = command.decode("utf-8", "replace").translate(_ONE_LINE)
    return (
        f"{record.job_id}\t{record.host}\t{record.start:.3f}\t{record.runtime:.3f}\t0\t"
        f"{record.bytes_out}\t{exitval}\t{record.signal or 0}\t{text}\n"
    )


_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


class Joblog:
    """An open joblog file; `write` is an `AttemptObserver` for `Cluster.observe_attempts`.

    Lines go through the file's buffer and are flushed every `flush_every` lines and at close:
    a `tail -f` sees progress, and thousands of attempts a second cost few write(2) calls.
    """

    def __init__(self, stream: TextIO, flush_every: int = 256) -> None:
        self._stream = stream
        self._flush_every = flush_every
        self._unflushed = 0
        stream.write(HEADER)
        stream.flush()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Joblog:
        try:
            stream = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close)
        except OSError as exc:
            raise UsageError(f"cannot write joblog {os.fspath(path)}: {exc.strerror}") from None
        return cls(stream)

    def write(self, record: AttemptRecord, command: bytes) -> None:
        self._stream.write(format_row(record, command))
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self._stream.flush()
            self._unflushed = 0

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Joblog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_joblog(path: str | os.PathLike[str]) -> list[JoblogRow]:
    """Every line of a joblog (GNU parallel's or anet's), for tests and tools."""
    rows = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] + "\n" != HEADER:
        raise UsageError(f"{os.fspath(path)} is not a joblog (no Seq/Host/... header)")
    for line in lines[1:]:
        seq, host, start, runtime, send, receive, exitval, signal, command = line.split("\t", 8)
        rows.append(
            JoblogRow(
                int(seq),
                host,
                float(start),
                float(runtime),
                int(send),
                int(receive),
                int(exitval),
                int(signal),
                command,
            )
        )
    return rows
