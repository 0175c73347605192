"""Deps sync against real sshd hosts: what lands on the host, what travels, what is refused.

Each fixture host keeps its store under its own ANET_HOME, a local folder, so the tests read
the synced trees straight from disk and compare them with the local folder, byte for byte,
mode for mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster

import anet
from anet.deps.hashcache import open_cache
from anet.deps.manifest import DepsError, Tree, scan
from anet.deps.sync import SyncReport
from anet.errors import HostError
from anet.remote.connect import SshOptions

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def make_deps(root: Path) -> Path:
    root.mkdir()
    (root / "prog.py").write_text("import sys\nprint('square', int(sys.argv[1]) ** 2)\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "data").mkdir()
    for i in range(20):
        (root / "data" / f"part{i}.txt").write_text(f"part {i}\n" * (i + 1))
    (root / "data" / "empty").write_bytes(b"")
    os.symlink("data/part1.txt", root / "first")
    return root


def scan_tree(path: Path, contents: bool = True) -> Tree:
    with open_cache(None) as cache:
        return scan(str(path) + ("/" if contents else ""), cache)


def sync(cluster: SshdCluster, names: list[str], tree: Tree, **kw) -> dict[str, object]:
    """Sync one tree to the named hosts; each host's SyncReport or HostError."""

    async def main() -> dict[str, object]:
        options = SshOptions(config=cluster.ssh_config)
        out: dict[str, object] = {}
        async with anet.Cluster(names, ssh=options, deps=tree, **kw) as c:
            for name in names:
                try:
                    await c.ready_session(name)
                    out[name] = c.sync_reports[name]
                except HostError as exc:
                    out[name] = exc
        return out

    return asyncio.run(main())


def remote_tree(cluster: SshdCluster, name: str, tree: Tree) -> Path:
    return cluster[name].anet_home / "deps" / "trees" / tree.id.hex()


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Every entry under root: kind, permission bits, content or link target."""
    out: dict[bytes, tuple] = {}
    broot = os.fsencode(root)
    for folder, dirs, files in os.walk(broot):
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, broot)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return out


def synced(root: Path) -> dict[bytes, tuple]:
    """`snapshot` of a synced tree, checking and leaving out the one entry anet adds to it:
    `dependencies -> .`, for batches written for the original ANet's layout."""
    snap = snapshot(root)
    assert snap.pop(b"dependencies") == ("link", b".")
    return snap


