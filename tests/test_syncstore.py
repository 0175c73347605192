"""The host's tree store driven directly (no SSH): delta, damage, concurrency, GC, scanning.

These run the dispatcher's SyncStore in this process against a temp folder, fed with the same
messages the master sends, so each rule of the store is pinned without network timing.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from anet.deps.hashcache import HashCache, open_cache
from anet.deps.manifest import DepsError, Tree, scan
from dispatcher.syncproto import (
    ENTRIES_PER_FRAME,
    FILE,
    SyncCommit,
    SyncData,
    SyncDone,
    SyncEntries,
    SyncOffer,
    SyncState,
    SyncWant,
)
from dispatcher.syncstore import KEEP_TREES, SyncStore


@pytest.fixture(autouse=True)
def close_the_hosts() -> Iterator[None]:
    """A store holds a lock on the tree in use, an open fd, until its process ends; a test's
    stores end with the test."""
    yield
    while Host.made:
        Host.made.pop().store.close()


class Host:
    """A SyncStore with an outbox, as one dispatcher would hold it."""

    made: ClassVar[list[Host]] = []
    """Every host of the test, closed after it (see close_the_hosts)."""

    def __init__(self, home: Path) -> None:
        self.sent: list[object] = []
        self.store = SyncStore(str(home), self.sent.append)
        Host.made.append(self)
        self.handlers: dict[type, object] = {}
        self.store.register(self.handlers)  # type: ignore[arg-type]
        self.rid = 0

    def handle(self, msg: object) -> object | None:
        before = len(self.sent)
        self.handlers[type(msg)](msg)  # type: ignore[operator]
        return self.sent[-1] if len(self.sent) > before else None

    def offer(self, tree: Tree) -> SyncState:
        self.rid += 1
        reply = self.handle(SyncOffer(self.rid, tree.id, len(tree.entries), tree.size))
        assert isinstance(reply, SyncState)
        return reply

    def begin(self, tree: Tree) -> tuple[int, SyncWant]:
        """Send the manifest; the host's answer says which files must travel."""
        self.rid += 1
        reply = None
        for start in range(0, len(tree.entries), ENTRIES_PER_FRAME):
            chunk = tree.entries[start : start + ENTRIES_PER_FRAME]
            last = start + ENTRIES_PER_FRAME >= len(tree.entries)
            reply = self.handle(SyncEntries(self.rid, tree.id, chunk, last))
        assert isinstance(reply, SyncWant), reply
        return self.rid, reply

    def finish(self, rid: int, tree: Tree, want: SyncWant) -> SyncDone:
        for i, entry in enumerate(tree.entries):
            if entry[1] == FILE and want.want[i >> 3] & (1 << (i & 7)):
                data = Path(os.fsdecode(tree.local_path(i))).read_bytes()
                self.handle(SyncData(rid, i, 0, data))
        reply = self.handle(SyncCommit(rid))
        assert isinstance(reply, SyncDone)
        return reply

    def sync(self, tree: Tree) -> tuple[SyncWant, SyncDone]:
        rid, want = self.begin(tree)
        return want, self.finish(rid, tree, want)


def wanted(want: SyncWant) -> int:
    return sum(bin(b).count("1") for b in want.want)


def scan_dir(path: Path) -> Tree:
    with open_cache(None) as cache:
        return scan(f"{path}/", cache)


def make(root: Path, n: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i}").write_text(f"file {i}\n")
    return root


def test_a_tree_is_ready_only_after_commit(tmp_path):
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src"))
    assert not host.offer(tree).ready
    rid, want = host.begin(tree)
    assert wanted(want) == 5
    assert not host.offer(tree).ready  # staging is invisible
    done = host.finish(rid, tree, want)
    assert done.error == "" and host.offer(tree).ready
    assert host.store.job_cwd == done.path


def test_a_file_modified_in_the_store_is_detected_and_sent_again(tmp_path):
    host, src = Host(tmp_path / "home"), make(tmp_path / "src")
    tree = scan_dir(src)
    _, done = host.sync(tree)
    assert host.store.jobs_cwd() == done.path  # a job starts there: the tree may change now
    victim = Path(os.fsdecode(done.path)) / "f2"
    victim.write_text("a job wrote here\n")
    assert not host.offer(tree).ready
    want, again = host.sync(tree)
    assert again.error == "" and wanted(want) == 1  # only the damaged file travels
    assert (Path(os.fsdecode(again.path)) / "f2").read_text() == "file 2\n"


