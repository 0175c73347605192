"""`-k/--keep-order`: results leave in job-id order, whatever order the jobs finish in.

A result that must wait for an earlier job is held in memory only up to a bound (`max_held`
results, `max_bytes` of output); past it, only its id is kept and the result itself is read back
when its turn comes: from the journal, which already holds every final result (`JournalSpill`),
or, with --no-journal, from an unlinked temporary file (`FileSpill`). One job that runs for an
hour while a million others finish thus costs a set of ids, not a million outputs (invariant 4).

A result whose output was spooled waits in its spool files, never copied into a spill; but each
holds a descriptor per stream, and thousands waiting would pass the process's limit. Past
MAX_OPEN_SPOOLED of them, the next are parked (`spool.Parking`: copied, in the kernel, into one
shared file), those up to PARK_MAX bytes: the descriptors are bounded by MAX_OPEN_SPOOLED, one
per PARK_FILE parked, and one per result past PARK_MAX waiting (a copy of those would stall
the loop for seconds; there cannot be many).

With --resume, the results of the earlier run (`merge_earlier`, ascending ids) are merged in, so the
whole stream is in id order.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import astuple
from itertools import islice, takewhile
from typing import Protocol

import msgpack

from ..core.batch import Job
from ..core.readahead import NOT_YET
from ..core.record import JobResult, SpooledResult
from ..core.spool import Output, Parking, Spool
from .journal import Journal

MAX_HELD = 1024
MAX_HELD_BYTES = 16 << 20
TAKE_CHUNK = 256
"""Spilled results read back per pass over the store: bounds what one read holds."""
MAX_OPEN_SPOOLED = 32
"""Waiting spooled results that keep their own spool files; the next ones are parked."""
PARK_MAX = 64 << 20
"""The biggest output (both streams) parked: copying more would hold the loop too long."""


class Spill(Protocol):
    """Where results wait once too many wait in memory."""

    def put(self, result: JobResult) -> None: ...

    def take(self, ids: list[int]) -> Iterator[JobResult]:
        """The results of `ids` (ascending, all put before), in that order."""
        ...

    def close(self) -> None: ...


class JournalSpill:
    """The journal already has every final result: putting costs nothing."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def put(self, result: JobResult) -> None:
        pass

    def take(self, ids: list[int]) -> Iterator[JobResult]:
        wanted = set(ids)
        for result in self._journal.results_from(ids[0]):
            if result.id in wanted:
                yield result
                wanted.discard(result.id)
                if not wanted:
                    return
        if wanted:
            raise RuntimeError(f"results of jobs {sorted(wanted)[:5]} are missing from the journal")

    def close(self) -> None:
        pass


