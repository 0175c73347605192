"""A re-sync builds the new tree from the host's previous one: in place, from a delta.

The host's SyncStore runs in this process against a temp folder (as in test_syncstore.py),
fed the frames the master would send; each test checks that the tree the host ends with is
exactly the new manifest's, whatever changed, and that a tree another run uses is left alone.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import stat
from pathlib import Path

import msgpack
import pytest
from test_sync import remote_tree, snapshot, sync, synced
from test_syncstore import Host, close_the_hosts, scan_dir, wanted  # noqa: F401 (the fixture)

from anet.deps.known import KEEP, recall, remember
from anet.deps.manifest import Tree, scan_deps
from anet.deps.sync import SyncReport, _manifest_frames
from dispatcher.syncproto import (
    FILE,
    LINK,
    EntryError,
    SyncDelta,
    SyncDone,
    SyncEntries,
    SyncWant,
    check_entry,
    decode_manifest,
    encode_manifest,
    tree_id,
)
from dispatcher.syncstore import IN_PLACE_LOST


def fresh(home: Path, *before: Host) -> Host:
    """A new dispatcher on the same store, the earlier ones gone (their locks released)."""
    for host in before:
        host.store.close()
    return Host(home)


def resync(host: Host, tree: Tree, known: Path) -> tuple[list[object], SyncWant, SyncDone]:
    """Offer, then the manifest as the master sends it (a delta when it knows the base)."""
    state = host.offer(tree)
    assert not state.ready
    host.rid += 1
    frames = list(_manifest_frames(host.rid, dataclasses.replace(tree, known=known), state.base))
    reply = None
    for frame in frames:
        reply = host.handle(frame)
    assert isinstance(reply, SyncWant), reply
    return frames, reply, host.finish(host.rid, tree, reply)


def make_src(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "gone-dir").mkdir()
    for i in range(30):
        (root / "a" / f"x{i}").write_text(f"x {i}\n")
    (root / "b" / "z").write_text("z\n")
    (root / "f1").write_text("one\n")
    (root / "f2").write_text("two\n")
    (root / "empty").write_bytes(b"")
    os.symlink("a/x1", root / "link1")
    os.symlink("f2", root / "link-gone")
    return root


def synced_once(tmp_path: Path, src: Path | None = None) -> tuple[Path, Path, Path, Host, Path]:
    """`make_src` (or `src`) synced once to a new store: (source, home, the master's
    remembered manifests, the host that synced it, the tree on the host)."""
    src = src or make_src(tmp_path / "src")
    home, known = tmp_path / "home", tmp_path / "known"
    old = scan_dir(src)
    remember(known, old.id, old.entries)
    first = Host(home)
    _, done = first.sync(old)
    assert done.error == ""
    return src, home, known, first, Path(os.fsdecode(done.path))


def change_everything(src: Path) -> None:
    """A file added, removed, rewritten and re-moded; symlinks retargeted, added, removed;
    empty folders removed and added; a folder turned into a file and a file into a folder."""
    (src / "new.txt").write_text("new\n")
    (src / "f2").unlink()
    (src / "a" / "x3").write_text("rewritten\n")
    (src / "f1").chmod(0o600)
    (src / "link1").unlink()
    os.symlink("a/x2", src / "link1")
    os.symlink("b", src / "link2")
    (src / "link-gone").unlink()
    (src / "gone-dir").rmdir()
    (src / "new-dir").mkdir()
    shutil.rmtree(src / "b")
    (src / "b").write_text("b is a file now\n")
    (src / "empty").unlink()
    (src / "empty").mkdir()
    (src / "a").chmod(0o750)


def test_a_resync_updates_the_previous_tree_in_place_to_exactly_the_new_one(tmp_path):
    src, home, known, first, old_dir = synced_once(tmp_path)
    kept_inode = (old_dir / "a" / "x0").stat().st_ino
    assert first.store.jobs_cwd()  # a job starts there
    (old_dir / "junk.txt").write_text("a job wrote this\n")  # not in any manifest
    change_everything(src)
    new = scan_dir(src)
    frames, want, again = resync(fresh(home, first), new, known)
    assert all(isinstance(f, SyncDelta) for f in frames)  # the manifest's difference only
    assert again.error == "", again.error
    assert wanted(want) == 3  # new.txt, a/x3, b: the rest was on the host
    new_dir = Path(os.fsdecode(again.path))
    assert synced(new_dir) == snapshot(src)
    assert not old_dir.exists() and not Path(f"{old_dir}.manifest").exists()  # in place
    assert (new_dir / "a" / "x0").stat().st_ino == kept_inode  # neither copied nor linked
    assert os.listdir(home / "deps" / "staging") == []


def test_a_full_manifest_also_updates_in_place(tmp_path):
    """A master that does not remember the base sends the whole manifest: same result."""
    src, home = make_src(tmp_path / "src"), tmp_path / "home"
    first = Host(home)
    _, done = first.sync(scan_dir(src))
    change_everything(src)
    new = scan_dir(src)
    frames, _, again = resync(fresh(home, first), new, tmp_path / "nothing-known")
    assert all(isinstance(f, SyncEntries) for f in frames)
    assert again.error == ""
    assert synced(Path(os.fsdecode(again.path))) == snapshot(src)
    assert not Path(os.fsdecode(done.path)).exists()


def test_a_tree_in_use_by_another_run_is_not_changed(tmp_path):
    src, home, known, first, old_dir = synced_once(tmp_path)
    before = snapshot(old_dir)
    running = fresh(home, first)
    assert running.offer(scan_dir(src)).ready  # another run's jobs work in the old tree now
    change_everything(src)
    new = scan_dir(src)
    _, _, again = resync(Host(home), new, known)
    assert again.error == ""
    assert snapshot(old_dir) == before  # untouched
    assert synced(Path(os.fsdecode(again.path))) == snapshot(src)


def test_switching_to_other_deps_keeps_the_previous_tree_whole(tmp_path):
    """Only an edit is made in place: deps that share little with the base leave it be, so
    switching back costs one offer."""
    one, other, home = make_src(tmp_path / "one"), tmp_path / "other", tmp_path / "home"
    other.mkdir()
    for i in range(IN_PLACE_LOST + 1):
        (one / "a" / f"more{i}").write_text(f"more {i}\n")
    (other / "solo").write_text("solo\n")
    first = Host(home)
    first.sync(scan_dir(one))
    second = fresh(home, first)
    _, _, done = resync(second, scan_dir(other), tmp_path / "known")
    assert done.error == ""
    assert fresh(home, second).offer(scan_dir(one)).ready


def test_a_file_a_job_changed_in_the_base_is_sent_again(tmp_path):
    src, home, known, first, old_dir = synced_once(tmp_path)
    assert first.store.jobs_cwd()  # a job starts there
    (old_dir / "a" / "x5").write_text("a job wrote here\n")
    (src / "new.txt").write_text("new\n")
    _, want, again = resync(fresh(home, first), scan_dir(src), known)
    assert again.error == "" and wanted(want) == 2  # new.txt and the damaged a/x5
    assert synced(Path(os.fsdecode(again.path))) == snapshot(src)


def test_a_folder_a_job_swapped_for_a_symlink_is_not_followed(tmp_path):
    src, home, known, first, tree_dir = synced_once(tmp_path)
    assert first.store.jobs_cwd()  # a job starts there
    outside = tmp_path / "outside"
    shutil.copytree(tree_dir / "a", outside, copy_function=shutil.copy2)
    shutil.rmtree(tree_dir / "a")
    os.symlink(outside, tree_dir / "a")  # look-alike files, same sizes and mtimes
    (src / "new.txt").write_text("new\n")
    _, want, again = resync(fresh(home, first), scan_dir(src), known)
    assert again.error == ""
    assert wanted(want) == 31  # a/'s 30 files travel again, and new.txt
    assert synced(Path(os.fsdecode(again.path))) == snapshot(src)
    assert sorted(os.listdir(outside)) == sorted(os.listdir(src / "a"))  # nothing removed there


@pytest.mark.parametrize(
    "removed, entries, error",
    [
        ([b"not-there"], [], "which its base does not hold"),
        ([b"a"], [], "is not inside a directory"),  # a/x* stay without their folder
        ([], [[b"f1/inner", FILE, 0o644, 1, 0, b"\0" * 32]], "is not inside a directory"),
        ([], [[b"evil", LINK, 0o777, 0, 0, b"../../x"]], "points outside the tree"),
        ([], [[b"../up", FILE, 0o644, 1, 0, b"\0" * 32]], "escapes the tree"),
    ],
)
def test_a_hostile_delta_is_refused(tmp_path, removed, entries, error):
    src, home = make_src(tmp_path / "src"), tmp_path / "home"
    old = scan_dir(src)
    first = Host(home)
    first.sync(old)
    host = fresh(home, first)
    (src / "new.txt").write_text("new\n")
    state = host.offer(scan_dir(src))
    reply = host.handle(SyncDelta(host.rid + 1, b"\1" * 32, state.base, removed, entries, True))
    assert isinstance(reply, SyncDone) and error in reply.error, reply


def test_a_delta_against_a_tree_the_host_did_not_name_is_refused(tmp_path):
    host = Host(tmp_path / "home")
    reply = host.handle(SyncDelta(1, b"\1" * 32, b"\2" * 32, [], [], True))
    assert isinstance(reply, SyncDone) and "did not offer" in reply.error


def test_the_canonical_manifest_round_trips_and_names_the_tree(tmp_path):
    tree = scan_dir(make_src(tmp_path / "src"))
    data = encode_manifest(tree.entries)
    assert decode_manifest(data) == tree.entries
    assert tree_id(tree.entries) == tree.id
    with pytest.raises(EntryError, match="truncated"):
        decode_manifest(data[:-1])


@pytest.mark.parametrize(
    "entry",
    [
        [b"x" * 4097, FILE, 0o644, 1, 0, b"\0" * 32],
        [b"x", FILE, 0o644, 1 << 63, 0, b"\0" * 32],
        [b"x", FILE, 0o644, 1, 1 << 63, b"\0" * 32],
    ],
)
def test_entries_the_canonical_form_cannot_hold_are_refused(entry):
    with pytest.raises(EntryError):
        check_entry(entry, set(), None)


def test_a_damaged_stored_manifest_makes_the_tree_not_ready(tmp_path):
    src, home = make_src(tmp_path / "src"), tmp_path / "home"
    tree = scan_dir(src)
    first = Host(home)
    _, done = first.sync(tree)
    manifest = Path(os.fsdecode(done.path) + ".manifest")
    data = bytearray(manifest.read_bytes())
    data[-1] ^= 1
    manifest.write_bytes(bytes(data))
    host = fresh(home, first)
    assert not host.offer(tree).ready
    assert stat.S_ISREG(manifest.lstat().st_mode)
    # the store stays usable: the next sync rebuilds the tree
    _, again = host.sync(tree)
    assert again.error == "" and synced(Path(os.fsdecode(again.path))) == snapshot(src)


@pytest.mark.usefixtures("no_leftover_processes")
def test_over_ssh_a_one_file_change_sends_one_entry_and_one_file(cluster, tmp_path):
    """Real hosts: the second sync's wire cost is the change, not the 3,000-entry manifest
    (about 250 KB whole), and the host's tree is exactly the new one."""
    src, known = tmp_path / "src", tmp_path / "known"
    for i in range(3000):
        folder = src / f"d{i % 30:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-with-a-longish-name-{i:05d}.txt").write_text(f"{i}\n")
    old = scan_dir(src)
    remember(known, old.id, old.entries)
    first = sync(cluster, ["host4"], dataclasses.replace(old, known=known))["host4"]
    assert isinstance(first, SyncReport), first
    (src / "d07" / "file-with-a-longish-name-00007.txt").write_text("changed\n")
    new = scan_dir(src)
    remember(known, new.id, new.entries)
    report = sync(cluster, ["host4"], dataclasses.replace(new, known=known))["host4"]
    assert isinstance(report, SyncReport), report
    assert report.files_sent == 1 and report.reused == 2999
    assert report.wire_bytes < 8 << 10, report  # offer, one-entry delta, want bitmap, 8 bytes
    assert synced(remote_tree(cluster, "host4", new)) == snapshot(src)
    assert not remote_tree(cluster, "host4", old).exists()  # updated in place


