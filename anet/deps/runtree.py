"""A run's own deps tree on a cluster that runs several batches at once (a pool's run).

A standalone run syncs its deps as each host boots (`Cluster(deps=...)`), and its jobs run in
the tree of that sync. A pool's cluster is shared: each run brings its own tree, so each run's
tree is synced to every ready host once the run starts (and again to a host that comes back),
held there for that run alone (`Pin` before the sync, `Unpin` when the run has ended:
dispatcher/pins.py), and its jobs are sent after a `Within(tree)` frame. The run gets its share
of a host only once its tree is held there (`ready`); a host whose sync failed for good stays
the other runs' (one line in the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from dispatcher.pins import Pin, Unpin
from dispatcher.protocol import Hello

from ..errors import AnetError
from ..logs import get_logger
from ..remote.session import HostSession
from .manifest import Tree
from .sync import Syncer

log = get_logger()


class RunTree:
    """One run's tree on the cluster's hosts: where it is held, where it failed."""

    def __init__(
        self,
        tree: Tree,
        tasks: asyncio.TaskGroup,
        ready: Callable[[str], None],
        failed: Callable[[str, str], None],
        turns: dict[str, asyncio.Lock],
    ) -> None:
        self.tree = tree
        self._syncer = Syncer(tree)
        self._tasks = tasks
        self._turns = turns
        """One sync at a time on each host, the cluster's runs taking turns: a dispatcher's
        store plans one sync from one base tree at a time (a second offer would take the
        first one's base away)."""
        self._ready = ready
        self._failed = failed
        self.ready: set[str] = set()
        """Hosts whose dispatcher holds the tree now: the run may send jobs there."""
        self.failed: dict[str, str] = {}
        """Hosts whose sync failed for good (a full disk, a refusal), with why."""
        self._pinned: dict[str, Hello] = {}
        """Hosts sent a Pin, by the Hello of the dispatcher that got it: an Unpin goes only
        to that dispatcher (a new one holds nothing)."""
        self._syncing: dict[str, asyncio.Task[None]] = {}

    @property
    def id(self) -> bytes:
        return self.tree.id

    def bring(self, session: HostSession) -> None:
        """Hold and sync the tree on the host's dispatcher (ready, serving), in a task."""
        label = session.label
        if label in self.failed or session.hello is None:
            return
        self.lost(label)  # an earlier dispatcher's state, if any
        self._syncing[label] = self._tasks.create_task(self._sync(session, session.hello))

    async def _sync(self, session: HostSession, hello: Hello) -> None:
        label = session.label
        try:
            async with self._turns.setdefault(label, asyncio.Lock()):
                if session.hello is not hello:
                    return  # that dispatcher went while the others synced: lost
                session.send(Pin(self.id))
                self._pinned[label] = hello
                await self._syncer.sync(session)
        except (AnetError, OSError) as exc:
            if session.hello is hello and not session.closing:  # else lost: it syncs again
                reason = getattr(exc, "reason", None) or str(exc)
                self.failed[label] = reason
                log.warning(f"{label}: {reason}: this run's jobs go to the other hosts")
                self._failed(label, reason)
            return
        finally:
            if self._syncing.get(label) is asyncio.current_task():
                del self._syncing[label]
        if session.hello is hello:
            self.ready.add(label)
            self._ready(label)

    def lost(self, label: str) -> None:
        """The host's dispatcher is gone: what it held went with it."""
        self.ready.discard(label)
        self._pinned.pop(label, None)
        task = self._syncing.pop(label, None)
        if task is not None:
            task.cancel()

    def release(self, sessions: Mapping[str, HostSession]) -> None:
        """The run has ended: each dispatcher that holds the tree for it lets it go (once its
        last job there has ended); syncs still under way stop."""
        for task in self._syncing.values():
            task.cancel()
        self._syncing.clear()
        for label, hello in self._pinned.items():
            session = sessions.get(label)
            if session is not None and session.hello is hello:
                session.send(Unpin(self.id))
        self._pinned.clear()
        self.ready.clear()