class FileSpill:
    """An unlinked temporary file of msgpack records, emptied whenever nothing waits in it."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close)
        self._index: dict[int, tuple[int, int]] = {}  # id -> (offset, length)
        self._end = 0

    def put(self, result: JobResult) -> None:
        data = msgpack.packb(astuple(result), use_bin_type=True)
        self._file.seek(self._end)
        self._file.write(data)
        self._index[result.id] = (self._end, len(data))
        self._end += len(data)

    def take(self, ids: list[int]) -> Iterator[JobResult]:
        self._file.flush()
        for job_id in ids:
            offset, length = self._index.pop(job_id)
            fields = msgpack.unpackb(os.pread(self._file.fileno(), length, offset), raw=False)
            yield JobResult(*fields)
        if not self._index:  # nothing waits: give the disk space back
            self._file.truncate(0)
            self._end = 0

    def close(self) -> None:
        self._file.close()


class KeepOrder:
    """Reorders results into the order their jobs were issued (`expect`), in bounded memory.

    `jobs()` wraps the job iterator given to the cluster, noting each id as the scheduler pulls
    it; `add(result)` returns the results now ready to go out, to be consumed before the next
    call (a generator: nothing happens until it is iterated); `rest()` gives everything still
    waiting (after a --halt), in order.
    """

    def __init__(
        self,
        spill: Spill,
        *,
        max_held: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        # The module's bounds as they are now, not when this was defined: a test sets a small
        # MAX_HELD to drive a whole run through the spill.
        max_held = MAX_HELD if max_held is None else max_held
        max_bytes = MAX_HELD_BYTES if max_bytes is None else max_bytes
        self._spill = spill
        self._expected: deque[int] = deque()
        self._held: dict[int, JobResult] = {}
        self._held_bytes = 0
        self._open: set[int] = set()  # held spooled results that keep their own files
        self._parking: Parking | None = None
        self._spilled: set[int] = set()
        self._earlier: Iterator[JobResult] = iter(())
        self._next_earlier: JobResult | None = None
        self._max_held, self._max_bytes = max_held, max_bytes

    def merge_earlier(self, earlier: Iterable[JobResult]) -> None:
        """Results of an earlier run (ascending ids, read lazily) to merge into the order."""
        self._earlier = iter(earlier)
        self._next_earlier = next(self._earlier, None)

    def jobs(self, jobs: Iterable[Job]) -> Iterator[Job]:
        for job in jobs:
            if job is not NOT_YET:  # a stream's next job, not arrived yet: nothing to expect
                self._expected.append(job.id)
            yield job

    @property
    def held(self) -> int:
        """Results waiting in memory (the tests' measure of the bound)."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """Results waiting, in memory or spilled."""
        return len(self._held) + len(self._spilled)

    def add(self, result: JobResult) -> Iterator[JobResult]:
        size = _held_size(result)
        if self._expected and self._expected[0] == result.id:
            self._expected.popleft()
            yield from self._earlier_before(result.id)
            yield result
            yield from self._release()
            return
        if result.spooled:  # waits in its spool files: never copied into a spill
            self._held[result.id] = self._hold_spooled(result)
        elif len(self._held) < self._max_held and self._held_bytes + size <= self._max_bytes:
            self._held[result.id] = result
            self._held_bytes += size
        else:
            self._spill.put(result)
            self._spilled.add(result.id)

    def _release(self) -> Iterator[JobResult]:
        """Whatever now heads the expected order, from memory or from the spill."""
        expected = self._expected
        while expected:
            head = expected[0]
            if head in self._held:
                result = self._held.pop(head)
                self._held_bytes -= _held_size(result)
                self._open.discard(head)
                expected.popleft()
                yield from self._earlier_before(head)
                yield result
            elif head in self._spilled:
                spilled = self._spilled.__contains__
                run = list(islice(takewhile(spilled, expected), TAKE_CHUNK))
                for result in self._spill.take(run):
                    self._spilled.discard(result.id)
                    expected.popleft()
                    yield from self._earlier_before(result.id)
                    yield result
            else:
                return

    def _hold_spooled(self, result: JobResult) -> JobResult:
        """The result as it waits: as is while few wait so, else parked when not too big."""
        if len(self._open) < MAX_OPEN_SPOOLED or result.output_size > PARK_MAX:
            self._open.add(result.id)
            return result
        try:
            out, err = self._park(result.out), self._park(result.err)
        except OSError:  # e.g. a full disk: it waits as it came, holding its files
            self._open.add(result.id)
            return result
        for output in (result.out, result.err):
            if isinstance(output, Spool):
                output.close()  # its copy is parked: the descriptor goes now
        return _with_outputs(result, out, err)

    def _park(self, output: Output) -> Output:
        if not isinstance(output, Spool):
            return output
        if self._parking is None:
            self._parking = Parking()
        return self._parking.park(output)

    def _earlier_before(self, job_id: int) -> Iterator[JobResult]:
        while self._next_earlier is not None and self._next_earlier.id < job_id:
            yield self._next_earlier
            self._next_earlier = next(self._earlier, None)

    def rest(self) -> Iterator[JobResult]:
        """Everything still waiting, in issue order, skipping jobs that never ended, then the
        rest of the earlier run's results."""
        while self._expected:
            head = self._expected[0]
            if head in self._held or head in self._spilled:
                yield from self._release()
            else:
                self._expected.popleft()
        while self._next_earlier is not None:
            yield self._next_earlier
            self._next_earlier = next(self._earlier, None)

    def close(self) -> None:
        self._spill.close()
        self._parking = None  # its shared file goes with the last result read from it


def _with_outputs(result: JobResult, out: Output, err: Output) -> SpooledResult:
    """The result with other outputs (dataclasses.replace would read the spools whole)."""
    return SpooledResult(
        result.id, result.ok, result.exit_code, result.signal, result.host, result.attempts,
        result.duration, out, err, result.error,  # type: ignore[arg-type]
    )  # fmt: skip


def _held_size(result: JobResult) -> int:
    """Output bytes the result holds in memory (none for a spooled one)."""
    return 0 if result.spooled else result.output_size