def test_trees_stored_before_the_canonical_manifest_still_serve_as_the_base(tmp_path):
    """After an upgrade, the first re-sync builds on the host's trees (their manifests in the
    earlier msgpack form) instead of sending every file again."""
    src, home = make_src(tmp_path / "src"), tmp_path / "home"
    old = scan_dir(src)
    first = Host(home)
    _, done = first.sync(old)
    legacy = msgpack.packb(old.entries, use_bin_type=True)  # as the earlier anet stored it
    legacy_id = hashlib.sha256(legacy).hexdigest()
    trees = home / "deps" / "trees"
    os.rename(os.fsdecode(done.path), trees / legacy_id)
    (trees / f"{old.id.hex()}.manifest").unlink()
    (trees / f"{legacy_id}.manifest").write_bytes(legacy)
    (src / "new.txt").write_text("new\n")
    _, want, again = resync(fresh(home, first), scan_dir(src), tmp_path / "known")
    assert again.error == "" and wanted(want) == 1  # new.txt only
    assert synced(Path(os.fsdecode(again.path))) == snapshot(src)


def test_a_base_it_could_not_take_stays_locked_for_this_sync(tmp_path):
    """flock(2): a failed shared-to-exclusive conversion may drop the shared lock; the sync
    still builds from the base (linking its files), so the lock must be held again."""
    src, home, _, first, old_dir = synced_once(tmp_path)
    host = fresh(home, first)
    (src / "new.txt").write_text("new\n")
    assert not host.offer(scan_dir(src)).ready
    manifest = f"{old_dir}.manifest"
    other = os.open(manifest, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_SH)  # another run's jobs work in the base
    assert host.store._base is not None
    assert not host.store._take(host.store._base, os.fsencode(tmp_path / "taken"))
    os.close(other)  # that run ends
    probe = os.open(manifest, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # our shared lock still keeps a GC out
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)


