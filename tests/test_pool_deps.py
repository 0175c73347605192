"""Deps through a pool: each run syncs its own tree, and its jobs run in it, whatever the
other runs under way sync meanwhile (docs/daemon.md, "Deps through a pool").

The pool's hosts are real sshd hosts on loopback; their tree stores are on this machine, so
the tests look at them (and at their locks) directly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from test_pins import held
from test_pool import ANET, alive, batch, cli, kill_9_after, pool_pid, records
from test_pool_options import sshd_pool  # noqa: F401 (the fixture)
from waiting import wait_until

from anet.pool.place import place

SHARED = 6
"""Files both deps folders hold alike: the second tree is an edit of the first, the kind of
tree the store would build by updating the first in place were it free."""


def deps(root: Path, word: str) -> Path:
    root.mkdir(parents=True)
    for i in range(SHARED):
        (root / f"common{i}.txt").write_text(f"common {i}\n")
    (root / "data.txt").write_text(f"{word}\n")
    return root


def trees(host) -> set[str]:
    """The ids of the complete trees in a host's store."""
    folder = host.anet_home / "deps" / "trees"
    return (
        {p.name[: -len(".manifest")] for p in folder.glob("*.manifest")}
        if folder.exists()
        else set()
    )


def tree_is_held(host, tree: str) -> bool:
    """Some dispatcher holds the tree: no sync may move it and no clean-up delete it."""
    return held(host.anet_home, bytes.fromhex(tree))


def test_two_runs_with_their_own_deps_at_once_each_job_reads_its_own_runs_file(
    sshd_pool,  # noqa: F811 (the fixture)
    tmp_path,
):
    """Run A's jobs start, then run B (an edit of A's deps) is synced and runs, then A's jobs
    read their deps: A's, not B's. A's tree stays held on every host while A lasts (B's sync
    neither moves nor deletes it) and is let go once A has ended."""
    own = sshd_pool.cluster
    go, started = tmp_path / "go", tmp_path / "started"
    started.mkdir()
    a_deps, b_deps = deps(tmp_path / "a" / "deps", "A"), deps(tmp_path / "b" / "deps", "B")
    wait_for_go = f"while [ ! -e {go} ]; do sleep 0.05; done"
    a = batch(
        tmp_path / "a",
        [f"touch {started}/$$; {wait_for_go}; cat data.txt dependencies/data.txt"] * 2,
    )
    b = batch(tmp_path / "b", ["cat data.txt; cat common3.txt"] * 8)
    submitted = cli("submit", str(a), f"{a_deps}/")
    assert submitted.returncode == 0, submitted.stderr
    run_a = submitted.stdout.decode().strip()
    wait_until(lambda: len(list(started.iterdir())) == 2, 60, "run A's two jobs to start")
    (a_tree,) = set.union(*(trees(own[name]) for name in own.names))
    wait_until(  # A's jobs may both run on one host while the other's sync still goes
        lambda: all(a_tree in trees(own[n]) and tree_is_held(own[n], a_tree) for n in own.names),
        60, "run A's tree held on every host",
    )  # fmt: skip
    # B, through the pool as `anet BATCH DEPS/`, while A's jobs wait
    through = cli("--format", "msgpack", str(b), f"{b_deps}/")
    assert through.returncode == 0, through.stderr
    assert {r.stdout for r in records(through.stdout).values()} == {b"B\ncommon 3\n"}
    assert "2  done" in cli("ls").stdout.decode()  # it was the pool's run 2, not standalone
    for name in own.names:  # A's tree is whole and held beside B's
        assert a_tree in trees(own[name]) and tree_is_held(own[name], a_tree)
        assert (own[name].anet_home / "deps" / "trees" / a_tree / "data.txt").read_text() == "A\n"
    go.touch()
    attached = cli("attach", "--format", "msgpack", run_a)
    assert attached.returncode == 0, attached.stderr
    assert {r.stdout for r in records(attached.stdout).values()} == {b"A\nA\n"}
    hosts = [own[name] for name in own.names]  # A has ended: its tree is let go on every host
    wait_until(lambda: not any(tree_is_held(h, a_tree) for h in hosts), 30, "A's tree let go")


