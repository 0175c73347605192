"""A no-op re-sync checks the tree's files only once a job may have changed them.

The store keeps, per tree, a marker that says "checked whole, and no job has started in it
since" (dispatcher/treeclean.py). These pin who sets it, who clears it, and that a dispatcher
whose jobs run in the tree keeps every other sync checking in full until it ends; the last
test drives the same through real sshd hosts and real jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster
from test_sync import make_deps, remote_tree, scan_tree, snapshot, sync, synced
from test_sync_inplace import fresh, synced_once
from test_syncstore import Host, close_the_hosts, make, scan_dir, wanted  # noqa: F401

import anet
from anet.deps.manifest import Tree
from anet.deps.sync import SyncReport, _manifest_frames
from anet.remote.connect import SshOptions
from dispatcher.syncproto import FILE, SyncCommit, SyncDone, SyncFiles, SyncWant


@pytest.fixture
def lstats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every path os.lstat / os.stat is asked about while the test runs."""
    seen: list[bytes] = []
    real_lstat, real_stat = os.lstat, os.stat

    def lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.fsencode(path) if isinstance(path, (str, bytes)) else b"")
        return real_lstat(path, *args, **kwargs)

    def stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.fsencode(path) if isinstance(path, (str, bytes)) else b"")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "stat", stat)
    yield seen


def files_looked_at(host: Host, tree: Tree, lstats: list[bytes]) -> int:
    """Offer the tree (it must be ready) and count the stats of paths inside it."""
    lstats.clear()
    assert host.offer(tree).ready
    inside = os.fsencode(host.store._tree_dir(tree.id)) + b"/"
    return sum(path.startswith(inside) for path in lstats)


def test_a_no_op_resync_of_a_tree_no_job_ran_in_looks_at_none_of_its_files(tmp_path, lstats):
    home, tree = tmp_path / "home", scan_dir(make(tmp_path / "src", 50))
    first = Host(home)
    first.sync(tree)
    first.store.close()
    assert files_looked_at(Host(home), tree, lstats) == 0


def test_a_job_in_the_tree_makes_the_next_syncs_check_it_until_one_finds_it_sound(tmp_path, lstats):
    home, tree = tmp_path / "home", scan_dir(make(tmp_path / "src", 50))
    runner = Host(home)
    runner.sync(tree)
    assert runner.store.jobs_cwd() == os.fsencode(runner.store._tree_dir(tree.id))
    other = Host(home)
    assert files_looked_at(other, tree, lstats) >= 50
    other.store.close()
    # The runner lives (its jobs may still write): every sync checks, none marks it sound.
    assert files_looked_at(Host(home), tree, lstats) >= 50
    assert files_looked_at(Host(home), tree, lstats) >= 50
    for host in Host.made:
        host.store.close()
    assert files_looked_at(Host(home), tree, lstats) >= 50  # the one that finds it sound
    assert files_looked_at(Host(home), tree, lstats) == 0


def test_markers_go_with_their_trees(tmp_path):
    """An in-place update renames the base to another id, the GC deletes old trees: no
    marker is left to vouch for a tree of the same id built later."""
    home, src = tmp_path / "home", make(tmp_path / "src", 10)
    for round_ in range(6):
        (src / "f0").write_text(f"round {round_}\n")
        host = Host(home)
        host.sync(scan_dir(src))
        host.store.close()
    trees = home / "deps" / "trees"
    ids = {p.name for p in trees.iterdir() if p.is_dir()}
    markers = {p.name[: -len(".jobs")] for p in trees.glob("*.jobs")}
    assert markers == ids


def run_jobs(cluster: SshdCluster, name: str, tree: Tree, commands: list[str]) -> list[str]:
    async def main() -> list[str]:
        options = SshOptions(config=cluster.ssh_config)
        async with anet.Cluster([name], ssh=options, deps=tree) as c:
            return [r.stdout.decode() async for r in c.run(commands)]

    return asyncio.run(main())


def test_over_ssh_a_job_that_edits_its_deps_gets_them_back_and_syncs_alone_check_nothing(
    cluster, tmp_path
):
    deps = make_deps(tmp_path / "deps")
    tree = scan_tree(deps)
    assert isinstance(sync(cluster, ["host3"], tree)["host3"], SyncReport)
    stored = remote_tree(cluster, "host3", tree) / "prog.py"
    # Not a job: nothing tells the store that the tree changed, and it is not looked at.
    original = stored.read_bytes()
    stored.write_bytes(b"# edited by hand\n")
    again = sync(cluster, ["host3"], tree)["host3"]
    assert isinstance(again, SyncReport) and again.files_sent == 0
    stored.write_bytes(original)
    mtime = next(e[4] for e in tree.entries if e[0] == b"prog.py")
    os.utime(stored, ns=(mtime, mtime))  # as synced
    # A job's edit is found by the next sync, which sends that one file again.
    assert run_jobs(cluster, "host3", tree, ["echo '# a job' >> prog.py; echo ok"]) == ["ok\n"]
    fixed = sync(cluster, ["host3"], tree)["host3"]
    assert isinstance(fixed, SyncReport) and fixed.files_sent == 1
    assert stored.read_bytes() == original