def test_two_syncs_of_one_tree_at_once_both_succeed(tmp_path):
    first, second = Host(tmp_path / "home"), Host(tmp_path / "home")  # one shared store
    tree = scan_dir(make(tmp_path / "src"))
    rid1, want1 = first.begin(tree)
    rid2, want2 = second.begin(tree)
    done1 = first.finish(rid1, tree, want1)
    done2 = second.finish(rid2, tree, want2)
    assert done1.error == done2.error == "" and done1.path == done2.path
    assert first.offer(tree).ready
    assert os.listdir(tmp_path / "home" / "deps" / "staging") == []


def test_different_trees_do_not_disturb_each_other(tmp_path):
    a, b = Host(tmp_path / "home"), Host(tmp_path / "home")
    tree_a = scan_dir(make(tmp_path / "a"))
    tree_b = scan_dir(make(tmp_path / "b", 3))
    rid_a, want_a = a.begin(tree_a)
    _, done_b = b.sync(tree_b)
    done_a = a.finish(rid_a, tree_a, want_a)
    assert done_a.path != done_b.path
    assert a.offer(tree_a).ready and b.offer(tree_b).ready


def test_old_trees_are_collected_but_not_one_in_use(tmp_path):
    user, src = Host(tmp_path / "home"), make(tmp_path / "src")
    in_use = scan_dir(src)
    user.sync(in_use)  # this "other run" keeps a shared lock on its tree
    other = Host(tmp_path / "home")
    for i in range(KEEP_TREES + 2):
        (src / "f0").write_text(f"version {i}\n")
        time.sleep(0.01)
        other.sync(scan_dir(src))
    trees = os.listdir(tmp_path / "home" / "deps" / "trees")
    assert sum(name.endswith(".manifest") for name in trees) == KEEP_TREES + 1
    assert user.offer(in_use).ready


def test_data_past_a_files_size_or_unasked_fails_the_sync_only(tmp_path):
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src"))
    rid, _ = host.begin(tree)
    reply = host.handle(SyncData(rid, 0, 0, b"far too long for this file\n"))
    assert isinstance(reply, SyncDone) and "past the file" in reply.error
    assert host.handle(SyncCommit(rid)) is None  # the failed sync is over: ignored
    assert os.listdir(tmp_path / "home" / "deps" / "staging") == []
    _, done = host.sync(tree)  # the store itself is fine
    assert done.error == ""


# -- dependencies/: the original ANet's layout -----------------------------------------------


def test_the_tree_is_also_reachable_as_dependencies_from_inside_it(tmp_path):
    """The original ran jobs beside dependencies/: `python3 dependencies/prog.py` must find
    the tree's prog.py, and `python3 prog.py` still does."""
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src"))
    _, done = host.sync(tree)
    root = Path(os.fsdecode(done.path))
    assert os.readlink(root / "dependencies") == "."
    assert (root / "dependencies" / "f3").read_text() == "file 3\n"
    assert host.offer(tree).ready  # the link is no damage to the tree


def test_a_tree_made_without_the_link_gets_it_when_used(tmp_path):
    """Trees an earlier anet built are used as they are, plus the link."""
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src"))
    _, done = host.sync(tree)
    link = Path(os.fsdecode(done.path)) / "dependencies"
    link.unlink()
    assert Host(tmp_path / "home").offer(tree).ready
    assert os.readlink(link) == "."


@pytest.mark.parametrize("kind", ["dir", "file", "link"])
def test_the_users_own_dependencies_entry_is_left_alone(tmp_path, kind):
    src = make(tmp_path / "src")
    own = src / "dependencies"
    if kind == "dir":
        own.mkdir()
        (own / "inner").write_text("mine\n")
    elif kind == "file":
        own.write_text("mine\n")
    else:
        own.symlink_to("f1")
    host, tree = Host(tmp_path / "home"), scan_dir(src)
    _, done = host.sync(tree)
    assert host.offer(tree).ready
    synced = Path(os.fsdecode(done.path)) / "dependencies"
    if kind == "dir":
        assert (synced / "inner").read_text() == "mine\n" and not synced.is_symlink()
    elif kind == "file":
        assert synced.read_text() == "mine\n" and not synced.is_symlink()
    else:
        assert os.readlink(synced) == "f1"


