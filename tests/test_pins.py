"""Trees held for a resident master's runs (dispatcher/pins.py): one dispatcher, several runs,
each in its own deps tree, none moved or deleted under another's jobs.

The store runs in this process (as in test_syncstore.py), fed the frames a pool's master
sends; the binding of Runs (Within) is tested on a real dispatcher process.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from test_dispatcher import dispatcher_process, outputs  # noqa: F401 (the fixture)
from test_sync_inplace import change_everything, make_src
from test_syncstore import Host, close_the_hosts, make, scan_dir  # noqa: F401 (the fixture)

from dispatcher.pins import Pin, Unpin, Within
from dispatcher.protocol import STDERR, Exit, Output, Run
from dispatcher.syncstore import KEEP_TREES


def held(home: Path, tree: bytes) -> bool:
    """Someone holds the tree: its manifest's exclusive lock cannot be had."""
    fd = os.open(home / "deps" / "trees" / f"{tree.hex()}.manifest", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_pinned_tree_is_neither_updated_in_place_nor_the_default_nor_collected(tmp_path):
    """Run A's tree is pinned; run B, an edit of it, syncs on the same dispatcher, then more
    trees than the store keeps: A's tree stays whole (B's is built beside it) and held,
    and `job_cwd`, the default place, is none of the runs' trees."""
    home, src = tmp_path / "home", make_src(tmp_path / "src")
    host = Host(home)
    first = scan_dir(src)
    host.handle(Pin(first.id))
    _, done = host.sync(first)
    a_dir = Path(os.fsdecode(done.path))
    before = sorted(p.name for p in a_dir.rglob("*"))
    assert host.store.job_cwd is None and held(home, first.id)
    change_everything(src)  # B: the kind of tree the store builds from A in place when free
    for i in range(KEEP_TREES + 2):
        (src / f"more{i}").write_text(f"{i}\n")
        time.sleep(0.01)
        tree = scan_dir(src)
        host.handle(Pin(tree.id))
        _, other = host.sync(tree)
        assert other.error == "" and other.path != done.path
        host.handle(Unpin(tree.id))
    assert sorted(p.name for p in a_dir.rglob("*")) == before and held(home, first.id)
    assert host.store.job_cwd is None
    assert host.offer(first).ready


def test_a_tree_unpinned_while_its_jobs_run_is_held_until_the_last_ends(tmp_path):
    home = tmp_path / "home"
    host, tree = Host(home), scan_dir(make(tmp_path / "src"))
    host.handle(Pin(tree.id))
    host.handle(Pin(tree.id))  # two runs with the same deps
    host.sync(tree)
    pins = host.store.pins
    job = pins.enter(tree.id)
    assert job is not None and pins.cwd(job) == job.path
    host.handle(Unpin(tree.id))
    host.handle(Unpin(tree.id))  # both runs ended; a job of theirs still runs
    assert held(home, tree.id)
    pins.leave(job)
    assert not held(home, tree.id) and not pins.held


def test_runs_bound_to_a_tree_not_held_fail_and_within_nothing_runs_in_the_default_place(
    dispatcher_process,  # noqa: F811 (the fixture)
):
    dispatcher = dispatcher_process(1)
    dispatcher.send(Within(b"\x01" * 32), Run(1, 1, b"pwd"), Within(b""), Run(2, 2, b"pwd"))
    got = dispatcher.read_until(lambda m: isinstance(m, Exit) and m.aid == 2)
    first = [m for m in got if isinstance(m, Exit) and m.aid == 1]
    assert first and first[0].code == 127
    said = b"".join(m.data for m in got if isinstance(m, Output) and m.stream == STDERR)
    assert b"deps tree is not held on this host" in said
    assert outputs(got, 2) == dispatcher.hello.workdir.encode() + b"\n"