def plan(host: Host, tree: Tree, known: Path) -> SyncWant:
    """Offer, then the manifest as the master sends it: the host's answer."""
    state = host.offer(tree)
    assert not state.ready
    host.rid += 1
    reply = None
    for frame in _manifest_frames(host.rid, dataclasses.replace(tree, known=known), state.base):
        reply = host.handle(frame)
    assert isinstance(reply, SyncWant), reply
    return reply


def test_a_one_file_change_of_a_clean_tree_looks_at_none_of_its_other_files(tmp_path, lstats):
    src, home, known, first, old_dir = synced_once(tmp_path)
    kept_inode = (old_dir / "a" / "x0").stat().st_ino
    (src / "a" / "x1").write_text("changed\n")
    new = scan_dir(src)
    host = fresh(home, first)
    lstats.clear()
    want = plan(host, new, known)
    done = host.finish(host.rid, new, want)
    assert done.error == "" and wanted(want) == 1
    unchanged = [e[0] for e in new.entries if e[1] == FILE and e[0] != b"a/x1"]
    assert len(unchanged) > 30
    looked_at = [
        p for p in unchanged for s in lstats if s.endswith(b"/" + p) or s == p.split(b"/")[-1]
    ]  # a whole path, or a name beside the fd of its folder
    assert looked_at == []  # only what changed was touched
    new_dir = Path(os.fsdecode(done.path))
    assert synced(new_dir) == snapshot(src)
    assert (new_dir / "a" / "x0").stat().st_ino == kept_inode  # updated in place


def test_a_job_in_the_base_while_the_new_tree_travels_is_caught_at_the_switch(tmp_path):
    """Planned on a clean base (its files not looked at), then a job of another run edits
    one of them and ends before the commit: the base must not become the new tree."""
    src, home, known, first, old_dir = synced_once(tmp_path)
    old = scan_dir(src)
    (src / "a" / "x1").write_text("changed\n")
    new = scan_dir(src)
    host = fresh(home, first)
    want = plan(host, new, known)
    runner = Host(home)
    assert runner.offer(old).ready and runner.store.jobs_cwd()
    victim = old_dir / "a" / "x2"
    st = victim.stat()
    victim.write_bytes(b"x" * st.st_size)  # same size; the mtime moves
    runner.store.close()
    done = host.finish(host.rid, new, want)
    assert "changed during the sync" in done.error
    assert victim.read_bytes() == b"x" * st.st_size and old_dir.is_dir()  # left as it was
    host.store.close()
    retry = Host(home)
    again = plan(retry, new, known)
    assert wanted(again) == 2  # the edited file travels too
    done = retry.finish(retry.rid, new, again)
    assert done.error == "" and synced(Path(os.fsdecode(done.path))) == snapshot(src)


def files_of(tree: Tree, want: SyncWant) -> list[bytes]:
    """The wanted files' contents, in want order."""
    return [
        Path(os.fsdecode(tree.local_path(i))).read_bytes()
        for i, entry in enumerate(tree.entries)
        if entry[1] == FILE and want.want[i >> 3] & (1 << (i & 7))
    ]


def test_small_files_travel_many_to_a_frame(tmp_path):
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src", 7))
    rid, want = host.begin(tree)
    contents = files_of(tree, want)
    assert host.handle(SyncFiles(rid, 4, b"".join(contents[:4]))) is None
    assert host.handle(SyncFiles(rid, 3, b"".join(contents[4:]))) is None
    done = host.handle(SyncCommit(rid))
    assert isinstance(done, SyncDone) and done.error == ""
    assert snapshot(Path(os.fsdecode(done.path))) == {
        **snapshot(tmp_path / "src"),
        b"dependencies": ("link", b"."),
    }


@pytest.mark.parametrize(
    "count, change, error",
    [
        (3, lambda data: data[:-1] + b"?", "arrived incomplete or corrupt"),
        (3, lambda data: data + b"more", "past the files' sizes"),
        (3, lambda data: data[:-1], "arrived incomplete or corrupt"),
        (6, lambda data: data, "not asked for"),
    ],
)
def test_a_bad_frame_of_whole_files_fails_the_sync_and_writes_nothing(
    tmp_path, count, change, error
):
    host, tree = Host(tmp_path / "home"), scan_dir(make(tmp_path / "src"))
    rid, want = host.begin(tree)
    contents = files_of(tree, want)
    assert len(contents) == 5
    reply = host.handle(SyncFiles(rid, count, change(b"".join(contents[:count]))))
    assert isinstance(reply, SyncDone) and error in reply.error, reply
    assert os.listdir(tmp_path / "home" / "deps" / "staging") == []
    _, done = host.sync(tree)  # the store itself is fine
    assert done.error == ""
