"""A small delta to a clean base tree costs work in proportion to the change, not the tree.

dispatcher/treedelta.py: when no job ran in the host's previous tree since it was checked,
the new tree is made from it by its touched names alone. These check that the result is
still exactly the new manifest (modes and mtimes of folders included), that nothing else of
the base is touched (not even a chmod: its ctime stays), that a sync cut off midway leaves
the base usable, and the master's side: the delta worked out once for all hosts, and the
digest cache forgetting files that left the tree.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from test_sync import snapshot, synced
from test_sync_inplace import change_everything, fresh, make_src, resync, synced_once
from test_syncstore import Host, close_the_hosts, scan_dir, wanted  # noqa: F401 (the fixture)

from anet.deps import hashcache
from anet.deps import sync as master_sync
from anet.deps.hashcache import open_cache
from anet.deps.known import remember
from anet.deps.manifest import DepsError, Tree, scan
from dispatcher import syncproto, treedelta
from dispatcher.syncproto import DIR, FILE, SyncDelta


def on_disk_as_in(root: Path, entries: list[list[Any]]) -> None:
    """Every entry of the manifest is on disk with its kind, mode, size and mtime (a folder
    gets the owner's rwx added, so it can be cleaned up)."""
    for path, kind, mode, size, mtime_ns, digest in entries:
        st = os.lstat(os.path.join(os.fsencode(root), path))
        if kind == FILE:
            assert (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns) == (mode, size, mtime_ns)
        elif kind == DIR:
            assert stat.S_ISDIR(st.st_mode), path
            assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (mode | 0o700, mtime_ns), path
        else:
            assert os.readlink(os.path.join(os.fsencode(root), path)) == digest


def clean_base(tmp_path: Path) -> tuple[Path, Path, Path, Host, Path]:
    """`make_src` plus a folder the changes never touch, synced once; no job ran there."""
    src = make_src(tmp_path / "src")
    (src / "still").mkdir()
    (src / "still" / "s").write_text("still\n")
    return synced_once(tmp_path, src)


def test_every_kind_of_change_to_a_clean_base_gives_exactly_the_new_tree(tmp_path):
    src, home, known, first, old_dir = clean_base(tmp_path)
    untouched = (old_dir / "still").stat()
    kept = (old_dir / "a" / "x0").stat().st_ino
    change_everything(src)
    new = scan_dir(src)
    frames, want, done = resync(fresh(home, first), new, known)
    assert all(isinstance(f, SyncDelta) for f in frames)
    assert done.error == "", done.error
    assert wanted(want) == 3  # new.txt, a/x3, b
    new_dir = Path(os.fsdecode(done.path))
    assert synced(new_dir) == snapshot(src)
    on_disk_as_in(new_dir, new.entries)
    assert not old_dir.exists()  # in place
    assert (new_dir / "a" / "x0").stat().st_ino == kept
    now = (new_dir / "still").stat()
    assert (now.st_ino, now.st_ctime_ns) == (untouched.st_ino, untouched.st_ctime_ns)  # no chmod
    assert os.listdir(home / "deps" / "staging") == []


def test_a_one_file_change_touches_only_that_file_and_its_folder(tmp_path):
    src, home, known, first, old_dir = clean_base(tmp_path)
    before = {p: os.lstat(p) for p in sorted(old_dir.rglob("*"))}
    (src / "a" / "x7").write_text("changed\n")
    new = scan_dir(src)
    _, want, done = resync(fresh(home, first), new, known)
    assert done.error == "" and wanted(want) == 1
    new_dir = Path(os.fsdecode(done.path))
    on_disk_as_in(new_dir, new.entries)
    changed = {
        p.relative_to(old_dir)
        for p, st in before.items()
        if (lambda now: (now.st_ino, now.st_ctime_ns) != (st.st_ino, st.st_ctime_ns))(
            os.lstat(new_dir / p.relative_to(old_dir))
        )
    }
    assert changed == {Path("a"), Path("a/x7")}  # the new file, and the folder it came into


def test_a_sync_cut_off_after_its_plan_leaves_the_clean_base_usable(tmp_path):
    src, home, known, first, old_dir = clean_base(tmp_path)
    old = scan_dir(src)
    before = snapshot(old_dir)
    (src / "a" / "x7").write_text("changed\n")
    (src / "f1").unlink()
    host = fresh(home, first)
    state = host.offer(scan_dir(src))
    host.rid += 1
    tree = scan_dir(src)
    for frame in master_sync._manifest_frames(host.rid, _with(tree, known), state.base):
        host.handle(frame)
    host.store.abandon_all()  # the connection is lost before the files arrive
    host.store.close()
    again = Host(home)
    assert again.offer(old).ready
    assert snapshot(old_dir) == before
    on_disk_as_in(old_dir, old.entries)


def _with(tree: Tree, known: Path) -> Tree:
    """The tree as scanned with the master's remembered manifests in `known`."""
    return dataclasses.replace(tree, known=known)


def test_four_hosts_naming_one_base_cost_one_delta(tmp_path, monkeypatch):
    src, known = make_src(tmp_path / "src"), tmp_path / "known"
    old = scan_dir(src)
    remember(known, old.id, old.entries)
    (src / "f1").write_text("changed\n")
    new = _with(scan_dir(src), known)
    calls = []
    real = master_sync.manifest_delta

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(master_sync, "manifest_delta", counted)
    frames = [list(master_sync._manifest_frames(rid, new, old.id)) for rid in range(4)]
    assert len(calls) == 1
    assert all(isinstance(f[0], SyncDelta) and f[0].rid == rid for rid, f in enumerate(frames))
    assert [f[0].entries for f in frames] == [frames[0][0].entries] * 4


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scanned_2000_files(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of 2,000 small files, scanned once with a digest cache: (folder, cache)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2000):
        (src / f"f{i}").write_text(f"file {i}\n")
    cache_path = tmp_path / "hashes"
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
    return src, cache_path


def test_the_digest_cache_forgets_files_that_left_the_tree(tmp_path):
    src, cache_path = scanned_2000_files(tmp_path)
    full = du(cache_path)
    for i in range(1, 2000):
        (src / f"f{i}").unlink()
    (src / "f0").write_text("changed\n")
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 1
    assert du(cache_path) < full // 10
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 0


@pytest.mark.parametrize(
    "removed, changed",
    [
        ([b"a", b"a"], []),  # a path named twice: the general path judges it
        ([], [[b"x", FILE, 0o644, 1, 0, b"\0" * 32]] * 2),
        ([b"p%d" % i for i in range(treedelta.MAX_CHANGES + 1)], []),  # too big
    ],
)
def test_deltas_the_short_path_does_not_take(removed, changed):
    assert treedelta.merge([], removed, changed) is None


def test_a_rescan_checks_in_full_only_what_changed_since_the_last_scan(tmp_path, monkeypatch):
    src, cache_path, known = make_src(tmp_path / "src"), tmp_path / "hashes", tmp_path / "known"
    with open_cache(cache_path) as cache:
        first = scan(f"{src}/", cache, known)
    remember(known, first.id, first.entries)
    (src / "a" / "x4").write_text("edited\n")
    checked: list[bytes] = []
    real = syncproto.check_entry

    def counted(entry: Any, *args: Any) -> Any:
        checked.append(entry[0])
        return real(entry, *args)

    monkeypatch.setattr(syncproto, "check_entry", counted)
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache, known)
    assert checked == [b"a/x4"]