def test_first_sync_makes_an_identical_copy_on_every_host(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    tree = scan_tree(deps)
    reports = sync(cluster, cluster.names[:2], tree)
    for name in cluster.names[:2]:
        report = reports[name]
        assert isinstance(report, SyncReport), report
        assert report.files_sent + report.reused == tree.files - 1  # the empty file needs none
        assert synced(remote_tree(cluster, name, tree)) == snapshot(deps)
        mode = stat.S_IMODE(os.stat(cluster[name].anet_home / "deps").st_mode)
        assert mode == 0o700


def test_no_op_resync_sends_only_the_offer(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    big = deps / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    tree = scan_tree(deps)
    first = sync(cluster, ["host1"], tree)["host1"]
    assert isinstance(first, SyncReport) and first.wire_bytes > 3 << 20
    again = sync(cluster, ["host1"], tree)["host1"]
    assert isinstance(again, SyncReport)
    assert again.files_sent == 0 and again.bytes_sent == 0
    assert again.wire_bytes < 200, again  # one SyncOffer frame (plus Setup and heartbeats)


def test_one_changed_file_is_the_only_one_sent(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    (deps / "big.bin").write_bytes(os.urandom(2 << 20))
    assert isinstance(sync(cluster, ["host2"], scan_tree(deps))["host2"], SyncReport)
    (deps / "data" / "part3.txt").write_text("changed\n")
    tree = scan_tree(deps)
    report = sync(cluster, ["host2"], tree)["host2"]
    assert isinstance(report, SyncReport)
    assert report.files_sent == 1 and report.bytes_sent == len("changed\n")
    assert report.reused == tree.files - 2  # everything else came from the earlier tree
    assert report.wire_bytes < 64 << 10
    assert synced(remote_tree(cluster, "host2", tree)) == snapshot(deps)


def test_deleted_file_mode_change_and_new_symlink_follow_the_local_tree(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    assert isinstance(sync(cluster, ["host3"], scan_tree(deps))["host3"], SyncReport)
    (deps / "data" / "part5.txt").unlink()
    (deps / "prog.py").chmod(0o700)
    os.symlink("../run.sh", deps / "data" / "runner")
    tree = scan_tree(deps)
    report = sync(cluster, ["host3"], tree)["host3"]
    assert isinstance(report, SyncReport)
    assert report.files_sent == 0  # a mode change is a local copy on the host, not a transfer
    remote = remote_tree(cluster, "host3", tree)
    assert not (remote / "data" / "part5.txt").exists()
    assert stat.S_IMODE((remote / "prog.py").stat().st_mode) == 0o700
    assert os.readlink(remote / "data" / "runner") == "../run.sh"
    assert synced(remote) == snapshot(deps)


def test_odd_file_names_survive(cluster, tmp_path):
    deps = tmp_path / "odd"
    deps.mkdir()
    names = [b"with space", b"new\nline", b"latin1-\xe9t\xe9", b"-dash", b"star*?[x]", b"quote'\""]
    for i, name in enumerate(names):
        with open(os.path.join(os.fsencode(deps), name), "wb") as f:
            f.write(b"content %d\n" % i)
    tree = scan_tree(deps)
    report = sync(cluster, ["host4"], tree)["host4"]
    assert isinstance(report, SyncReport)
    remote = remote_tree(cluster, "host4", tree)
    assert sorted(os.listdir(os.fsencode(remote))) == sorted([*names, b"dependencies"])
    assert synced(remote) == snapshot(deps)


def test_folder_without_trailing_slash_syncs_the_folder_itself(cluster, tmp_path):
    deps = make_deps(tmp_path / "mydeps")
    tree = scan_tree(deps, contents=False)
    assert isinstance(sync(cluster, ["host1"], tree)["host1"], SyncReport)
    remote = remote_tree(cluster, "host1", tree)
    assert sorted(os.listdir(remote)) == ["dependencies", "mydeps"]
    assert snapshot(remote / "mydeps") == snapshot(deps)


def test_hosts_sharing_one_store_sync_it_once(make_cluster, tmp_path):
    hosts = make_cluster(3)
    shared = hosts["host1"].anet_home
    shared.mkdir(parents=True)
    for name in ("host2", "host3"):  # like one NFS home seen by several machines
        hosts[name].anet_home.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(shared, hosts[name].anet_home)
    deps = make_deps(tmp_path / "deps")
    (deps / "big.bin").write_bytes(os.urandom(4 << 20))
    tree = scan_tree(deps)
    reports = sync(hosts, hosts.names, tree)
    assert all(isinstance(r, SyncReport) for r in reports.values()), reports
    copied = [r for r in reports.values() if r.files_sent]  # type: ignore[union-attr]
    assert len(copied) == 1, reports
    assert sum(r.wire_bytes for r in reports.values()) < (4 << 20) * 1.2  # type: ignore[union-attr]
    assert synced(shared / "deps" / "trees" / tree.id.hex()) == snapshot(deps)


def test_interrupted_sync_keeps_the_good_copy_and_is_redone(make_cluster, tmp_path):
    hosts = make_cluster(1)
    host = hosts["host1"]
    deps = make_deps(tmp_path / "deps")
    good = scan_tree(deps)
    assert isinstance(sync(hosts, ["host1"], good)["host1"], SyncReport)
    (deps / "big.bin").write_bytes(os.urandom(40 << 20))
    new = scan_tree(deps)
    killed: list[int] = []

    def kill_midway(_host: str, n: int) -> None:
        progress.append(n)
        if sum(progress) > 8 << 20 and not killed:
            for pid, cmd in host.processes():
                if "python" in cmd:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    progress: list[int] = []
    outcome = sync(hosts, ["host1"], new, sync_progress=kill_midway)["host1"]
    assert killed and isinstance(outcome, HostError), outcome
    trees = host.anet_home / "deps" / "trees"
    assert not (trees / new.id.hex()).exists()  # never a half-synced tree
    assert synced(trees / good.id.hex()) == snapshot_without(deps, "big.bin")
    redone = sync(hosts, ["host1"], new)["host1"]
    assert isinstance(redone, SyncReport), redone
    assert synced(trees / new.id.hex()) == snapshot(deps)
    staging = host.anet_home / "deps" / "staging"
    assert os.listdir(staging) == []  # the killed dispatcher's half tree was cleaned up


def snapshot_without(root: Path, name: str) -> dict[bytes, tuple]:
    snap = snapshot(root)
    del snap[name.encode()]
    return snap


def test_a_200_mb_file_arrives_intact(make_cluster, tmp_path):
    hosts = make_cluster(1)
    deps = tmp_path / "deps"
    deps.mkdir()
    block = os.urandom(1 << 20)
    with open(deps / "huge.bin", "wb") as f:
        for i in range(200):
            f.write(block[i:] + block[:i])
    tree = scan_tree(deps)
    report = sync(hosts, ["host1"], tree)["host1"]
    assert isinstance(report, SyncReport) and report.bytes_sent == 200 << 20
    assert synced(remote_tree(hosts, "host1", tree)) == snapshot(deps)


@pytest.mark.parametrize(
    ("target", "message"),
    [("/etc", "absolute path"), ("..", "outside the tree"), ("sub/../../x", "outside the tree")],
)
def test_master_refuses_escaping_symlinks_before_sending(tmp_path, target, message):
    deps = make_deps(tmp_path / "deps")
    (deps / "sub").mkdir()
    os.symlink(target, deps / "escape")
    with pytest.raises(DepsError, match=message):
        scan_tree(deps)


def test_jobs_run_inside_their_deps_on_every_host(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"python3 prog.py {i}; cat first\n" for i in range(40)))
    hosts = [arg for name in cluster.names for arg in ("-S", f"2/{name}")]
    done = subprocess.run(
        [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *hosts,
         "--format", "jsonl", str(batch), str(deps) + "/"],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    import json

    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["id"] for r in records) == list(range(40))
    for r in records:
        assert r["stdout"] == f"square {r['id'] ** 2}\npart 1\npart 1\n"
    assert len({r["host"] for r in records}) > 1


def test_missing_deps_is_one_line_and_nothing_runs(cluster, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("touch ran\n")
    done = subprocess.run(
        [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), "-S", "host1",
         str(batch), str(tmp_path / "nowhere") + "/"],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 255
    assert done.stderr.decode().strip().splitlines() == [
        f"anet: deps '{tmp_path / 'nowhere'}/' does not exist"
    ]


def test_anet_sync_command_reports_each_host(cluster, tmp_path):
    deps = make_deps(tmp_path / "deps")
    argv = [sys.executable, "-m", "anet", "sync", "--ssh-config", str(cluster.ssh_config),
            "-S", "host1", "-S", "host2", str(deps) + "/"]  # fmt: skip
    first = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    lines = again.stderr.decode().splitlines()
    assert lines[0].startswith("deps: 25 entries, 23 files")
    assert [line.split()[:4] for line in lines[2:]] == [
        ["host1", "up", "to", "date"], ["host2", "up", "to", "date"]
    ]  # fmt: skip


@pytest.mark.root("the test mounts a small tmpfs")
def test_a_full_disk_fails_that_host_only_and_the_batch_runs_elsewhere(make_cluster, tmp_path):
    hosts = make_cluster(2)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        hosts["host2"].anet_home.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(small, hosts["host2"].anet_home)
        deps = make_deps(tmp_path / "deps")
        (deps / "big.bin").write_bytes(os.urandom(8 << 20))
        batch = tmp_path / "batch.txt"
        batch.write_text("".join(f"python3 prog.py {i}\n" for i in range(20)))
        done = subprocess.run(
            [sys.executable, "-m", "anet", "--ssh-config", str(hosts.ssh_config),
             "-S", "host1", "-S", "host2", "--format", "jsonl", str(batch), str(deps) + "/"],
            capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        import json

        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(r["id"] for r in records) == list(range(20))
        assert {r["host"] for r in records} == {"host1"}
        assert "host2: deps sync failed: disk full on the host" in done.stderr.decode()
        assert os.listdir(small / "deps" / "staging") == []  # the half tree was removed
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def hostile(case: str) -> list:
    """What a buggy or hostile master could send: the dispatcher must refuse each."""
    from dispatcher.syncproto import DIR, FILE, LINK

    digest = hashlib.sha256(b"x").digest()
    return {
        "dotdot": [[b"../evil", FILE, 0o644, 1, 0, digest]],
        "absolute": [[b"/tmp/evil", FILE, 0o644, 1, 0, digest]],
        "through a symlink": [
            [b"a", LINK, 0o777, 0, 0, b"."],
            [b"a/evil", FILE, 0o644, 1, 0, digest],
        ],
        "undeclared parent": [[b"nodir/evil", FILE, 0o644, 1, 0, digest]],
        "escaping link": [[b"d", DIR, 0o755, 0, 0, b""], [b"d/l", LINK, 0o777, 0, 0, b"../../x"]],
    }[case]


@pytest.mark.parametrize(
    "case", ["dotdot", "absolute", "through a symlink", "undeclared parent", "escaping link"]
)
def test_dispatcher_refuses_escaping_entries_from_the_master(make_cluster, tmp_path, case):
    from dispatcher.syncproto import SyncDone, SyncEntries, tree_id

    hosts = make_cluster(1)
    entries = hostile(case)

    async def main() -> object:
        async with anet.Cluster(["host1"], ssh=SshOptions(config=hosts.ssh_config)) as c:
            session = await c.ready_session("host1")
            with session.request() as req:
                session.send(SyncEntries(req.rid, tree_id(entries), entries, True))
                return await req.get(30)

    reply = asyncio.run(main())
    assert isinstance(reply, SyncDone) and reply.error.startswith("refused:"), reply
    home = hosts["host1"].anet_home
    written = {p.name for p in home.parent.rglob("*evil*")} | {p.name for p in home.rglob("x")}
    assert written == set()
    assert not Path("/tmp/evil").exists()


def test_two_runs_with_different_deps_on_one_host_each_see_their_own(cluster, tmp_path):
    runs = []
    for name in ("a", "b"):
        deps = tmp_path / name
        deps.mkdir()
        (deps / "version").write_text(f"deps {name}\n")
        batch = tmp_path / f"batch-{name}.txt"
        batch.write_text("sleep 0.05; cat version\n" * 30)
        runs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "anet",
                    "--ssh-config",
                    str(cluster.ssh_config),
                    "-S",
                    "3/host1",
                    "--format",
                    "jsonl",
                    "--no-journal",
                    str(batch),
                    f"{deps}/",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        )
    import json

    for name, proc in zip(("a", "b"), runs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == 30
        assert {r["stdout"] for r in records} == {f"deps {name}\n"}


def test_a_folder_a_job_swapped_for_a_symlink_cannot_taint_the_next_tree(make_cluster, tmp_path):
    """A job replaces data/ in its deps by a symlink to look-alike files (same names, sizes,
    modes, mtimes; other bytes). The next tree reuses data/ from this one: it must get the
    master's bytes, never the look-alikes, and be reported ready only when it matches."""
    own = make_cluster(1)
    deps = make_deps(tmp_path / "deps")
    elsewhere = tmp_path / "elsewhere"
    vandal = (
        f"cp -rp data {elsewhere} && (cd {elsewhere} && for f in part*; do"
        " tr a-z0-9 b-za1-90 < $f > x && touch -r $f x && chmod --reference=$f x && mv x $f;"
        f" done) && rm -r data && ln -s {elsewhere} data"
    )
    batch = tmp_path / "batch.txt"
    batch.write_text(vandal + "\n")
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(own.ssh_config), "-S", "host1"]
    done = subprocess.run(
        [*argv, "--no-journal", str(batch), f"{deps}/"], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (remote_tree(own, "host1", scan_tree(deps)) / "data").is_symlink()
    (deps / "prog.py").write_text("print('a new version')\n")
    tree = scan_tree(deps)
    report = sync(own, ["host1"], tree)["host1"]
    assert isinstance(report, SyncReport), report
    assert synced(remote_tree(own, "host1", tree)) == snapshot(deps)
