"""A journal opened read-only, as `anet status` and `anet report` read it, while a run writes
or after. Apart from journal.py, which writes: this side never migrates and never takes the
run's lock, and journal.py stays the one place that knows the tables' shape."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from ..core.spool import opened
from ..errors import UsageError
from .journal import (
    APPLICATION_ID,
    FILE_ERR,
    IN_CHUNKS,
    Failure,
    JournalError,
    JournalSummary,
    fingerprint_batch,
    kept_path,
    one_line,
    read_summary,
)


class JournalReader:
    """A journal opened read-only, as `anet status` and `anet report` read it.

    It works while a run writes (`mode=ro`, no lock taken: in WAL mode a reader sees every
    committed result and never blocks the writer), after the run, and on a journal an older anet
    wrote, which it reads as it is: tables and columns added since are optional here, since a
    reader must not migrate. Aggregates are computed in SQL or streamed: a journal of millions
    of attempts is never loaded whole. Open it with `JournalReader.open(path)`.
    """

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self.meta: dict[str, str] = dict(db.execute("SELECT key, value FROM meta"))
        """As `Journal.meta`: fingerprint, batch_path, created, anet_version, schema_version,
        job_ids."""
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        self._columns = {row[1] for row in db.execute("PRAGMA table_info(results)")}
        self._has_events = "host_events" in tables
        attempt_columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
        self._failed = (
            "exit_code IS NOT 0 AND NOT excused"
            if "excused" in attempt_columns
            else "exit_code IS NOT 0"  # older than polite mode's excused kills
        )
        """An attempt that failed, in SQL."""
        self._has_chunks = "output_chunks" in tables and "chunked" in self._columns

    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike[str]) -> Iterator[JournalReader]:
        """One-line errors for a missing, foreign or unreadable file, also for a read that
        fails later inside the `with` block."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no journal at {path}")
        uri = path.resolve().as_uri() + "?mode=ro"  # as_uri escapes a `?` or `#` in the path
        try:
            db = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {one_line(exc)}") from None
        with closing(db):
            try:
                if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                    raise UsageError(f"{path} is not an anet journal")
                yield cls(path, db)
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"cannot read journal {path}: {one_line(exc)}") from None

    def owed(self) -> int:
        """Successes committed but never delivered: what `--resume --only-new` would write (an
        older journal without delivery marks owes none)."""
        if "delivered" not in self._columns:
            return 0
        return self._db.execute(
            "SELECT count(*) FROM results WHERE ok AND NOT delivered"
        ).fetchone()[0]

    def batch_unchanged(self) -> str | None:
        """The batch file's path if it is still there with the bytes the journal was made for."""
        batch = self.meta.get("batch_path")
        if not batch or not os.path.isfile(batch):
            return None
        try:
            return batch if fingerprint_batch(batch) == self.meta.get("fingerprint") else None
        except UsageError:
            return None

    def summary(self) -> JournalSummary:
        """How many jobs have a final result, by outcome."""
        return read_summary(self._db)

    def attempt_span(self) -> tuple[int, float | None, float | None]:
        """Attempts logged, the first one's start and the last one's end (Unix time)."""
        query = "SELECT count(*), min(start), max(start + runtime) FROM attempts"
        count, first, last = self._db.execute(query).fetchone()
        return count, first, last

    def results_by_host(self) -> Iterator[tuple[str, int, int]]:
        """(host, final results it gave, how many of them failed)."""
        query = "SELECT host, count(*), count(*) - total(ok) FROM results GROUP BY host"
        return ((host, done, int(failed)) for host, done, failed in self._db.execute(query))

    def attempts_by_host(
        self,
    ) -> Iterator[tuple[str, int, int, float, float | None, float | None]]:
        """(host, attempts, failed attempts, summed run time, first start, last end), by host."""
        query = (
            f"SELECT host, count(*), total({self._failed}), total(runtime), min(start),"
            " max(start + runtime) FROM attempts GROUP BY host ORDER BY host"
        )
        for host, attempts, failed, busy, first, last in self._db.execute(query):
            yield host, attempts, int(failed), busy, first, last

    def failures(self, limit: int, tail: int = 400) -> Iterator[Failure]:
        """The first `limit` failed jobs by id, with the last `tail` bytes of their stderr (a
        chunked one read from its chunks)."""
        chunked = "chunked" if self._has_chunks else "0"
        query = (
            f"SELECT id, host, duration, error, substr(stderr, -?), exit_code, signal, {chunked}"
            " FROM results WHERE NOT ok ORDER BY id LIMIT ?"
        )
        for *row, where in self._db.execute(query, (tail, limit)).fetchall():
            failure = Failure(*row)
            if where == IN_CHUNKS:
                failure = failure._replace(stderr=self._stderr_tail(failure.id, tail))
            elif where & FILE_ERR:
                failure = failure._replace(stderr=self._kept_tail(failure.id, tail))
            yield failure

    def _kept_tail(self, job_id: int, tail: int) -> bytes:
        """The last `tail` bytes of a stderr kept as a file (empty if the file is gone)."""
        try:
            spool = opened(kept_path(self.path, job_id, FILE_ERR))
        except OSError:
            return b""
        try:
            return spool.tail(tail)
        finally:
            spool.close()

    def _stderr_tail(self, job_id: int, tail: int) -> bytes:
        """The last `tail` bytes of a chunked stderr, from the fewest last chunks that hold them."""
        parts: list[bytes] = []
        query = (
            "SELECT substr(data, -?) FROM output_chunks WHERE id = ? AND stream = 2"
            " ORDER BY seq DESC"
        )
        for (data,) in self._db.execute(query, (tail, job_id)):
            parts.append(data)
            if sum(map(len, parts)) >= tail:
                break
        return b"".join(reversed(parts))[-tail:]

    def slowest_successes(self, limit: int) -> list[tuple[int, str, float]]:
        """(job id, host, run time) of the `limit` longest successful attempts."""
        query = (
            "SELECT job_id, host, runtime FROM attempts WHERE exit_code = 0"
            " ORDER BY runtime DESC LIMIT ?"
        )
        return self._db.execute(query, (limit,)).fetchall()

    def host_events(self) -> list[tuple[float, str, str, str | None]]:
        """(time, host, event, detail) of every host's change of state, in time order."""
        if not self._has_events:  # a journal from before host events were kept
            return []
        return self._db.execute("SELECT * FROM host_events ORDER BY time").fetchall()

    def successes_per_column(self, start: float, width: float) -> Iterator[tuple[str, int, int]]:
        """(host, column, successful attempts that ended in it): columns `width` seconds wide
        from `start` (Unix time); the column may be out of range for an odd clock."""
        query = (
            "SELECT host, CAST((start + runtime - ?) / ? AS INTEGER) AS b, count(*) FROM attempts"
            " WHERE exit_code = 0 GROUP BY host, b"
        )
        return iter(self._db.execute(query, (start, width)))

    def success_runtimes(self) -> Iterator[float]:
        """Run times of the successful attempts that took any time, streamed."""
        query = "SELECT runtime FROM attempts WHERE exit_code = 0 AND runtime > 0"
        return (runtime for (runtime,) in self._db.execute(query))

    def success_runtime_range(self) -> tuple[float | None, float | None]:
        """Shortest and longest of `success_runtimes()`, or (None, None)."""
        query = (
            "SELECT min(runtime), max(runtime) FROM attempts WHERE exit_code = 0 AND runtime > 0"
        )
        low, high = self._db.execute(query).fetchone()
        return low, high