def test_an_unsafe_entry_added_since_the_last_scan_is_still_refused(tmp_path):
    src, cache_path, known = make_src(tmp_path / "src"), tmp_path / "hashes", tmp_path / "known"
    with open_cache(cache_path) as cache:
        first = scan(f"{src}/", cache, known)
    remember(known, first.id, first.entries)
    os.symlink("/etc/passwd", src / "a" / "passwd")
    with open_cache(cache_path) as cache, pytest.raises(DepsError, match="absolute path"):
        scan(f"{src}/", cache, known)
    (src / "a" / "passwd").unlink()
    shutil.rmtree(src / "b")  # its file goes with it: no entry is left without its folder
    with open_cache(cache_path) as cache:
        assert scan(f"{src}/", cache, known).files == first.files - 1


def test_the_new_manifest_is_the_base_with_the_touched_entries_spliced(tmp_path):
    src = make_src(tmp_path / "src")
    old = scan_dir(src)
    change_everything(src)
    new = scan_dir(src)
    removed, changed = syncproto.manifest_delta(old.entries, new.entries)
    data, starts = syncproto.encode_manifest(old.entries), []
    assert syncproto.decode_manifest(data, starts) == old.entries
    merged = treedelta.merge(old.entries, removed, changed)
    assert merged is not None and merged[0] == new.entries
    touched = treedelta.Touched(old.entries, *merged)
    assert treedelta.splice(data, starts, touched) == syncproto.encode_manifest(new.entries)


def test_a_one_file_edit_appends_its_digest_instead_of_rewriting_the_cache(tmp_path):
    src, cache_path = scanned_2000_files(tmp_path)
    (cache_file,) = cache_path.iterdir()
    inode, size = cache_file.stat().st_ino, cache_file.stat().st_size
    (src / "f7").write_text("edited\n")
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 1
    assert cache_file.stat().st_ino == inode  # not written anew
    assert size < cache_file.stat().st_size < size + 300
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 0  # the appended digest is read back