def test_a_tree_whose_folder_is_gone_is_not_named_as_the_base(tmp_path):
    """A sync killed between taking the base away and removing its manifest leaves the
    manifest alone: a base without its folder would make every file travel again."""
    src, home, _, first, old_dir = synced_once(tmp_path)
    os.rename(old_dir, tmp_path / "taken")
    (src / "new.txt").write_text("new\n")
    assert fresh(home, first).offer(scan_dir(src)).base == b""


def test_the_master_remembers_its_last_scans_for_the_next_delta(tmp_path):
    src = make_src(tmp_path / "src")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    ids = []
    for i in range(KEEP + 2):
        (src / "f1").write_text(f"version {i}\n")
        tree = scan_deps(f"{src}/", environ)
        assert tree.known is not None and recall(tree.known, tree.id) == tree.entries
        ids.append(tree.id)
    assert tree.known is not None
    assert sorted(p.name for p in tree.known.iterdir()) == sorted(i.hex() for i in ids[-KEEP:])
    forged = b"\7" * 32  # a file under an id its bytes do not hash to: not believed
    (tree.known / forged.hex()).write_bytes(encode_manifest(tree.entries))
    assert recall(tree.known, forged) is None


@pytest.mark.parametrize("size, sent", [(2 << 20, 0), (100 << 10, 1)])
def test_earlier_trees_are_searched_only_for_more_than_a_mebibyte(tmp_path, size, sent):
    """A missing file's content is looked for in the base, then in earlier trees when what
    would travel exceeds SEARCH_BYTES (reading their manifests costs more than a small send)."""
    home, data = tmp_path / "home", os.urandom(size)
    one, two = tmp_path / "one", make_src(tmp_path / "two")
    one.mkdir()
    (one / "big.bin").write_bytes(data)
    first = Host(home)
    first.sync(scan_dir(one))
    second = fresh(home, first)
    second.sync(scan_dir(two))  # now the base; `one` stays whole, an earlier tree
    (two / "copy.bin").write_bytes(data)
    _, want, done = resync(fresh(home, second), scan_dir(two), tmp_path / "known")
    assert done.error == "" and wanted(want) == sent
