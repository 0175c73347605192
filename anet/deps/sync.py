"""Deps sync, the master's side: bring one scanned tree to a host over its session.

The exchange (dispatcher/syncproto.py has it frame by frame) costs one small round trip when
the host holds the tree already. Otherwise the manifest goes over, the host answers with the
files it could not take from its earlier trees, and only those travel, in 256 KiB frames
whose sending waits for the SSH window (`send_drained`): a 200 MB file never sits in memory.

Hosts that share one file system (an NFS home) report the same `fsid`. `Syncer` lets the
first of them copy and makes the others wait for that copy, then ask again; if the copying
host fails, the next one takes over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dispatcher.protocol import OUTPUT_CHUNK, Message
from dispatcher.syncproto import (
    ENTRIES_PER_FRAME,
    FILE,
    SMALL_FILE,
    SyncCommit,
    SyncData,
    SyncDelta,
    SyncDone,
    SyncEntries,
    SyncFiles,
    SyncOffer,
    SyncState,
    SyncWant,
    manifest_delta,
)

from ..errors import AnetError, HostError, protocol_error
from ..logs import get_logger
from ..remote.session import HostSession, Request
from .known import recall
from .manifest import Tree

log = get_logger()

REPLY_TIMEOUT = 300.0
"""Seconds for the host to answer a sync step; building a big tree from earlier ones (local
copies on the host's disk) is the slowest step, and it sends no frames while it works."""
DATA_CHUNK = OUTPUT_CHUNK
MANIFEST_BYTES = 512 << 10


@dataclass(frozen=True, slots=True)
class SyncReport:
    """How one host got its tree, for logs and `anet sync`'s table."""

    host: str
    path: bytes
    files_sent: int
    bytes_sent: int
    wire_bytes: int
    reused: int
    seconds: float
    waited_for_shared: bool


Progress = Callable[[str, int], None]
"""Called with (host, file bytes just sent): feeds a progress display."""


M = TypeVar("M", bound=Message)


def _expect(session: HostSession, msg: Message, kind: type[M]) -> M:
    if isinstance(msg, kind):
        return msg
    if isinstance(msg, SyncDone) and msg.error:
        raise HostError(session.label, f"deps sync failed: {msg.error}", permanent=True)
    raise protocol_error(
        session.label, f"deps sync: {type(msg).__name__} instead of {kind.__name__}"
    )


async def offer(session: HostSession, tree: Tree) -> SyncState:
    """Ask whether the host holds the tree (and which file system it keeps trees on)."""
    with session.request() as req:
        session.send(SyncOffer(req.rid, tree.id, len(tree.entries), tree.size))
        return _expect(session, await req.get(REPLY_TIMEOUT), SyncState)


async def transfer(
    session: HostSession, tree: Tree, progress: Progress | None = None, base: bytes = b""
) -> tuple[SyncDone, int, int, int]:
    """Send the manifest (only its difference from tree `base`, when the host offered one
    and this machine scanned it before) and the files the host lacks; (done, files sent,
    bytes, reused)."""
    with session.request() as req:
        entries = tree.entries
        for frame in _manifest_frames(req.rid, tree, base):
            await session.send_drained(frame)
        want = _expect(session, await req.get(REPLY_TIMEOUT), SyncWant)
        if len(want.want) != (len(entries) + 7) // 8:  # one bit per entry, no more, no less
            what = f"SyncWant of {len(want.want)} bytes for {len(entries)} entries"
            raise protocol_error(session.label, what)
        wanted = _wanted(want.want, entries)
        sent = await _send_files(session, req, tree, wanted, progress)
        if not req.has_reply():
            session.send(SyncCommit(req.rid))
        done = _expect(session, await req.get(REPLY_TIMEOUT), SyncDone)
        if done.error:
            raise HostError(session.label, f"deps sync failed: {done.error}", permanent=True)
        return done, len(wanted), sent, want.reused


def _wanted(bits: bytes, entries: list[list[Any]]) -> list[int]:
    """The file entries whose bit is set, looking only at the bytes that are not zero: a
    one-file change sets one bit of 10,000."""
    return [
        i
        for at, byte in enumerate(bits)
        if byte
        for i in range(at << 3, min((at << 3) + 8, len(entries)))
        if byte & (1 << (i & 7)) and entries[i][1] == FILE
    ]


def _manifest_frames(rid: int, tree: Tree, base: bytes) -> Iterator[SyncEntries | SyncDelta]:
    """The manifest whole, or as its difference from `base` when that is smaller."""
    pieces = _delta_pieces(tree, base) if base else None
    if pieces is not None:
        for number, (paths, chunk) in enumerate(pieces, 1):
            yield SyncDelta(rid, tree.id, base, paths, chunk, number == len(pieces))
        return
    chunks = list(_manifest_chunks(tree.entries))
    for number, chunk in enumerate(chunks, 1):
        yield SyncEntries(rid, tree.id, chunk, number == len(chunks))


Pieces = list[tuple[list[bytes], list[list[Any]]]]
_deltas: dict[tuple[bytes, bytes], Pieces | None] = {}
"""The delta of (tree, base), worked out once per run: the hosts of a cluster usually name
one base, and each delta is a pass over both 10,000-entry manifests."""


def _delta_pieces(tree: Tree, base: bytes) -> Pieces | None:
    """(removed paths, changed entries) chunks turning `base` into `tree`, or None when this
    machine does not remember `base` or the delta would not be smaller."""
    key = (tree.id, base)
    if key not in _deltas:
        _deltas.clear()  # one run syncs one tree: only the latest is worth keeping
        _deltas[key] = _work_out_delta(tree, base)
    return _deltas[key]


def _work_out_delta(tree: Tree, base: bytes) -> Pieces | None:
    old = recall(tree.known, base)
    if old is None:
        return None
    removed, changed = manifest_delta(old, tree.entries)
    if len(removed) + len(changed) >= len(tree.entries):
        return None
    gone = _manifest_chunks([[path, 0, 0, 0, 0, b""] for path in removed])
    pieces: Pieces = [([e[0] for e in chunk], []) for chunk in gone if chunk]
    pieces += [([], chunk) for chunk in _manifest_chunks(changed)]  # at least one
    return pieces


def _manifest_chunks(entries: list[list[Any]]) -> Iterator[list[list[Any]]]:
    """Manifest pieces of at most ENTRIES_PER_FRAME entries and MANIFEST_BYTES (paths can be
    4 KiB long: counting entries alone could overflow a frame)."""
    chunk: list[list[Any]] = []
    size = 0
    for entry in entries:
        cost = len(entry[0]) + len(entry[5]) + 48
        if chunk and (len(chunk) == ENTRIES_PER_FRAME or size + cost > MANIFEST_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += cost
    yield chunk  # possibly empty: an empty tree is still a manifest


async def _send_files(
    session: HostSession, req: Request, tree: Tree, wanted: list[int], progress: Progress | None
) -> int:
    """The wanted files in order: small ones whole, gathered into SyncFiles frames of about
    DATA_CHUNK bytes; bigger ones (and one that changed size since the scan, which the host
    then refuses as it should) in SyncData chunks. The bytes sent."""
    batch: list[bytes] = []
    pending = sent = 0

    async def flush() -> None:
        nonlocal pending, sent
        if batch:
            await session.send_drained(SyncFiles(req.rid, len(batch), b"".join(batch)))
            if progress is not None:
                progress(session.label, pending)
            sent += pending
            batch.clear()
            pending = 0

    for index in wanted:
        if req.has_reply():
            return sent  # an early SyncDone: the host failed (disk full); stop sending
        size = tree.entries[index][3]
        if size <= SMALL_FILE:
            with open(tree.local_path(index), "rb") as f:
                data = f.read(size + 1)
            if len(data) == size:
                batch.append(data)
                pending += size
                if pending >= DATA_CHUNK:
                    await flush()
                continue
        await flush()
        sent += await _send_file(session, req, tree, index, progress)
    await flush()
    return sent


async def _send_file(
    session: HostSession, req: Request, tree: Tree, index: int, progress: Progress | None
) -> int:
    offset = 0
    with open(tree.local_path(index), "rb") as f:
        while data := f.read(DATA_CHUNK):
            await session.send_drained(SyncData(req.rid, index, offset, data))
            offset += len(data)
            if progress is not None:
                progress(session.label, len(data))
            if req.has_reply():
                break
    return offset


class Syncer:
    """One tree to many hosts, copying once per file system."""

    def __init__(self, tree: Tree | Awaitable[Tree], progress: Progress | None = None) -> None:
        self._tree = tree
        self._progress = progress
        self._copies: dict[str, asyncio.Future[None]] = {}

    async def sync(self, session: HostSession) -> SyncReport:
        """Make the tree ready on the host and the jobs' working directory; HostError if not.

        A sync the host refused or could not finish (disk full, permission denied) raises a
        permanent HostError: that host gets no jobs. A lost connection is a plain HostError:
        the host comes back later and the sync starts over from what the host holds.
        """
        tree = await self.tree()
        started, wire_start = time.monotonic(), session.bytes_sent
        waited = False
        while True:
            state = await offer(session, tree)
            if state.ready:
                return self._report(session, state.path, 0, 0, 0, started, wire_start, waited)
            copying = self._copies.get(state.fsid)
            if copying is not None and not copying.done():
                waited = True
                await copying  # bounded by the copying host's own reply timeouts
                continue
            copied = self._copies[state.fsid] = asyncio.get_running_loop().create_future()
            try:
                done, files, sent, reused = await transfer(
                    session, tree, self._progress, state.base
                )
            finally:
                copied.set_result(None)
            return self._report(
                session, done.path, files, sent, reused, started, wire_start, waited
            )

    async def prepare(self, session: HostSession, closing: asyncio.Event) -> SyncReport:
        """A host's deps before it gets any job (they run inside): `sync`, said in one line.

        If the scan failed (a missing or unsafe deps path), whoever started it reports that in
        one line and closes the cluster: this host just waits for `closing`, silently.
        """
        try:
            await self.tree()
        except AnetError:
            await closing.wait()
            raise HostError(session.label, "deps could not be scanned", permanent=True) from None
        report = await self.sync(session)
        how = (
            "already there"
            if not report.files_sent
            else f"{report.files_sent} files, {report.bytes_sent} bytes sent"
        )
        log.info(
            f"{session.label}: deps ready in {report.seconds:.2f}s ({how})",
            host=session.label,
            path=report.path.decode(errors="replace"),
            reused=report.reused,
        )
        return report

    async def tree(self) -> Tree:
        """The tree, once scanned: the scan may still run (in a thread) while hosts connect."""
        if not isinstance(self._tree, Tree):
            self._tree = await self._tree  # a future: every host awaits the same scan
        return self._tree

    @staticmethod
    def _report(
        session: HostSession,
        path: bytes,
        files: int,
        sent: int,
        reused: int,
        started: float,
        wire_start: int,
        waited: bool,
    ) -> SyncReport:
        return SyncReport(
            session.label, path, files, sent, session.bytes_sent - wire_start, reused,
            time.monotonic() - started, waited,
        )  # fmt: skip
