"""The end machine's side of deps sync: a store of complete, content-addressed trees.

Layout, under `$ANET_HOME/deps/` (0700):

    fsid                 random id of this file system, made once by whichever host comes first
    trees/<id>/          a complete tree, named by its manifest digest; never modified here
    trees/<id>.manifest  its manifest (encode_manifest: the id is its SHA-256), present before
                         the tree dir is renamed in
    trees/<id>.jobs      one byte while the tree was checked and no job ran in it since
                         (treeclean.py): a no-op sync then touches none of its files
    staging/<id>.<host>.<pid>.<rand>/   a tree being built
    trash/               trees being deleted

Why this shape:
- **Atomic switch.** A tree is built in staging and renamed into `trees/` only once every file
  was received and its SHA-256 checked, so no job ever sees a half-synced folder, and an
  interrupted sync leaves the earlier trees as they were.
- **Concurrent runs cannot corrupt each other.** Different deps are different tree ids, hence
  different directories; two runs syncing the same tree both build a complete copy and the
  second rename finds the first one in place and keeps it.
- **Delta.** A new tree takes every file it can from earlier trees (a hard link when content,
  mode and mtime all match, a local copy when only the content does); only the rest travels.
  Reused files are checked against their tree's manifest (size, mtime) first, so a file a job
  modified in place is sent again rather than trusted. A reused file is reached one folder at
  a time with O_NOFOLLOW: jobs run inside these trees, and one that swapped a folder for a
  symlink to look-alike files must not pass them off as the master's; a copy is also checked
  against its digest, since its bytes are read anyway.
- **Shared file systems.** `fsid` lets the master see which hosts share one store (an NFS
  home): it syncs there once and the other hosts find the tree ready.

Every path comes from the master and is checked by `syncproto.check_entry` before use; files
are created with O_EXCL|O_NOFOLLOW inside a staging directory made here, so whatever the
master sends, nothing is written outside the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time

import msgpack

from .pins import Pin, Pins, Unpin
from .protocol import Message
from .syncproto import (
    DIR,
    FILE,
    LINK,
    EntryError,
    SyncCommit,
    SyncData,
    SyncDelta,
    SyncDone,
    SyncEntries,
    SyncFiles,
    SyncOffer,
    SyncState,
    SyncWant,
    apply_delta,
    check_delta,
    check_entry,
    check_manifest,
    decode_manifest,
    encode_manifest,
    show_path,
)
from .treeclean import checking, hold_for_jobs, is_clean, mark_clean
from .treedelta import Touched, clear, merge, set_folders, splice
from .treeupdate import BaseTree, clear_changes

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing (and re) is 2.6 ms of a boot
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

KEEP_TREES = 3
"""Complete trees kept besides those in use: the bases of the next delta."""
BASE_TREES = 2
"""Earlier trees searched for reusable files: the newest holds nearly everything, and each
one searched costs loading its whole manifest."""
STALE_STAGING = 24 * 3600.0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
COPY_CHUNK = 1 << 20
IN_PLACE_LOST = 64
"""The base tree is updated in place only if it loses at most this many files (or 1%): an
edit, not a switch to other deps; switching back to a tree kept whole costs nothing."""
SEARCH_BYTES = 1 << 20
"""Earlier trees are searched for the content of files still missing only when these add up
to more than this: reading their manifests costs more than sending a few small files."""
TICK_EVERY = 512
"""Entries handled between two looks at the clock (for keepalives): a clock read per entry
cost a sixth of a no-op check."""
ORIGINAL_LAYOUT = b"dependencies"
"""The original ANet ran jobs in ~/anet with the deps in ~/anet/dependencies/, so its batches
say `python3 dependencies/prog.py`; jobs here run inside the tree. A symlink of this name to
`.` in each tree serves both: `prog.py` and `dependencies/prog.py` are one file. It is not in
the manifest, so no check or reuse ever looks at it; a deps entry of the same name wins."""


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full on the host"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded on the host"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied on the host: %s" % (exc.filename or exc)
    return "sync failed on the host: %s" % exc


class SyncFailed(Exception):
    """Ends one sync with a one-line reason for the master."""


def _stat_matches(st: os.stat_result, entry: List[Any]) -> bool:
    """Does a file on disk still look like its manifest entry (content unchanged, presumably)?"""
    _, kind, mode, size, mtime_ns, _ = entry
    if kind == FILE:
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_size == size
            and st.st_mtime_ns == mtime_ns
            and stat.S_IMODE(st.st_mode) == mode
        )
    if kind == DIR:
        return stat.S_ISDIR(st.st_mode)
    return stat.S_ISLNK(st.st_mode)


def _open_beneath(base: bytes, path: bytes) -> Tuple[int, int]:
    """Open `base/path` for reading, one component at a time, following no symlink (not even
    `base` itself): (fd of its folder, fd of the file). A job may have replaced any folder of an
    old tree by a symlink to look-alike files; OSError (ELOOP, ENOTDIR) then."""
    parts = path.split(b"/")
    folder = os.open(base.rstrip(b"/"), _DIR_FLAGS)  # a trailing slash would follow a symlink
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = inner
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us
        return folder, os.open(parts[-1], flags, dir_fd=folder)
    except OSError:
        os.close(folder)
        raise


def _link(folder: int, name: bytes, st: os.stat_result, target: bytes) -> bool:
    """Hard-link the file opened as `st` into the new tree; False if that cannot be done."""
    try:
        os.link(name, target, src_dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False  # another file system, or too many links: copy instead
    linked = os.lstat(target)
    if (linked.st_dev, linked.st_ino) == (st.st_dev, st.st_ino):
        return True
    os.unlink(target)  # the name was swapped since we opened it
    return False


def _legacy_manifest(data: bytes) -> Optional[List[List[Any]]]:
    """A manifest stored by an anet before the canonical form (msgpack; the tree id was its
    SHA-256 too): read as a base after an upgrade, so the first re-sync builds on the trees
    the host holds instead of sending every file again. The master never offers such an id."""
    try:
        entries = msgpack.unpackb(data, raw=False)
        if not isinstance(entries, list):
            return None
        check_manifest(entries)
    except (ValueError, TypeError, EntryError, msgpack.UnpackException):
        return None
    return entries


def _link_original_layout(tree_dir: bytes) -> None:
    """`dependencies -> .` in the tree jobs run in (see ORIGINAL_LAYOUT), made at each use so
    trees built before it existed get it too."""
    with contextlib.suppress(OSError):  # there already, the user's own, or a tree we cannot
        os.symlink(b".", os.path.join(tree_dir, ORIGINAL_LAYOUT))  # write: jobs still run


def _host_name() -> bytes:
    """This machine's name, as socket.gethostname() gives it on Linux (uname's nodename),
    without importing socket: 15 ms of a busy host's CPU at every sync's first frame."""
    return os.uname().nodename.encode("ascii", "replace")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Incoming:
    """One tree being built in staging: its manifest, what is wanted, the file being written."""

    def __init__(self, rid: int, tree: bytes) -> None:
        self.rid = rid
        self.tree = tree
        self.entries: List[List[Any]] = []
        self.dirs: Set[bytes] = set()
        self.removed: List[Any] = []
        self.changed: List[Any] = []
        self.encoded = b""
        self.overlay = b""
        """Where new files gather while the base tree is updated (see _plan_overlay)."""
        self.kept: Set[bytes] = set()
        """Files of the base tree that the new tree keeps in place."""
        self.lost = 0
        """Files of the base tree that the new tree does not keep."""
        self.base_files = 0
        """Files of the base tree."""
        self.touched: Optional[Touched] = None
        """A small delta to a clean base (treedelta.py): only these names need work, and
        `kept` is left empty unless the general path needs it."""
        self.updated = False
        """The base became the tree by its touched names alone: links and folders are set."""
        self.trusted = False
        """The base tree was clean (treeclean.py): its files were not looked at."""
        self.staging = b""
        self.wanted: List[int] = []
        self.next_want = 0
        self.fd: Optional[int] = None
        self.index = -1
        self.written = 0
        self.hasher: Any = None

    def target(self, index: int) -> bytes:
        """Where file entry `index` is written: its place in the tree, or in the overlay."""
        if self.overlay:
            return b"%s/%d" % (self.overlay, index)
        return os.path.join(self.staging, self.entries[index][0])


class SyncStore:
    """Handles the Sync* requests for one dispatcher; `job_cwd` is the tree jobs run in."""

    def __init__(self, home: str, send: Callable[[Message], None]) -> None:
        self.root = os.path.join(os.fsencode(home), b"deps")
        self.send = send
        self.job_cwd: Optional[bytes] = None
        self._lock_fd: Optional[int] = None
        self._jobs_fd: Optional[int] = None
        """Held (treeclean.hold_for_jobs) once a job was started in `job_cwd`."""
        self.pins = Pins()
        """Trees held for the master's runs, each run's own (pins.py); `job_cwd` is none of
        them."""
        self._incoming: Dict[int, Incoming] = {}
        self._base: Optional[Tuple[bytes, List[List[Any]], int]] = None
        """The tree named as `base` in the last SyncState: (id, manifest, fd of its shared
        lock, which keeps other runs' GC off it until this sync ends)."""
        self._base_data: Optional[bytes] = None
        self._base_bytes: Optional[Tuple[bytes, List[int]]] = None
        """The base's canonical bytes and where each entry starts in them: a small delta's
        manifest is these bytes with the touched entries cut out or put in."""
        self._failed: Set[int] = set()
        self._cleaned = False
        self.keepalive: Callable[[], None] = lambda: None
        """Set by the dispatcher: sends a heartbeat now. Building a big tree from local
        copies can take longer than the master's patience for a silent host."""
        self._last_tick = time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick > 1.0:
            self._last_tick = now
            self.keepalive()

    def register(self, handlers: Dict[type, Callable[[Any], None]]) -> None:
        handlers[SyncOffer] = self._guarded(self.on_offer)
        handlers[SyncEntries] = self._guarded(self.on_entries)
        handlers[SyncDelta] = self._guarded(self.on_delta)
        handlers[SyncData] = self._guarded(self.on_data)
        handlers[SyncFiles] = self._guarded(self.on_files)
        handlers[SyncCommit] = self._guarded(self.on_commit)
        handlers[Pin] = lambda msg: self.pins.pin(msg.tree)
        handlers[Unpin] = lambda msg: self.pins.unpin(msg.tree)

    def _guarded(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """Turn any failure of one sync into its SyncDone(error); the dispatcher goes on."""

        def handle(msg: Any) -> None:
            if msg.rid in self._failed:
                return  # the master has been told; it stops sending soon
            try:
                handler(msg)
            except (SyncFailed, EntryError, OSError) as exc:
                if isinstance(exc, OSError):
                    reason = _describe(exc)
                elif isinstance(exc, EntryError):
                    reason = "refused: %s" % exc
                else:
                    reason = str(exc)
                self._abandon(msg.rid)
                self._failed.add(msg.rid)
                self.send(SyncDone(msg.rid, b"", reason))

        return handle

    # -- paths --------------------------------------------------------------------------------

    def _dir(self, name: bytes) -> bytes:
        """A folder of the store, made private (0700) like the store itself."""
        if not os.path.isdir(self.root):
            os.makedirs(self.root, 0o700, exist_ok=True)  # the mode applies to the leaf only
        path = os.path.join(self.root, name)
        os.makedirs(path, 0o700, exist_ok=True)
        return path

    def _tree_dir(self, tree: bytes) -> bytes:
        return os.path.join(self.root, b"trees", tree.hex().encode())

    def _manifest(self, tree: bytes) -> bytes:
        return self._tree_dir(tree) + b".manifest"

    def _marker(self, tree: bytes) -> bytes:
        return self._tree_dir(tree) + b".jobs"

    def fsid(self) -> str:
        """This store's file-system id, created race-free: the first host's link wins."""
        path = os.path.join(self._dir(b""), b"fsid")
        try:
            with open(path, "rb") as f:
                return f.read().decode("ascii", "replace").strip()
        except FileNotFoundError:
            pass
        tmp = path + b".%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(os.urandom(16).hex().encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip()

    # -- offer: is the tree here already? -----------------------------------------------------

    def on_offer(self, msg: SyncOffer) -> None:
        self._clean_once()
        fsid = self.fsid()
        ready = self._intact(msg.tree) and self._use(msg.tree)
        path = self._tree_dir(msg.tree) if ready else b""
        base = b"" if ready else self._pick_base(msg.tree)
        self.send(SyncState(msg.rid, ready, path, fsid, base))

    def _pick_base(self, tree: bytes) -> bytes:
        """The newest tree whose manifest is sound, locked until this sync ends: the master
        may send the new manifest as its difference from this one, and the new tree takes
        its unchanged files from it."""
        self._drop_base()
        for old in self._trees_newest_first()[:BASE_TREES]:
            if old == tree:
                continue  # the offered tree itself, damaged: its files are still candidates
            fd = self._lock_shared(old)
            if fd is None:
                continue
            starts: List[int] = []
            entries = self._load_manifest(old, fd, starts)
            if entries is None:
                os.close(fd)
                continue
            self._base = (old, entries, fd)
            self._base_bytes = (self._base_data, starts) if starts else None
            return old
        return b""

    def _lock_shared(self, tree: bytes) -> Optional[int]:
        """An fd holding a shared lock on the tree's manifest, or None if the tree is gone
        (the lock may have waited for a run that held it exclusively to take it away)."""
        try:
            fd = os.open(self._manifest(tree), os.O_RDONLY)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            there = os.path.samestat(os.fstat(fd), os.stat(self._manifest(tree)))
            there = there and os.path.isdir(self._tree_dir(tree))
        except OSError:
            there = False
        if not there:
            os.close(fd)
            return None
        return fd

    def _drop_base(self) -> None:
        if self._base is not None:
            os.close(self._base[2])
            self._base = None
        self._base_bytes = self._base_data = None

    def _load_manifest(
        self, tree: bytes, fd: Optional[int] = None, starts: Optional[List[int]] = None
    ) -> Optional[List[List[Any]]]:
        """A stored manifest, if its bytes still hash to its tree id (a job may write
        anywhere in the store); None when missing or damaged. With `starts`, the bytes are
        kept in `_base_data` and `starts` gets each entry's offset in them (treedelta.splice)."""
        try:
            if fd is None:
                with open(self._manifest(tree), "rb") as f:
                    data = f.read()
            else:
                data = os.pread(fd, os.fstat(fd).st_size, 0)
        except OSError:
            return None
        if hashlib.sha256(data).digest() != tree:
            return None
        if data[:1] >= b"\x90":  # a msgpack array: canonical entries start with a length < 4096
            return _legacy_manifest(data)
        self._base_data = data if starts is not None else None
        try:
            return decode_manifest(data, starts)
        except EntryError:
            return None

    def _intact(self, tree: bytes) -> bool:
        """Complete (manifest and dir both in place) and unmodified: judged by lstat of every
        entry, unless that was done already and no job has run in the tree since."""
        if is_clean(self._marker(tree)):
            return self._manifest_sound(tree) and self._is_folder(self._tree_dir(tree))
        with checking(self._marker(tree)) as lock:
            if self._checked(tree):
                mark_clean(lock)
                return True
        return False

    @staticmethod
    def _is_folder(path: bytes) -> bool:
        """A real folder: not a symlink a job put in its place."""
        try:
            return stat.S_ISDIR(os.lstat(path).st_mode)
        except OSError:
            return False

    def _manifest_sound(self, tree: bytes) -> bool:
        """The stored manifest still hashes to the tree id (read, not decoded)."""
        try:
            with open(self._manifest(tree), "rb") as f:
                return hashlib.sha256(f.read()).digest() == tree
        except OSError:
            return False

    def _checked(self, tree: bytes) -> bool:
        """Every entry of the tree checked by lstat against its stored manifest."""
        entries = self._load_manifest(tree)
        if entries is None:
            return False
        base = self._tree_dir(tree) + b"/"  # entry paths are checked relative paths: plain
        lstat, fmt, isdir = os.lstat, stat.S_IFMT, stat.S_IFDIR
        try:  # concatenation, 10,000 times cheaper than os.path.join calls add up
            if not stat.S_ISDIR(lstat(base[:-1]).st_mode):
                return False  # a symlink in place of the tree: every lstat below would follow it
            for number, (path, kind, mode, size, mtime_ns, _) in enumerate(entries):
                if not number % TICK_EVERY:
                    self._tick()
                st = lstat(base + path)
                if kind == FILE:  # _stat_matches, inlined: this loop is the no-op re-sync
                    if (st.st_mode, st.st_size, st.st_mtime_ns) != (
                        stat.S_IFREG | mode,
                        size,
                        mtime_ns,
                    ):
                        return False
                elif fmt(st.st_mode) != (isdir if kind == DIR else stat.S_IFLNK):
                    return False
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Let go of the tree in use and of a sync's base (their shared locks) before the
        process ends, as a test does with each store it made; the dispatcher's own store
        lives as long as the process."""
        self._drop_base()
        self._release_tree()
        self.pins.close()

    def _release_tree(self) -> None:
        for fd in (self._lock_fd, self._jobs_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._lock_fd = self._jobs_fd = None

    def jobs_cwd(self) -> Optional[bytes]:
        """`job_cwd`, for a job about to start there: the first one marks the tree as one
        that jobs may change (treeclean.py), so the next sync checks its files."""
        if self.job_cwd is not None and self._jobs_fd is None:
            self._jobs_fd = hold_for_jobs(self.job_cwd + b".jobs")
        return self.job_cwd

    def _use(self, tree: bytes) -> bool:
        """Jobs run in this tree from now on: the default place (`job_cwd`), or, pinned, a
        run's own (pins.py); a shared lock keeps other runs' GC (and their in-place updates)
        off it. False if it went away before the lock was ours."""
        fd = self._lock_shared(tree)
        if fd is None:
            return False
        os.utime(fd)  # recency, for the GC's "newest trees" order
        path = self._tree_dir(tree)
        _link_original_layout(path)
        if self.pins.wants(tree):
            self.pins.hold(tree, path, fd)
            return True
        self._release_tree()
        self._lock_fd = fd
        self.job_cwd = path
        return True

    # -- entries: plan the delta --------------------------------------------------------------

    def on_entries(self, msg: SyncEntries) -> None:
        inc = self._incoming.get(msg.rid)
        if inc is None:
            inc = self._incoming[msg.rid] = Incoming(msg.rid, msg.tree)
        previous = inc.entries[-1][0] if inc.entries else None
        for entry in msg.entries:
            inc.entries.append(check_entry(entry, inc.dirs, previous))
            previous = entry[0]
        if msg.last:
            self._plan(inc)

    def on_delta(self, msg: SyncDelta) -> None:
        """The manifest as changes to the base this host named: merged here, then judged
        whole (every entry checked, the digest matched) exactly like a full manifest."""
        inc = self._incoming.get(msg.rid)
        if inc is None:
            inc = self._incoming[msg.rid] = Incoming(msg.rid, msg.tree)
        if self._base is None or msg.base != self._base[0]:
            raise SyncFailed("a delta against a tree this host did not offer")
        inc.removed.extend(msg.removed)
        inc.changed.extend(msg.entries)
        if not msg.last:
            return
        base = self._base[1]
        small = is_clean(self._marker(self._base[0])) and merge(base, inc.removed, inc.changed)
        if small:
            inc.entries, paths = small
            inc.touched = Touched(base, inc.entries, paths)
        else:
            inc.entries = apply_delta(base, inc.removed, inc.changed)
            check_delta(inc.entries, inc.changed)
        inc.removed, inc.changed = [], []
        self._plan(inc)

    def _plan(self, inc: Incoming) -> None:
        """The whole manifest is here: make the staging tree, say which files must travel."""
        inc.encoded = b""
        if inc.touched is not None and self._base_bytes is not None:
            inc.encoded = splice(*self._base_bytes, inc.touched)
        if hashlib.sha256(inc.encoded).digest() != inc.tree:
            inc.encoded = encode_manifest(inc.entries)
            if hashlib.sha256(inc.encoded).digest() != inc.tree:
                raise SyncFailed("manifest does not match its tree id")
        folder = self._dir(b"staging") + b"/"
        head = b"%s.%d." % (inc.tree.hex().encode(), os.getpid())
        host = b"." + _host_name()  # last: it may hold dots
        rand = os.urandom(4).hex().encode()
        inc.staging = folder + head + rand + host
        if self._base is not None:
            inc.overlay = folder + head + rand + b"o" + host  # _stale reads its pid alike
            os.mkdir(inc.overlay, 0o700)
            reused = self._plan_overlay(inc, self._base)
        else:
            os.mkdir(inc.staging, 0o700)
            reused = self._build(inc)
        want = bytearray((len(inc.entries) + 7) // 8)
        for index in inc.wanted:
            want[index >> 3] |= 1 << (index & 7)
        self.send(SyncWant(inc.rid, bytes(want), reused))

    def _build(self, inc: Incoming) -> int:
        """A tree from nothing: make the directories, take what earlier trees hold by
        content; list the files still wanted."""
        bases = self._bases()
        reused = 0
        staging = inc.staging + b"/"
        for index, entry in enumerate(inc.entries):
            if not index % TICK_EVERY:
                self._tick()
            path, kind, _, size, _, digest = entry
            target = staging + path
            if kind == DIR:
                os.mkdir(target, 0o700)
            elif kind == FILE:
                if size == 0:
                    self._finish_file(os.open(target, _CREATE, 0o600), target, entry)
                elif self._reuse(bases.get(digest, ()), target, entry):
                    reused += 1
                else:
                    inc.wanted.append(index)
        return reused

    def _plan_overlay(self, inc: Incoming, base: Tuple[bytes, List[List[Any]], int]) -> int:
        """A tree from the base tree: the files it holds unchanged at the same path (checked
        now, by lstat through folders opened without following symlinks) stay where they
        are; every other file is gathered in the overlay folder, from earlier trees or from
        the master. The base is not touched until the commit (`_assemble`), so a sync cut
        off during the transfer leaves it as it was. A base no job has run in since it was
        checked is taken at its manifest's word: no file of it is looked at."""
        if inc.touched is not None:
            return self._plan_touched(inc, base)
        old = BaseTree(self._tree_dir(base[0]), base[1])
        inc.base_files = len(old.old)
        inc.trusted = is_clean(self._marker(base[0]))
        missing: List[int] = []
        reused = 0
        try:
            for index, entry in enumerate(inc.entries):
                if not index % TICK_EVERY:
                    self._tick()
                path, kind, _, size = entry[:4]
                if kind != FILE:
                    continue
                if old.holds(entry, look=not inc.trusted):
                    inc.kept.add(path)
                    reused += size > 0  # as counted when built afresh
                    continue
                target = inc.target(index)
                if size == 0:
                    self._finish_file(os.open(target, _CREATE, 0o600), target, entry)
                else:
                    missing.append(index)
        finally:
            old.close()
        inc.lost = len(old.old) - len(inc.kept)
        return reused + self._fill(inc, base, missing)

    def _plan_touched(self, inc: Incoming, base: Tuple[bytes, List[List[Any]], int]) -> int:
        """`_plan_overlay` for a small delta to a clean base: every name the delta does not
        touch is kept as it is (the base's manifest's word), so only the touched files are
        looked for, in the overlay."""
        touched = inc.touched
        assert touched is not None
        inc.trusted = True
        inc.base_files = sum(1 for entry in base[1] if entry[1] == FILE)
        inc.lost = touched.lost_files()
        reused = sum(1 for entry in base[1] if entry[1] == FILE and entry[3] > 0)
        reused -= sum(1 for entry in touched.was.values() if entry[1] == FILE and entry[3] > 0)
        missing: List[int] = []
        for index, entry in touched.new():
            if entry[1] != FILE:
                continue
            if entry[3] == 0:
                target = inc.target(index)
                self._finish_file(os.open(target, _CREATE, 0o600), target, entry)
            else:
                missing.append(index)
        return reused + self._fill(inc, base, missing)

    def _fill(
        self, inc: Incoming, base: Tuple[bytes, List[List[Any]], int], missing: List[int]
    ) -> int:
        """Take the `missing` files from the base by content (a renamed file, a new mode),
        then from the earlier trees if what would travel is worth reading their manifests;
        the rest are wanted from the master. The number of files found."""
        if not missing:
            return 0
        found: Dict[bytes, List[Tuple[bytes, List[Any]]]] = {}
        digests = {inc.entries[i][5] for i in missing}
        where = self._tree_dir(base[0]) + b"/"
        for entry in base[1]:
            if entry[1] == FILE and entry[5] in digests:
                found.setdefault(entry[5], []).append((where, entry))
        earlier: Optional[Dict[bytes, List[Tuple[bytes, List[Any]]]]] = None
        if sum(inc.entries[i][3] for i in missing) > SEARCH_BYTES:
            earlier = self._bases()
        reused = 0
        for number, index in enumerate(missing):
            if not number % TICK_EVERY:
                self._tick()
            entry, target = inc.entries[index], inc.target(index)
            if self._reuse(found.get(entry[5], ()), target, entry) or (
                earlier is not None and self._reuse(earlier.get(entry[5], ()), target, entry)
            ):
                reused += 1
            else:
                inc.wanted.append(index)
        return reused

    def _assemble(self, inc: Incoming) -> None:
        """At commit: the base tree becomes the new one in place when no other run uses it
        (its exclusive lock is free), else a fresh tree links the kept files from it; either
        way the overlay's files then move to their paths. In place, the base leaves
        `trees/` by a rename first, so no run can start using it meanwhile; only a sync cut
        off inside this step (milliseconds: renames and unlinks) loses it."""
        base = self._base
        if base is None:
            raise SyncFailed("the base tree went away during the sync")
        fresh = None
        small = inc.lost <= max(IN_PLACE_LOST, inc.base_files // 100)
        if small and self._take(base, inc.staging, inc.trusted):
            if inc.touched is not None:
                return self._assemble_touched(inc, inc.touched)
            added = (ORIGINAL_LAYOUT,) if inc.trusted else ()
            kept = clear_changes(inc.staging, base[1], inc.entries, self._tick, added)
        else:
            if inc.touched is not None:  # the general path needs the names kept, after all
                gone = inc.touched.paths
                inc.kept = {e[0] for e in base[1] if e[1] == FILE and e[0] not in gone}
            os.mkdir(inc.staging, 0o700)
            fresh, kept = BaseTree(self._tree_dir(base[0]), base[1]), set()
        try:
            staging = inc.staging + b"/"
            for index, entry in enumerate(inc.entries):
                if not index % TICK_EVERY:
                    self._tick()
                path, kind = entry[0], entry[1]
                target = staging + path
                if kind == DIR and path not in kept:
                    os.mkdir(target, 0o700)
                elif kind != FILE:
                    continue
                elif path not in inc.kept:
                    os.rename(inc.target(index), target)
                elif path not in kept and not (fresh is not None and fresh.link(entry, target)):
                    raise SyncFailed("deps on the host changed during the sync; run it again")
        finally:
            if fresh is not None:
                fresh.close()
        os.rmdir(inc.overlay)
        inc.overlay = b""

    def _assemble_touched(self, inc: Incoming, touched: Touched) -> None:
        """The clean base, now in staging, becomes the new tree by its touched names alone:
        stale ones go, new ones come (files from the overlay), and the folders where names
        changed get their mode and mtime back. The 10,000 others are not looked at."""
        theirs = ORIGINAL_LAYOUT in touched.paths and not touched.in_base(ORIGINAL_LAYOUT)
        clear(inc.staging, touched, [ORIGINAL_LAYOUT] if theirs else [])  # the deps' own now
        staging = inc.staging + b"/"
        for index, entry in touched.new():
            kind, target = entry[1], staging + entry[0]
            if kind == DIR:
                os.mkdir(target, 0o700)
            elif kind == FILE:
                os.rename(inc.target(index), target)
            else:
                os.symlink(entry[5], target)
        set_folders(inc.staging, touched)
        os.rmdir(inc.overlay)
        inc.overlay = b""
        inc.updated = True

    def _take(
        self, base: Tuple[bytes, List[List[Any]], int], staging: bytes, trusted: bool = False
    ) -> bool:
        """Move the base tree to `staging` if no other run holds its lock (jobs of another
        run work in it, or it is another sync's base) and this one's jobs do not use it.
        A base `trusted` when planned must still be clean: else a job ran there meanwhile,
        and the fresh tree checks every file it links from it."""
        if self._tree_dir(base[0]) == self.job_cwd:
            return False
        try:
            fcntl.flock(base[2], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # flock(2): a failed conversion may have dropped our shared lock
            fcntl.flock(base[2], fcntl.LOCK_SH)
            return False
        try:  # no job can start there now: it would need the shared lock first
            if trusted and not is_clean(self._marker(base[0])):
                raise FileNotFoundError("the base's jobs may have changed it")
            os.rename(self._tree_dir(base[0]), staging)
        except OSError:
            fcntl.flock(base[2], fcntl.LOCK_SH)
            return False
        for name in (self._manifest(base[0]), self._marker(base[0])):
            with contextlib.suppress(OSError):
                os.unlink(name)
        return True

    def _bases(self) -> Dict[bytes, List[Tuple[bytes, List[Any]]]]:
        """Content digest -> (tree dir + "/", entry) of files in the newest complete trees."""
        found: Dict[bytes, List[Tuple[bytes, List[Any]]]] = {}
        for tree in self._trees_newest_first()[:BASE_TREES]:
            entries = self._load_manifest(tree)
            if not entries:
                continue
            base = self._tree_dir(tree) + b"/"
            for entry in entries:
                if entry[1] == FILE and entry[3] > 0:
                    found.setdefault(entry[5], []).append((base, entry))
        return found

    def _reuse(self, candidates: Any, target: bytes, entry: List[Any]) -> bool:
        for base, old in candidates:
            try:
                folder, source = _open_beneath(base, old[0])
            except OSError:
                continue  # a concurrent GC removed it, or a job put a symlink on the way
            try:
                st = os.fstat(source)
                if not _stat_matches(st, old):
                    continue  # modified since it was synced: its content is not trusted
                name = old[0].rsplit(b"/", 1)[-1]
                if old[2:5] == entry[2:5] and _link(folder, name, st, target):
                    return True  # same mode, size, mtime: one inode serves both
                if self._copy(source, target, entry):
                    return True
            finally:
                os.close(source)
                os.close(folder)
        return False

    def _copy(self, source: int, target: bytes, entry: List[Any]) -> bool:
        """Copy an opened file into the new tree, if its bytes hash to the entry's digest: they
        are read anyway, so the check is nearly free."""
        hasher = hashlib.sha256()
        fd = os.open(target, _CREATE, 0o600)
        try:
            while True:
                self._tick()
                data = os.read(source, COPY_CHUNK)
                if not data:
                    break
                hasher.update(data)
                _write_all(fd, data)
        except BaseException:
            os.close(fd)
            raise
        if hasher.digest() != entry[5]:
            os.close(fd)
            os.unlink(target)
            return False
        self._finish_file(fd, target, entry)
        return True

    @staticmethod
    def _finish_file(fd: int, path: bytes, entry: List[Any]) -> None:
        try:
            os.fchmod(fd, entry[2])
        finally:
            os.close(fd)
        os.utime(path, ns=(entry[4], entry[4]), follow_symlinks=False)

    # -- data ---------------------------------------------------------------------------------

    def on_data(self, msg: SyncData) -> None:
        inc = self._incoming.get(msg.rid)
        if inc is None or not inc.staging:
            raise SyncFailed("file data before the manifest")
        if msg.index != inc.index:
            self._close_current(inc)
            if inc.next_want >= len(inc.wanted) or inc.wanted[inc.next_want] != msg.index:
                raise SyncFailed("data for file %d, which was not asked for" % msg.index)
            inc.next_want += 1
            inc.index, inc.written = msg.index, 0
            inc.hasher = hashlib.sha256()
            target = inc.target(msg.index)
            inc.fd = os.open(target, _CREATE, 0o600)
        size = inc.entries[inc.index][3]
        if msg.offset != inc.written or inc.written + len(msg.data) > size:
            raise SyncFailed("file data out of order or past the file's size")
        _write_all(inc.fd, msg.data)  # type: ignore[arg-type]
        inc.hasher.update(msg.data)
        inc.written += len(msg.data)

    def on_files(self, msg: SyncFiles) -> None:
        """Several wanted files whole: each is checked against its digest before it is
        written, then written and finished in one go."""
        inc = self._incoming.get(msg.rid)
        if inc is None or not inc.staging:
            raise SyncFailed("file data before the manifest")
        self._close_current(inc)
        inc.index = -1
        data, at = memoryview(msg.data), 0
        for _ in range(msg.count):
            if inc.next_want >= len(inc.wanted):
                raise SyncFailed("data for a file that was not asked for")
            index = inc.wanted[inc.next_want]
            inc.next_want += 1
            entry = inc.entries[index]
            content, at = data[at : at + entry[3]], at + entry[3]
            if len(content) != entry[3] or hashlib.sha256(content).digest() != entry[5]:
                raise SyncFailed("file %s arrived incomplete or corrupt" % show_path(entry[0]))
            target = inc.target(index)
            fd = os.open(target, _CREATE, 0o600)
            try:
                _write_all(fd, content)
            except BaseException:
                os.close(fd)
                raise
            self._finish_file(fd, target, entry)
        if at != len(data):
            raise SyncFailed("file data past the files' sizes")

    def _close_current(self, inc: Incoming) -> None:
        """The file being written must be complete and match its digest before the next one."""
        if inc.fd is None:
            return
        fd, inc.fd = inc.fd, None
        entry = inc.entries[inc.index]
        if inc.written != entry[3] or inc.hasher.digest() != entry[5]:
            os.close(fd)
            raise SyncFailed("file %s arrived incomplete or corrupt" % show_path(entry[0]))
        self._finish_file(fd, inc.target(inc.index), entry)

    # -- commit -------------------------------------------------------------------------------

    def on_commit(self, msg: SyncCommit) -> None:
        inc = self._incoming.get(msg.rid)
        if inc is None or not inc.staging:
            raise SyncFailed("commit before the manifest")
        self._close_current(inc)
        if inc.next_want != len(inc.wanted):
            raise SyncFailed("%d file(s) never arrived" % (len(inc.wanted) - inc.next_want))
        if inc.overlay:
            self._assemble(inc)
        if not inc.updated:
            self._links_and_folders(inc)
        self._switch_in(inc)
        del self._incoming[msg.rid]
        self._drop_base()
        if not self._use(inc.tree):  # another sync took it in place before our lock: rare
            raise SyncFailed("the new tree was replaced by a concurrent sync; run again")
        self.send(SyncDone(msg.rid, self._tree_dir(inc.tree), ""))
        self.keepalive()  # also flushes: the master need not wait for the GC below
        self._collect_garbage()

    def _links_and_folders(self, inc: Incoming) -> None:
        """The symlinks of a tree built in staging, and its folders' modes and mtimes."""
        for number, (path, kind, _, _, _, target) in enumerate(inc.entries):
            if not number % TICK_EVERY:
                self._tick()
            if kind == LINK:
                os.symlink(target, os.path.join(inc.staging, path))
        for path, kind, mode, _, mtime_ns, _ in reversed(inc.entries):  # deepest first
            if kind == DIR:
                full = os.path.join(inc.staging, path)
                os.chmod(full, mode | 0o700)  # the owner must be able to clean it up
                os.utime(full, ns=(mtime_ns, mtime_ns))

    def _switch_in(self, inc: Incoming) -> None:
        """Manifest first, then the tree dir: a tree is complete once both are in place."""
        self._dir(b"trees")
        manifest = inc.staging + b".manifest"
        with open(manifest, "wb") as f:
            f.write(inc.encoded)
        os.replace(manifest, self._manifest(inc.tree))
        final = self._tree_dir(inc.tree)
        for _ in range(2):
            try:
                os.rename(inc.staging, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                with checking(self._marker(inc.tree)) as lock:
                    mark_clean(lock)  # every file was just checked, by its digest
                return
            if self._intact(inc.tree):  # a concurrent run finished the same tree first
                self._remove(inc.staging)
                return
            self._remove(final)  # a damaged copy (a job changed it): replace it
        raise SyncFailed("cannot switch the new tree in")

    # -- cleaning -----------------------------------------------------------------------------

    def _trees_newest_first(self) -> List[bytes]:
        trees = []
        try:
            names = os.listdir(self._dir(b"trees"))
        except OSError:
            return []
        for name in names:
            if name.endswith(b".manifest"):
                try:
                    mtime = os.stat(os.path.join(self.root, b"trees", name)).st_mtime
                    trees.append((mtime, bytes.fromhex(name[: -len(b".manifest")].decode())))
                except (OSError, ValueError):
                    continue
        return [tree for _, tree in sorted(trees, reverse=True)]

    def _collect_garbage(self) -> None:
        """Drop old trees nobody uses: each user holds a shared lock on the tree's manifest."""
        for tree in self._trees_newest_first()[KEEP_TREES:]:
            if self._tree_dir(tree) == self.job_cwd:
                continue
            try:
                fd = os.open(self._manifest(tree), os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # another run's jobs work in it
            try:
                self._remove(self._tree_dir(tree))
                os.unlink(self._manifest(tree))
                os.unlink(self._marker(tree))
            except OSError:
                pass
            finally:
                os.close(fd)

    def _remove(self, path: bytes) -> None:
        """Rename away first, so a half-deleted tree never looks like a tree."""
        if not os.path.lexists(path):
            return
        trash = os.path.join(self._dir(b"trash"), os.urandom(8).hex().encode())
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _abandon(self, rid: int) -> None:
        self._drop_base()
        inc = self._incoming.pop(rid, None)
        if inc is None:
            return
        if inc.fd is not None:
            os.close(inc.fd)
        for folder in (inc.staging, inc.overlay):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    def abandon_all(self) -> None:
        """At exit: unfinished trees are useless; remove them now rather than at the next GC."""
        for rid in list(self._incoming):
            self._abandon(rid)

    def _clean_once(self) -> None:
        """Remove what crashed or killed dispatchers left: their staging dirs and trash."""
        if self._cleaned:
            return
        self._cleaned = True
        me = _host_name()
        for area in (b"staging", b"trash"):
            folder = self._dir(area)
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if area == b"trash" or self._stale(name, path, me):
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)

    @staticmethod
    def _stale(name: bytes, path: bytes, me: bytes) -> bool:
        """A staging dir of a dead dispatcher on this host, or one untouched for a day."""
        parts = name.split(b".", 3)
        if len(parts) == 4 and parts[3] == me:
            try:
                os.kill(int(parts[1]), 0)
            except (ValueError, ProcessLookupError):
                return True
            except PermissionError:
                return False
            return False
        try:
            return time.time() - os.lstat(path).st_mtime > STALE_STAGING
        except OSError:
            return False
