"""A batch run as `anet run` does it, for any program: resume, only-new, halt, keep-order.

`Cluster.run(commands, RunOptions(...))` (or a `RunPlan` made first, to know before any host
is touched whether anything is left to run) is the whole use-case; the CLI only turns argv into
options and results into bytes. What a run adds to "run these jobs" lives here:
- with a journal and `resume`, the jobs that succeeded earlier are skipped and their results
  yielded again first (all of them; with `only_new`, only those the earlier run committed but
  never delivered), so a resumed stream is complete on its own, or exactly what was owed;
- `halt` stops the run after too many failures: `now` kills what runs, `soon` starts no more;
- `keep_order` yields results in job order, holding the early ones in bounded memory (spilled
  to the journal, or a temporary file);
- a result counts as delivered once the consumer asks for the next one (or, with
  `mark_delivered=False`, when the consumer says so: the CLI marks a result once the kernel has
  its bytes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .core.batch import Job
from .core.engine import RunPolicy
from .core.halt import Halt, HaltPolicy
from .core.record import JobResult
from .logs import get_logger
from .streams.attemptlog import AttemptObserver
from .streams.journal import IdSet, Journal
from .streams.keeporder import FileSpill, JournalSpill, KeepOrder, Spill

if TYPE_CHECKING:
    from .deps.manifest import Tree

log = get_logger()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How `Cluster.run` treats a batch, beyond running each job once.

    `batch_size` is the number of jobs, for a halt percentage (None: not known, e.g. a stream).
    `arrived` is called with each result of this run as it arrives, before any reordering (for
    progress counts and a results folder); when it returns an awaitable (a copy made in a
    thread), the result goes on once that is done, and the loop runs meanwhile.
    """

    journal: Journal | None = None
    journal_required: bool = False
    resume: bool = False
    only_new: bool = False
    halt: HaltPolicy = field(default_factory=HaltPolicy)
    batch_size: int | None = None
    keep_order: bool = False
    mark_delivered: bool = True
    arrived: Callable[[JobResult], Awaitable[None] | None] | None = None
    policy: RunPolicy | None = None
    """How hard this run tries (retries, timeout, speculation); the cluster's when None: runs
    sharing a cluster (a pool's) each have their own."""
    attempts: AttemptObserver | None = None
    """Called with each ended attempt of this run only (a pool's run's --joblog), besides the
    cluster's observers, which see every run's."""
    priority: int = 1
    """This run's weight when runs share the cluster's slots (shares.py): twice the priority,
    twice the share."""
    deps: Tree | Awaitable[Tree] | None = None
    """This run's own deps tree (a pool's run with DEPS; deps/runtree.py): synced to each host
    for this run, its jobs run inside it, whatever the other runs sync meanwhile; an awaitable
    is a scan still under way (its DepsError fails the run)."""


class RunPlan:
    """One run's use-case state: what is skipped, what is owed, the order, the failures."""

    def __init__(self, jobs: Iterable[Job], options: RunOptions) -> None:
        self.options = options
        journal = options.journal
        if options.resume and journal is None:
            raise ValueError("resume needs a journal")
        self.done = journal.succeeded_ids() if journal is not None and options.resume else IdSet()
        self.failed = 0
        self._halted: Halt | None = None
        self._order: KeepOrder | None = None
        if options.keep_order:
            spill: Spill = JournalSpill(journal) if journal is not None else FileSpill()
            self._order = KeepOrder(spill)
            self._order.merge_earlier(self.earlier())
        done = self.done
        todo = (job for job in jobs if job.id not in done) if done else iter(jobs)
        self.jobs: Iterator[Job] = self._order.jobs(todo) if self._order is not None else todo

    def earlier(self) -> Iterator[JobResult]:
        """The earlier run's results to yield again. Read lazily (with keep-order, as the run
        goes), so filtered by `done`: this run's own results join the journal meanwhile."""
        journal, options = self.options.journal, self.options
        if journal is None or not options.resume:
            return iter(())
        owed = journal.succeeded_results(undelivered=options.only_new)
        return (r for r in owed if r.id in self.done)

    @property
    def plain(self) -> bool:
        """No `arrived` hook and no order to keep: each result leaves as it arrives (what
        `arrive` would give), only counted."""
        return self.options.arrived is None and self._order is None

    async def arrive(self, result: JobResult) -> Iterator[JobResult]:
        """`ordered`, once `arrived` has seen the result (and, when it returned an awaitable,
        once that is done: a results folder is whole before its result leaves)."""
        if self.options.arrived is not None:
            pending = self.options.arrived(result)
            if pending is not None:
                await pending
        return self.ordered(result)

    def ordered(self, result: JobResult) -> Iterator[JobResult]:
        """What may leave now that `result` arrived: itself, or with keep-order maybe none, or
        several. Counts the failure (`arrive` calls `arrived` first)."""
        self.failed += not result.ok
        if self._order is None:
            return iter((result,))
        return self._order.add(result)

    def halt(self) -> Halt | None:
        """Whether this result's failure count calls for a halt, once per kind (NOW after SOON
        is still news); the warning is said here."""
        halt = self.options.halt.check(self.failed, self.options.batch_size)
        if halt is None or halt is self._halted or self._halted is Halt.NOW:
            return None
        self._halted = halt
        failed = "1 job" if self.failed == 1 else f"{self.failed} jobs"
        if halt is Halt.NOW:
            log.warning(f"halting now: {failed} failed; running jobs are killed")
        else:
            log.warning(f"halting soon: {failed} failed; jobs not started yet never start")
        return halt

    @property
    def halted(self) -> bool:
        """Whether --halt stopped the run (now or soon) before the batch was done."""
        return self._halted is not None

    def rest(self) -> Iterator[JobResult]:
        """With keep-order, what still waits once the run ended (or halted), in order."""
        return self._order.rest() if self._order is not None else iter(())

    def close(self) -> None:
        if self._order is not None:
            self._order.close()
