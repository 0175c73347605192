"""Where every attempt and every host event goes: the run's journal, and any observers.

The cluster calls this once per ended (or lost) attempt and once per change of a host's life;
the journal's `attempts` table feeds `anet status`/`report`, an observer writes `--joblog`.
Kept apart from api.py so the cluster only says *that* something happened.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from ..core.scheduler import Attempt
from .journal import AttemptRecord, Journal, JournalError

AttemptObserver = Callable[[AttemptRecord, bytes], None]
"""Called with every ended (or lost) attempt and its command: what a joblog needs."""


class AttemptLog:
    """One run's journal (None: the run keeps none, or no longer can) and the observers."""

    def __init__(
        self, journal: Journal | None = None, observers: list[AttemptObserver] | None = None
    ) -> None:
        self.journal = journal
        self.observers = observers if observers is not None else []

    def attempt(
        self,
        attempt: Attempt,
        size: int,
        start: float,
        runtime: float,
        code: int | None,
        signal: int | None,
        excused: bool = False,
    ) -> None:
        """One try of a job: `start` in Unix time, `size` bytes of output; no code and no
        signal means it was lost with its host; `excused`, that it ended through no fault of its
        own (polite mode's kill, the kill of a copy that lost its race, a halt's)."""
        if self.journal is None and not self.observers:
            return
        record = AttemptRecord(
            attempt.job.id, attempt.number, attempt.host, start or time.time() - runtime,
            runtime, code, signal, size, excused,
        )  # fmt: skip
        if self.journal is not None:
            with contextlib.suppress(JournalError):  # the cluster's flusher reports it
                self.journal.record_attempt(record)
        for observer in self.observers:
            observer(record, attempt.job.command)

    def host_event(self, label: str, event: str, detail: str | None) -> None:
        """A host joined (ready), was lost, came back, was unreachable or given up (failed)."""
        if self.journal is not None:
            with contextlib.suppress(JournalError):
                self.journal.record_host_event(time.time(), label, event, detail)