def test_a_torn_record_at_the_end_of_the_cache_costs_only_what_it_held(tmp_path):
    src = make_src(tmp_path / "src")
    cache_path = tmp_path / "hashes"
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
    (cache_file,) = cache_path.iterdir()
    with open(cache_file, "ab") as f:
        f.write(b"\xff\x00 half a record")  # a run cut off while appending
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
        assert cache.hashed == 0
    (src / "f1").write_text("edited\n")
    for hashed in (1, 0):  # the edit's digest is not appended after the torn record
        with open_cache(cache_path) as cache:
            scan(f"{src}/", cache)
            assert cache.hashed == hashed


def test_a_deps_entry_named_dependencies_survives_a_full_manifest_update(tmp_path):
    """The user's own `dependencies` wins over anet's link (docs/deps.md), also when a
    master that does not remember the base sends the whole manifest to a clean base."""
    src = make_src(tmp_path / "src")
    (src / "dependencies").write_text("the user's own\n")
    src, home, _, first, _ = synced_once(tmp_path, src)
    (src / "f1").write_text("changed\n")
    new = scan_dir(src)
    frames, _, done = resync(fresh(home, first), new, tmp_path / "nothing-known")
    assert all(isinstance(f, syncproto.SyncEntries) for f in frames)
    assert done.error == ""
    new_dir = Path(os.fsdecode(done.path))
    assert (new_dir / "dependencies").read_text() == "the user's own\n"
    assert snapshot(new_dir) == snapshot(src)


def test_a_deps_entry_named_dependencies_added_by_a_delta_replaces_anets_link(tmp_path):
    src, home, known, first, old_dir = clean_base(tmp_path)
    assert os.readlink(old_dir / "dependencies") == "."
    (src / "dependencies").write_text("the user's own\n")
    frames, _, done = resync(fresh(home, first), scan_dir(src), known)
    assert all(isinstance(f, SyncDelta) for f in frames) and done.error == ""
    new_dir = Path(os.fsdecode(done.path))
    assert (new_dir / "dependencies").read_text() == "the user's own\n"
    assert snapshot(new_dir) == snapshot(src)


def test_the_sqlite_digest_cache_of_an_older_anet_goes_once_the_new_one_is_made(tmp_path):
    """anet before the per-argument files kept every digest in one SQLite file beside the
    folder, which nothing reads any more: it would lie in the user's cache for good."""
    old = [tmp_path / f"hashes.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]
    for path in old:
        path.write_bytes(b"x" * 1000)
    _, cache_path = scanned_2000_files(tmp_path)
    assert cache_path.is_dir() and not any(path.exists() for path in old)


def _cache_files(folder: Path, names: list[str], age_days: float) -> None:
    when = time.time() - age_days * 86400
    for name in names:
        (folder / name).write_bytes(b"digests of a deps folder once synced\n")
        os.utime(folder / name, (when, when))


def test_digest_files_of_folders_not_synced_for_a_month_go_when_a_cache_is_written(tmp_path):
    """One file per deps argument ever synced, each up to a megabyte: without an end they
    would pile up in the user's cache for good. Losing one costs its folder one re-hash."""
    cache_path = tmp_path / "hashes"
    cache_path.mkdir()
    _cache_files(cache_path, ["a" * 32, "b" * 32], age_days=hashcache.KEEP_DAYS + 1)
    _cache_files(cache_path, ["c" * 32], age_days=hashcache.KEEP_DAYS - 1)
    _cache_files(cache_path, [f".{'d' * 32}.4242"], age_days=1)  # a save a crash left
    src = make_src(tmp_path / "src")
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
    left = sorted(path.name for path in cache_path.iterdir())
    assert "c" * 32 in left and len(left) == 2  # the recent one and this folder's own
    with open_cache(cache_path) as cache:  # and this folder's own is its own
        scan(f"{src}/", cache)
        assert cache.hashed == 0


def test_the_digest_cache_keeps_at_most_its_newest_files(tmp_path):
    cache_path = tmp_path / "hashes"
    cache_path.mkdir()
    for i in range(hashcache.MAX_FILES + 5):
        _cache_files(cache_path, [f"{i:032x}"], age_days=1 + i / 1000)  # 0 is the newest
    src = make_src(tmp_path / "src")
    with open_cache(cache_path) as cache:
        scan(f"{src}/", cache)
    left = {path.name for path in cache_path.iterdir()}
    assert len(left) == hashcache.MAX_FILES
    assert f"{0:032x}" in left and f"{hashcache.MAX_FILES + 4:032x}" not in left