def plant_symlink(folder: Path, elsewhere: Path) -> None:
    """What a job may do in its deps: replace a folder by a symlink to look-alikes (the same
    names, sizes, modes and mtimes, other bytes)."""
    shutil.copytree(folder, elsewhere, symlinks=True)  # copy2: modes and mtimes kept
    for fake in elsewhere.rglob("*"):
        if fake.is_file() and not fake.is_symlink():
            st = fake.stat()
            fake.write_bytes(bytes(b ^ 1 for b in fake.read_bytes()))
            os.utime(fake, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere)


@pytest.mark.parametrize("swapped", ["lib", "."])
def test_reuse_never_follows_a_symlink_a_job_put_into_an_old_tree(tmp_path, swapped):
    host, src = Host(tmp_path / "home"), make(tmp_path / "src")
    (src / "lib").mkdir()
    for i in range(3):
        (src / "lib" / f"m{i}.py").write_text(f"module {i}\n")
    old_tree = scan_dir(src)
    _, first = host.sync(old_tree)
    assert host.store.jobs_cwd() == first.path  # the job that plants it
    plant_symlink(Path(os.fsdecode(first.path)) / swapped, tmp_path / "elsewhere")
    assert not host.offer(old_tree).ready  # look-alikes are not the tree, even by lstat
    (src / "f0").write_text("a new version\n")  # a new tree that reuses lib/ from the old one
    tree = scan_dir(src)
    want, done = host.sync(tree)
    assert done.error == ""
    new = Path(os.fsdecode(done.path))
    for i in range(3):
        assert (new / "lib" / f"m{i}.py").read_text() == f"module {i}\n"
    assert wanted(want) == (4 if swapped == "lib" else 8)  # what the symlink hid travelled
    assert host.offer(tree).ready


def test_a_copy_is_taken_only_if_its_bytes_match_the_digest(tmp_path):
    """Same content, other mtime: the file is copied, not linked, and the copy is hashed."""
    host, src = Host(tmp_path / "home"), make(tmp_path / "src")
    _, first = host.sync(scan_dir(src))
    stored = Path(os.fsdecode(first.path)) / "f1"
    st = stored.stat()
    stored.write_text("file X\n")  # a job edits it in place, same size, mtime restored
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(src / "f1", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # master: touched only
    tree = scan_dir(src)
    want, done = host.sync(tree)
    assert done.error == "" and wanted(want) == 1
    assert (Path(os.fsdecode(done.path)) / "f1").read_text() == "file 1\n"


def test_corrupt_content_is_refused_at_commit(tmp_path):
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src", 1))
    rid, _ = host.begin(tree)
    host.handle(SyncData(rid, 0, 0, b"file X\n"))  # right size, wrong bytes
    reply = host.handle(SyncCommit(rid))
    assert isinstance(reply, SyncDone) and "corrupt" in reply.error
    assert not host.offer(tree).ready


def test_scan_sorts_parents_first_and_follows_the_slash_rule(tmp_path):
    src = make(tmp_path / "pkg")
    (src / "sub").mkdir()
    (src / "sub" / "x").write_text("x")
    with open_cache(None) as cache:
        contents = scan(f"{src}/", cache)
        folder = scan(str(src), cache)
        single = scan(str(src / "f1"), cache)
    assert [e[0] for e in contents.entries] == [b"f0", b"f1", b"f2", b"f3", b"f4", b"sub", b"sub/x"]
    assert [e[0] for e in folder.entries][:2] == [b"pkg", b"pkg/f0"]
    assert [e[0] for e in single.entries] == [b"f1"]


def test_digests_are_cached_and_an_edit_is_noticed_even_with_its_mtime_restored(tmp_path):
    src = make(tmp_path / "src", 50)
    db = tmp_path / "hashes.sqlite"
    with open_cache(db) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 50
    with open_cache(db) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 0
    st = (src / "f7").stat()
    (src / "f7").write_text("file X\n")  # same size
    os.utime(src / "f7", ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = HashCache(db)
    tree = scan(f"{src}/", cache)
    assert cache.hashed == 1
    cache.close()
    assert tree.id != scan_dir(make(tmp_path / "other", 50)).id


def test_special_files_are_refused(tmp_path):
    src = make(tmp_path / "src")
    os.mkfifo(src / "pipe")
    with pytest.raises(DepsError, match="device, socket or pipe"):
        scan_dir(src)