def test_a_run_with_deps_gives_through_the_pool_the_bytes_it_gives_standalone(
    sshd_pool,  # noqa: F811 (the fixture)
    tmp_path,
):
    ssh = sshd_pool.ssh
    folder = deps(tmp_path / "deps", "same")
    path = batch(
        tmp_path,
        [f"cat data.txt common{i % SHARED}.txt; ls dependencies/ | wc -l" for i in range(20)],
    )
    pooled = cli("-k", str(path), f"{folder}/")
    assert "1  done" in cli("ls").stdout.decode()
    alone = cli("--no-pool", *ssh, *sshd_pool.hosts, "-k", str(path), f"{folder}/")
    assert pooled.returncode == alone.returncode == 0, pooled.stderr + alone.stderr
    assert pooled.stdout == alone.stdout and pooled.stdout.count(b"same\n") == 20


def test_a_deps_run_is_restored_after_a_kill_9_and_every_result_comes_once(make_cluster, tmp_path):
    own = make_cluster(1)
    ssh = ["--ssh-config", str(own.ssh_config), "-S", f"2/{own.names[0]}"]
    assert cli("up", *ssh).returncode == 0
    pool = pool_pid()
    ran = tmp_path / "ran"
    folder = deps(tmp_path / "deps", "kept")
    path = batch(tmp_path, [f"sleep 0.1; echo {i} >> {ran}; cat data.txt" for i in range(40)])
    run_id = cli("submit", str(path), f"{folder}/").stdout.decode().strip()
    before = kill_9_after(run_id, 8, pool)
    assert cli("up", *ssh).returncode == 0
    new = pool_pid()
    try:
        attached = cli("attach", "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert {i: r.stdout for i, r in got.items()} == {i: b"kept\n" for i in range(40)}
        runs = ran.read_text().split()
        assert all(runs.count(str(i)) == 1 for i in before), "a success of the dead pool ran again"
    finally:
        cli("down")
        wait_until(lambda: not alive(new), timeout=30, what="the new pool to stop")


def test_deps_through_via_are_refused_in_one_line(tmp_path):
    path = batch(tmp_path, ["true"])
    refused = cli("submit", "--via", "nobody@127.0.0.1", str(path), str(tmp_path))
    assert refused.returncode == 255
    assert refused.stderr.count(b"\n") == 1 and b"--via" in refused.stderr, refused.stderr


def test_runs_submitted_at_once_each_sync_their_own_deps_to_every_host(
    sshd_pool,  # noqa: F811 (the fixture)
    tmp_path,
):
    """Several runs' syncs to one dispatcher at once (each would pick the host's newest tree
    as its base): every one succeeds, none is kept off a host."""
    base = deps(tmp_path / "first" / "deps", "base")
    first = batch(tmp_path / "first", ["cat data.txt"])
    assert cli("submit", str(first), f"{base}/").returncode == 0
    words = ["one", "two", "three"]
    started = []
    for word in words:
        folder = deps(tmp_path / word / "deps", word)
        path = batch(tmp_path / word, ["sleep 0.2; cat data.txt"] * 6)
        argv = [*ANET, "--format", "msgpack", str(path), f"{folder}/"]
        started.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for process, word in zip(started, words, strict=True):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert {r.stdout for r in records(out).values()} == {f"{word}\n".encode()}
    log = place("default", os.environ).log.read_text()
    assert "deps sync failed" not in log and "go to the other hosts" not in log, log


def test_a_host_added_mid_run_gets_the_runs_deps_before_its_jobs(make_cluster, tmp_path):
    """`anet pool add` while a deps run is under way: the new host is synced for that run,
    then takes its share of the run's jobs, which read the run's file there too."""
    own = make_cluster(2)
    ssh = ["--ssh-config", str(own.ssh_config)]
    assert cli("up", *ssh, "-S", "2/host1").returncode == 0
    pid = pool_pid()
    try:
        folder = deps(tmp_path / "deps", "mine")
        path = batch(tmp_path, ["sleep 0.2; cat data.txt"] * 60)
        run_id = cli("submit", str(path), f"{folder}/").stdout.decode().strip()
        added = cli("pool", "add", "2/host2")
        assert added.returncode == 0, added.stderr
        attached = cli("attach", "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert {r.stdout for r in got.values()} == {b"mine\n"} and len(got) == 60
        assert {r.host for r in got.values()} == {"host1", "host2"}
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")
