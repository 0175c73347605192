"""The resident master (`anet up`): a real daemon process, its socket, its clients.

Every pool here is the test's own (the `isolated` fixture gives each test its own
$XDG_RUNTIME_DIR and state), runs its jobs on the local machine, and is stopped by the test.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_until

import anet
import anet.results
from anet.pool.place import make_private, place
from anet.pool.wire import pack

ANET = [sys.executable, "-m", "anet"]
RSS_MASTER = Path(__file__).with_name("rss_master.py")


def cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*ANET, *args], capture_output=True, timeout=timeout, **kwargs)


def pool_pid() -> int:
    return int(place("default", os.environ).pid_file.read_text())


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (a daemon's dispatcher and jobs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture
def pool() -> Iterator[int]:
    """A pool up on the local machine (2 slots); its pid. Down at the end, whatever happened."""
    up = cli("up", "-S", "2/:")
    assert up.returncode == 0, up.stderr
    assert b"pool 'default' is up: 1 of 1 hosts ready" in up.stderr
    pid = pool_pid()
    yield pid
    if alive(pid):
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")


def batch(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "batch.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def records(stream: bytes, fmt: str = "msgpack") -> dict[int, anet.JobResult]:
    found: dict[int, anet.JobResult] = {}
    for result in anet.results.read(io.BytesIO(stream), format=fmt):
        assert result.id not in found, f"job {result.id} came twice"
        found[result.id] = result
    return found


def test_a_submitted_batch_gives_the_same_results_as_a_standalone_run(pool, tmp_path):
    lines = [f"echo job {i}; exit $(({i} % 4 == 3))" for i in range(30)]
    path = batch(tmp_path, lines)
    alone = cli("run", "-S", "2/:", "--retries", "0", "--format", "msgpack", str(path))
    submitted = cli("submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.decode().strip()
    attached = cli("attach", "--format", "msgpack", run_id)
    assert attached.returncode == alone.returncode
    ours, theirs = records(attached.stdout), records(alone.stdout)
    assert sorted(ours) == list(range(30))
    for job, result in ours.items():
        assert (result.ok, result.exit_code, result.stdout) == (
            theirs[job].ok, theirs[job].exit_code, theirs[job].stdout,
        ), job  # fmt: skip
    assert cli("wait", run_id).returncode == alone.returncode
    listing = cli("ls").stdout.decode()
    assert f"{run_id}  done" in listing and str(path) in listing
    hosts = cli("pool").stdout.decode().splitlines()
    assert hosts[0].split() == ["host", "state", "slots", "running", "done", "note"]
    assert hosts[1].split() == ["local", "ready", "2", "0", "30"]


def test_an_attach_killed_midway_then_again_gets_every_result_once(pool, tmp_path):
    """The client dies while results stream; the run does not notice, and a second attach gets
    the journal's results then the live ones: every id once, none missing."""
    path = batch(tmp_path, [f"sleep 0.0{i % 5}; echo {i}" for i in range(200)])
    submitted = cli("submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.decode().strip()
    first = subprocess.Popen([*ANET, "attach", "--format", "msgpack", run_id],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert first.stdout is not None
    first.stdout.read(200)  # some results came
    first.kill()
    first.wait()
    first.stdout.close()
    again = cli("attach", "--format", "msgpack", run_id)
    assert again.returncode == 0, again.stderr
    got = records(again.stdout)
    assert sorted(got) == list(range(200))
    assert all(got[i].stdout == b"%d\n" % i for i in got)


def test_two_runs_at_once_in_one_pool_each_get_their_own_results(pool, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = batch(tmp_path / "a", [f"sleep 0.05; echo a{i}" for i in range(20)])
    b = batch(tmp_path / "b", [f"sleep 0.05; echo b{i}" for i in range(20)])
    ids = [cli("submit", str(p)).stdout.decode().strip() for p in (a, b)]
    assert ids == ["1", "2"]
    for name, run_id in zip("ab", ids, strict=True):
        got = records(cli("attach", "--format", "msgpack", run_id).stdout)
        assert {i: r.stdout for i, r in got.items()} == {
            i: f"{name}{i}\n".encode() for i in range(20)
        }


def test_cancel_kills_the_runs_jobs_and_down_leaves_no_process(pool, tmp_path):
    marker = tmp_path / "started"
    path = batch(tmp_path, [f"touch {marker}; sleep 300"] * 4)
    run_id = cli("submit", str(path)).stdout.decode().strip()
    wait_until(marker.exists, timeout=30, what="a job to start")
    below = descendants(pool)
    assert below  # the dispatcher and its jobs
    cancelled = cli("cancel", run_id)
    assert cancelled.returncode == 0 and b"cancelled" in cancelled.stderr
    assert cli("wait", run_id).returncode == 130
    down = cli("down")
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not alive(pool), timeout=30, what="the pool to exit")
    wait_until(lambda: not any(alive(p) for p in below), timeout=30, what="its processes to end")
    assert not place("default", os.environ).socket.exists()


def test_up_twice_says_it_is_up_and_a_pool_killed_with_9_is_replaced(pool, tmp_path):
    second = cli("up", "-S", "2/:")
    assert second.returncode == 255
    assert second.stderr.decode().strip() == f"anet: the pool is already up (pid {pool})"
    os.kill(pool, signal.SIGKILL)
    wait_until(lambda: not alive(pool), timeout=30, what="the pool to die")
    assert place("default", os.environ).socket.exists()  # stale: nobody answers it
    assert cli("ls").returncode == 255
    again = cli("up", "-S", "2/:")
    assert again.returncode == 0, again.stderr
    new = pool_pid()
    assert new != pool
    path = batch(tmp_path, ["echo fine"])
    run_id = cli("submit", str(path)).stdout.decode().strip()
    assert cli("wait", run_id).returncode == 0
    cli("down")
    wait_until(lambda: not alive(new), timeout=30, what="the new pool to stop")


def test_commands_without_a_pool_say_so_in_one_line():
    for args in (["ls"], ["attach", "1"], ["down"], ["submit", "/nonexistent"]):
        done = cli(*args)
        assert done.returncode == 255, args
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1 and "Traceback" not in lines[0], (args, lines)
    assert "no pool 'default' is up" in cli("ls").stderr.decode()


def test_a_private_directory_that_is_not_private_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    with pytest.raises(anet.AnetError, match="open to other users"):
        make_private(open_dir)


def stranger_account(name: str) -> pwd.struct_passwd:
    """The account, made if missing. Another test run may be making it at the same moment
    (useradd then fails: the name exists, or /etc/passwd is locked a moment): tried again."""
    for _ in range(50):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        subprocess.run(["useradd", "--no-create-home", name], capture_output=True)
        time.sleep(0.1)
    return pwd.getpwnam(name)


def test_another_user_is_refused_at_the_socket_even_when_it_can_reach_it(pool, tmp_path):
    """The directory's 0700 keeps others out; were it opened by mistake, the peer check is
    the second guard: a connection from another uid gets no answer."""
    name = "anetpooltest"
    user = stranger_account(name)
    where = place("default", os.environ)
    for directory in [where.run_dir, *where.run_dir.parents]:
        directory.chmod(directory.stat().st_mode | 0o011)  # others may pass through
    where.socket.chmod(0o666)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(where.socket)!r})\n"
        "try:\n"
        f"    s.sendall({pack({'op': 'ls'})!r})\n"
        "    s.settimeout(20)\n"
        "    got = s.recv(100)\n"
        "except OSError:\n"  # closed before the request even went out
        "    got = b''\n"
        "sys.stdout.write(repr(got))\n"
    )
    stranger = subprocess.run(  # the system's python3: the test's may live in root's home
        ["/usr/bin/python3", "-c", probe], capture_output=True, timeout=60,
        user=user.pw_uid, group=user.pw_gid, cwd="/",
    )  # fmt: skip
    assert stranger.returncode == 0, stranger.stderr
    assert stranger.stdout == b"b''"  # connected, then closed with no answer
    ours = socket.socket(socket.AF_UNIX)
    ours.connect(str(where.socket))
    ours.sendall(pack({"op": "ls"}))
    ours.settimeout(20)
    assert ours.recv(100)  # the owner is answered
    ours.close()
    wait_until(
        lambda: b"another user was refused" in where.log.read_bytes(), timeout=10,
        what="the refusal in the pool's log",
    )  # fmt: skip


def stop_pool(pid: int) -> None:
    """`anet down`, then the pool's process gone."""
    cli("down")
    wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")


def kill_9_after(run_id: str, count: int, pid: int) -> list[int]:
    """The ids of the run's first `count` results, read by an attach; then the pool (`pid`)
    is killed with -9, the attach ends with it, and the dead pool's
    processes (dispatchers, jobs) end too."""
    watcher = subprocess.Popen([*ANET, "attach", "--format", "msgpack", run_id],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert watcher.stdout is not None
    before: list[int] = []
    for result in anet.results.read(watcher.stdout, format="msgpack"):
        before.append(result.id)
        if len(before) == count:
            break
    below = descendants(pid)
    os.kill(pid, signal.SIGKILL)
    watcher.wait(timeout=30)
    watcher.stdout.close()
    wait_until(lambda: not any(alive(p) for p in below), timeout=30, what="its jobs to end")
    return before


def test_a_pool_killed_with_9_mid_run_is_restored_by_the_next_and_every_result_comes_once(
    pool, tmp_path
):
    ran = tmp_path / "ran"  # each job appends its id when it has done its work
    path = batch(tmp_path, [f"sleep 0.1; echo {i} >> {ran}; echo out{i}" for i in range(60)])
    run_id = cli("submit", str(path)).stdout.decode().strip()
    before = kill_9_after(run_id, 10, pool)
    again = cli("up", "-S", "2/:")
    assert again.returncode == 0, again.stderr
    new = pool_pid()
    try:
        listing = cli("ls").stdout.decode()
        assert f"{run_id}  running" in listing or f"{run_id}  done" in listing, listing
        attached = cli("attach", "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert {i: r.stdout for i, r in got.items()} == {i: b"out%d\n" % i for i in range(60)}
        runs = ran.read_text().split()
        assert all(runs.count(str(i)) == 1 for i in before), "a success of the dead pool ran again"
    finally:
        cli("down")
        wait_until(lambda: not alive(new), timeout=30, what="the new pool to stop")


def test_down_cancels_for_good_and_a_stop_by_signal_resumes_with_the_next_pool(pool, tmp_path):
    slow = batch(tmp_path, ["sleep 300"])
    first = cli("submit", str(slow)).stdout.decode().strip()
    os.kill(pool, signal.SIGTERM)  # a supervisor's stop: the run is resumed by the next pool
    wait_until(lambda: not alive(pool), timeout=30, what="the pool to stop")
    assert cli("up", "-S", "2/:").returncode == 0
    listing = cli("ls").stdout.decode()
    assert f"{first}  running" in listing, listing
    assert cli("down").returncode == 0  # `down`: cancelled for good
    wait_until(lambda: not place("default", os.environ).socket.exists(), 30, "the pool to stop")
    assert cli("up", "-S", "2/:").returncode == 0
    try:
        listing = cli("ls").stdout.decode()
        assert f"{first}  cancelled" in listing, listing
    finally:
        cli("down")


def test_a_client_that_stops_reading_holds_at_most_the_listener_limit_then_catches_up(
    monkeypatch, tmp_path
):
    """In process: a pool on the local machine, an attached client that reads one result,
    stops until the run has ended, then reads on. Its queue is dropped at the limit (the pool's
    memory does not follow the run) and it catches up from the journal: every id once."""
    import asyncio

    from anet.api import Cluster
    from anet.pool import run as pool_run
    from anet.pool import server, wire
    from anet.pool.place import make_private

    monkeypatch.setattr(pool_run, "LISTENER_LIMIT", 4)
    longest: list[int] = [0]
    put = pool_run.Listener.put

    def counting_put(self: pool_run.Listener, result: object) -> None:
        put(self, result)  # type: ignore[arg-type]
        longest[0] = max(longest[0], len(self.queue))

    monkeypatch.setattr(pool_run.Listener, "put", counting_put)
    where = place("default", os.environ)
    make_private(where.run_dir)
    make_private(where.state_dir)
    data = "".join(f"head -c 8000 /dev/zero; echo {i}\n" for i in range(300)).encode()

    async def main() -> dict[int, bytes]:
        async with Cluster(["2/:"], cwd=str(tmp_path)) as cluster:
            pool = server.Pool(where, cluster)
            serving = asyncio.create_task(pool.serve())
            await wait_for_socket(where)
            run = pool._submit({"batch": data, "name": "big"})
            reader, writer = await asyncio.open_unix_connection(str(where.socket))
            writer.write(wire.pack({"op": "attach", "run": run["id"]}))
            got: dict[int, bytes] = {}
            first = await wire.read_result(reader, await wire.read(reader))
            got[first.id] = first.stdout
            await asyncio.wait_for(pool.runs[run["id"]].ended.wait(), 60)  # not reading
            while isinstance(item := await wire.read(reader), list):
                result = await wire.read_result(reader, item)
                assert result.id not in got, f"job {result.id} came twice"
                got[result.id] = result.stdout
            assert item["state"] == "done"
            writer.close()
            pool.stop()
            await serving
            return got

    async def wait_for_socket(where) -> None:
        async with asyncio.timeout(30):
            while not where.socket.exists():
                await asyncio.sleep(0.01)

    got = asyncio.run(main())
    assert sorted(got) == list(range(300))
    assert all(out == bytes(8000) + b"%d\n" % i for i, out in got.items())
    assert longest[0] == 4  # reached the limit, and never held more


def test_a_pool_on_another_machine_is_reached_over_ssh_with_via(cluster, tmp_path):
    """The pool runs where sshd's sessions find it ($XDG_RUNTIME_DIR unset there: /tmp/anet-UID);
    the client reaches its socket through a real sshd, as a user on a laptop would."""
    name = f"via{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    up = cli("up", "--pool", name, "-S", "2/:", env=env)
    assert up.returncode == 0, up.stderr
    try:
        via = ["--via", cluster.names[0], "--ssh-config", str(cluster.ssh_config), "--pool", name]
        path = batch(tmp_path, [f"echo far {i}" for i in range(10)])
        submitted = cli("submit", *via, str(path))
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.decode().strip()
        attached = cli("attach", *via, "--format", "msgpack", run_id)
        assert attached.returncode == 0, attached.stderr
        got = records(attached.stdout)
        assert {i: r.stdout for i, r in got.items()} == {i: b"far %d\n" % i for i in range(10)}
        assert f"{run_id}  done" in cli("ls", *via).stdout.decode()
        other = cli("ls", *via[:-1], "nosuchpool")
        assert other.returncode == 255
        assert other.stderr.decode().strip() == (
            f"anet: no pool 'nosuchpool' is up on {cluster.names[0]}"
        )
    finally:
        cli("down", "--pool", name, env=env)


def test_the_library_runs_on_a_pool_as_on_a_cluster_and_leaving_early_cancels(pool, tmp_path):
    import asyncio

    marker = tmp_path / "started"

    async def main():
        async with anet.Pool() as running:
            assert running.pid == pool
            whole = [r async for r in running.run(["echo a", "", "exit 4", b"printf '\\377'"])]
            assert running.last_row["state"] == "done"
            async for _ in running.run([f"touch {marker}; sleep 300", "true"]):
                break  # leaves with the sleeper still running
            return whole, await running.runs()

    whole, runs = asyncio.run(main())
    assert sorted((r.id, r.ok, r.exit_code, r.stdout) for r in whole) == [
        (0, True, 0, b"a\n"), (1, True, 0, b""), (2, False, 4, b""), (3, True, 0, b"\xff"),
    ]  # fmt: skip
    assert [(row["id"], row["name"]) for row in runs] == [(1, "python"), (2, "python")]
    wait_until(lambda: "2  cancelled" in cli("ls").stdout.decode(), 30, "the run cancelled")
    wait_until(lambda: not descendants(pool) - set(_dispatchers(pool)), 30, "the sleeper killed")


def test_the_library_gives_a_run_on_a_pool_its_deps_folder(pool, tmp_path, monkeypatch):
    """`Pool.run(..., deps=)` is `anet BATCH DEPS` through the pool: the folder synced for that
    run, its jobs inside it; a relative path is this process's."""
    import asyncio

    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "data.txt").write_text("from the deps\n")
    monkeypatch.chdir(tmp_path)

    async def main():
        async with anet.Pool() as running:
            got = [r async for r in running.run(["cat data.txt", "pwd"], deps="deps/")]
            return got, running.last_row

    got, last = asyncio.run(main())
    assert last["state"] == "done", last
    by_id = {r.id: r for r in got}
    assert by_id[0].ok and by_id[0].stdout == b"from the deps\n"
    assert Path(by_id[1].stdout.decode().strip()) != tmp_path / "deps"  # a synced copy


def _dispatchers(pid: int) -> list[int]:
    """The pool's dispatcher processes (its children): they stay, the jobs under them go."""
    return [p for p in descendants(pid) if _ppid(p) == pid]


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_the_library_says_in_one_line_that_no_pool_is_up():
    import asyncio

    async def main():
        async with anet.Pool("nothere"):
            pass

    with pytest.raises(anet.PoolDown, match="no pool 'nothere' is up"):
        asyncio.run(main())


def test_jobs_on_this_machine_run_where_the_pool_was_started(tmp_path):
    """A batch's relative paths mean the directory its user was in: the daemon moves to /, its
    local jobs must not (before, every job of batch_examples/primes.txt failed in a pool)."""
    (tmp_path / "data.txt").write_text("from the start directory\n")
    up = cli("up", "-S", "2/:", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    pid = pool_pid()
    try:
        path = batch(tmp_path, ["cat data.txt", "pwd"])
        run_id = cli("submit", str(path)).stdout.decode().strip()
        got = records(cli("attach", "--format", "msgpack", run_id).stdout)
        assert got[0].stdout == b"from the start directory\n", got[0]
        assert Path(got[1].stdout.decode().strip()).resolve() == tmp_path.resolve()
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")


def test_a_submitted_run_has_its_own_retries_timeout_and_halt(pool, tmp_path):
    path = batch(tmp_path, ["exit 3", "sleep 30", "echo fine"])
    default = cli("submit", str(path)).stdout.decode().strip()  # the defaults: 2 retries
    own = cli("submit", "--retries", "0", "--timeout", "1", str(path)).stdout.decode().strip()
    mine = records(cli("attach", "--format", "msgpack", own).stdout)
    assert mine[0].attempts == 1 and not mine[0].ok  # no retry
    assert not mine[1].ok and mine[1].duration < 10  # killed at its timeout, not retried
    assert mine[2].stdout == b"fine\n"
    cli("cancel", default)  # its sleeper would take 30 s: the defaults are not this test's
    refused = cli("submit", "--timeout", "soon", str(path))
    assert refused.returncode == 255
    assert refused.stderr.decode().count("\n") == 1 and "timeout" in refused.stderr.decode()
    halted = cli("submit", "--halt", "now,fail=1", "--retries", "0", str(path))
    rows = records(cli("attach", "--format", "msgpack", halted.stdout.decode().strip()).stdout)
    assert 1 not in rows or not rows[1].ok  # the sleeper was killed when job 0 failed


def test_anet_batch_goes_through_a_running_pool_with_the_same_bytes_and_status(pool, tmp_path):
    path = batch(tmp_path, [f"echo job {i}; exit $(({i} % 5 == 4))" for i in range(40)])
    pooled = cli("-k", "--retries", "0", str(path))
    alone = cli("--no-pool", "-S", "2/:", "-k", "--retries", "0", str(path))
    assert pooled.stdout == alone.stdout and len(pooled.stdout) > 0  # the anet format, in order
    assert pooled.returncode == alone.returncode == 8
    listing = cli("ls").stdout.decode()
    assert "1  done" in listing and str(path.resolve()) in listing  # it was the pool's run


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (["--line-buffer"], "--line-buffer"),
        (["--keepalive", "30"], "--keepalive"),
        (["--nice", "3"], "polite mode"),
        (["-S", "2/:"], "-S/-H/-j"),
    ],
)
def test_an_option_a_pool_cannot_take_runs_standalone_and_says_why_in_one_line(
    pool, tmp_path, option, why
):
    """Never silently: either the pool's run does what the option says, or the run is a
    standalone one, with one line saying which option made it so; with `--pool NAME` named,
    that line is the error."""
    path = batch(tmp_path, ["echo a", "exit 3"])
    alone = cli(*option, "-q", "--retries", "0", str(path))
    assert alone.returncode == 1, alone.stderr
    said = alone.stderr.decode().splitlines()
    assert said[0].startswith(f"anet: {why}") and said[0].endswith(
        ": running standalone, not through the pool"
    ), said
    assert len(cli("ls").stdout.decode().splitlines()) == 1  # the pool ran nothing
    named = cli("--pool", "default", *option, str(path))
    assert named.returncode == 255
    lines = named.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"anet: {why}"), lines
    assert lines[0].endswith(" is not done through a pool yet: leave out --pool default"), lines


def test_ctrl_c_of_a_batch_run_through_a_pool_cancels_that_run_and_kills_its_jobs(pool, tmp_path):
    marker = tmp_path / "started"
    path = batch(tmp_path, [f"touch {marker}; sleep 300", "sleep 300"])
    client = subprocess.Popen([*ANET, str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)  # fmt: skip
    wait_until(marker.exists, timeout=30, what="a job to start")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    wait_until(lambda: "1  cancelled" in cli("ls").stdout.decode(), 30, "the run cancelled")
    wait_until(lambda: not descendants(pool) - set(_dispatchers(pool)), 30, "its jobs killed")


def test_a_pool_of_sshd_hosts_gives_the_standalone_bytes_and_down_leaves_nothing_there(
    make_cluster, tmp_path
):
    """The pool's hosts are two real sshd hosts: `anet BATCH` through it writes the bytes a
    standalone run writes, a run is spread over both, and `anet down` leaves no process on them."""
    from sshd_hosts import leftover_processes

    own = make_cluster(2)
    ssh = ["--ssh-config", str(own.ssh_config)]
    hosts = [arg for name in own.names for arg in ("-S", f"2/{name}")]
    up = cli("up", *ssh, *hosts)
    assert up.returncode == 0, up.stderr
    assert b"2 of 2 hosts ready" in up.stderr
    pid = pool_pid()
    try:
        path = batch(tmp_path, [f"sleep 0.0{i % 3}; echo job {i}" for i in range(60)])
        keep = dict(os.environ, ANET_JOURNALS_KEEP_OUTPUTS="1")  # for the attach after it
        pooled = cli("-k", str(path), env=keep)
        attached = records(cli("attach", "--format", "msgpack", "1").stdout)
        assert {r.host for r in attached.values()} == set(own.names)
        alone = cli("--no-pool", *ssh, *hosts, "-k", str(path))
        assert pooled.returncode == alone.returncode == 0, pooled.stderr
        assert pooled.stdout == alone.stdout and len(pooled.stdout) > 60 * 8
        gone = cli("attach", "1")  # the batch's journal is the standalone run's now
        assert gone.returncode == 255 and b"run 1's results are no longer in" in gone.stderr
        assert any(own[name].processes() for name in own.names)  # the dispatchers, kept warm
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")
    assert leftover_processes(own.hosts, grace=10.0) == {}


def test_a_kept_file_is_written_whole_even_when_the_kernel_takes_less_at_a_time(
    monkeypatch, tmp_path
):
    """os.write may take less than it is given (over 2 GiB it always does): a batch kept for a
    restore must come back whole. Here every raw write takes at most 1,000 bytes."""
    from anet.pool.run import write_atomically

    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data)[:1000]))
    data = bytes(range(256)) * 100
    write_atomically(tmp_path / "1.batch", data)
    assert (tmp_path / "1.batch").read_bytes() == data


def test_a_restored_run_sends_the_new_result_of_a_job_that_failed_before_not_the_old_one(
    pool, tmp_path
):
    """A job that failed before the pool stopped runs again in the restored run (as --resume
    runs failures again): an attach must give its new result, not the failure the journal
    still held from before (it did, and then skipped the new one as a duplicate)."""
    flag = tmp_path / "failed-once"
    first = f"if [ -e {flag} ]; then sleep 3; echo second; else touch {flag}; exit 1; fi"
    path = batch(tmp_path, [first, "sleep 300"])
    run_id = cli("submit", "--retries", "0", str(path)).stdout.decode().strip()
    wait_until(lambda: cli("ls").stdout.decode().split()[9:12] == ["1", "1", "2"], 30, "a failure")
    os.kill(pool, signal.SIGTERM)  # stopped by a supervisor: the next pool resumes the run
    wait_until(lambda: not alive(pool), timeout=30, what="the pool to stop")
    assert cli("up", "-S", "2/:").returncode == 0
    new = pool_pid()
    try:
        watcher = subprocess.Popen([*ANET, "attach", "--format", "msgpack", run_id],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert watcher.stdout is not None
        result = next(anet.results.read(watcher.stdout, format="msgpack"))
        watcher.kill()
        watcher.wait()
        watcher.stdout.close()
        assert (result.id, result.ok, result.stdout) == (0, True, b"second\n")
    finally:
        cli("down")
        wait_until(lambda: not alive(new), timeout=30, what="the new pool to stop")


def test_resume_through_a_pool_takes_up_a_standalone_run_and_writes_what_standalone_writes(
    pool, tmp_path
):
    """Two copies of a batch whose every third job fails once: each run standalone; then one
    resumed standalone, the other through the pool: the same bytes, the same status, the same
    journal (`anet status` reads it); `--resume --only-new` then owes nothing either way."""
    outputs = {}
    for way in ("alone", "pooled"):
        (tmp_path / way).mkdir()
        flags = tmp_path / way / "flags"
        flags.mkdir()
        once = "[ -e {f} ] || {{ touch {f}; exit 1; }}"  # fails the first time only
        lines = [
            f"echo {i}; [ $(({i} % 3)) != 0 ] || " + once.format(f=flags / str(i))
            for i in range(30)
        ]
        path = batch(tmp_path / way, lines)
        first = cli("--no-pool", "-S", "2/:", "--retries", "0", "-k", str(path))
        assert first.returncode == 10, first.stderr
        via = ["--no-pool", "-S", "2/:"] if way == "alone" else []
        resumed = cli(*via, "--retries", "0", "-k", "--resume", str(path))
        again = cli(*via, "--retries", "0", "-k", "--resume", "--only-new", str(path))
        status = cli("status", str(path)).stdout.decode().splitlines()[2]
        local = next(line for line in resumed.stderr.decode().splitlines() if "  local " in line)
        assert local.split()[3] == "10", resumed.stderr  # jobs this run ran there: the failed ones
        outputs[way] = (resumed.returncode, resumed.stdout, again.returncode, again.stdout, status)
        assert resumed.returncode == 0 and len(resumed.stdout) > 30 * 8, resumed.stderr
    assert outputs["pooled"][:4] == outputs["alone"][:4]
    assert outputs["pooled"][4].startswith("30/30 jobs done, 0 failed")
    assert outputs["alone"][4].startswith("30/30 jobs done, 0 failed")
    listing = cli("ls").stdout.decode()
    assert "1  done" in listing and "2  done" in listing  # both went through the pool


def test_down_wait_lets_the_runs_under_way_finish_and_takes_no_new_one(pool, tmp_path):
    release = tmp_path / "release"  # the runs' jobs end once the test says so
    path = batch(
        tmp_path, [f"while [ ! -e {release} ]; do sleep 0.05; done; echo {i}" for i in range(4)]
    )
    runs = [cli("submit", str(path)).stdout.decode().strip()]
    down = subprocess.Popen([*ANET, "down", "--wait"], stderr=subprocess.PIPE)
    for _ in range(100):  # until the pool has the request: a submit before it is a run too
        submit = cli("submit", str(path))
        if submit.returncode != 0:
            break
        runs.append(submit.stdout.decode().strip())
    assert submit.stderr == b"anet: the pool is stopping (anet down --wait): it takes no new run\n"
    assert down.poll() is None and alive(pool)  # it waits for the runs
    release.touch()
    _, err = down.communicate(timeout=60)
    assert down.returncode == 0 and err == b"pool 'default' is down\n", err
    wait_until(lambda: not alive(pool), timeout=30, what="the pool to stop")
    assert cli("up", "-S", "2/:").returncode == 0
    try:
        listing = cli("ls").stdout.decode().splitlines()[1:]
        assert [line.split()[:5] for line in listing] == [[r, "done", "4", "0", "4"] for r in runs]
    finally:
        cli("down")


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_300_mb_output_goes_through_attach_in_chunks_never_whole_in_memory(pool, tmp_path):
    """The pool reads the output from its spool a chunk at a time and the client writes it into
    a spool of its own: neither holds 300 MB (each held it twice over before: 600 MB and more)."""
    size = 300 * 10**6
    path = batch(tmp_path, [f"head -c {size} /dev/zero; echo err >&2", "echo small"])
    run_id = cli("submit", str(path)).stdout.decode().strip()
    assert cli("wait", run_id, timeout=300).returncode == 0
    before = _peak_rss_mib(pool)
    rss = tmp_path / "client.rss"  # VmHWM, not wait4's ru_maxrss: that one survives execve, so
    client = subprocess.Popen(  # a child of a big pytest worker reported the worker's size
        [sys.executable, str(RSS_MASTER), str(rss), "attach", "--format", "text", run_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert client.stdout is not None and client.stderr is not None
    count = zeros = 0
    tail = b""
    while piece := client.stdout.read(1 << 20):
        count += len(piece)
        zeros += piece.count(0)
        tail = (tail + piece)[-200:]
    said = client.stderr.read()
    client.stdout.close()
    client.stderr.close()
    assert client.wait(60) == 0, said
    assert zeros == size and b"small" in tail and count < size + 1000
    peak = int(rss.read_text()) / 1024
    assert peak < 150, f"the client peaked at {peak:.0f} MiB"
    grew = _peak_rss_mib(pool) - before
    assert grew < 100, f"the pool's peak grew by {grew:.0f} MiB to send it"


def test_a_pool_keeps_the_newest_ended_runs_and_forgets_the_older_ones_with_their_files(
    tmp_path,
):
    """ANET_JOURNALS_KEEP=2 at `anet up`: of four ended runs the pool keeps the last two (listed,
    their files on disk); the older ones are no longer listed and their files are gone."""
    env = {**os.environ, "ANET_JOURNALS_KEEP": "2"}
    assert cli("up", "-S", "2/:", env=env).returncode == 0
    pid = pool_pid()
    try:
        path = batch(tmp_path, ["echo 1"])
        for run_id in ("1", "2", "3", "4"):
            assert cli("submit", str(path)).stdout.decode().strip() == run_id
            assert cli("wait", run_id).returncode == 0
        listing = cli("ls").stdout.decode().splitlines()[1:]
        assert [line.split()[0] for line in listing] == ["3", "4"]
        kept = place("default", os.environ).runs_dir
        assert sorted({f.name.split(".")[0] for f in kept.iterdir()}) == ["3", "4"]
        assert cli("attach", "1").stderr == b"anet: no run 1 in this pool\n"
    finally:
        cli("down")
        wait_until(lambda: not alive(pid), timeout=30, what="the pool to stop")


def test_polite_mode_is_the_pools_hosts_given_at_up_for_every_run(tmp_path):
    """`anet up --nice 7`: every run's jobs run at niceness 7 (polite mode belongs to the
    pool's hosts, which every run shares), as a standalone `--nice 7` runs them."""
    from test_polite import NICENESS, niceness

    up = cli("up", "-S", "2/:", "--nice", "7")
    assert up.returncode == 0, up.stderr
    pid = pool_pid()
    try:
        pooled = cli("--format", "msgpack", str(batch(tmp_path, [NICENESS] * 4)))
        assert pooled.returncode == 0, pooled.stderr
        got = records(pooled.stdout)
        assert sorted(got) == [0, 1, 2, 3] and "1  done" in cli("ls").stdout.decode()
        assert {n for r in got.values() for n in niceness(r.stdout)} == {7}
    finally:
        stop_pool(pid)


def test_a_run_halted_through_a_pool_ends_with_the_standalone_runs_last_line(pool, tmp_path):
    path = batch(tmp_path, ["exit 1", "sleep 30", "sleep 30", "sleep 30"])
    options = ["--halt", "now,fail=1", "--retries", "0", "--format", "msgpack"]
    pooled = cli(*options, str(path))
    assert "1  done" in cli("ls").stdout.decode()
    alone = cli("--no-pool", "-S", "2/:", *options, str(path))
    assert pooled.returncode == alone.returncode == 1, pooled.stderr
    assert list(records(pooled.stdout)) == list(records(alone.stdout)) == [0]
    last = "anet: 1 job failed; halted with 3 of 4 jobs not done"
    assert pooled.stderr.decode().splitlines()[-1] == alone.stderr.decode().splitlines()[-1] == last


def test_plain_tag_through_a_pool_writes_the_standalone_bytes(pool, tmp_path):
    """GNU parallel's `--format plain --tag`: each line after its job's tag (its arguments, or
    a batch line's command), from a batch file and from a command's sources alike."""
    path = batch(tmp_path, [f"echo line {i}; echo more {i}" for i in range(12)])
    for words in ([str(path)], ["echo {} x; exit $(( {} % 5 == 4 ))", ":::", *map(str, range(12))]):
        options = ["-k", "--retries", "0", "--format", "plain", "--tag", *words]
        pooled = cli(*options, cwd=tmp_path)
        alone = cli("--no-pool", "-S", "2/:", *options, cwd=tmp_path)
        assert pooled.returncode == alone.returncode, pooled.stderr
        assert pooled.stdout == alone.stdout and b"\t" in pooled.stdout, pooled.stdout
    assert "2  done" in cli("ls").stdout.decode()  # both were the pool's runs


def test_a_run_through_a_pool_shows_the_progress_view_a_standalone_run_shows(pool, tmp_path):
    """The live view (on a terminal; ANET_PROGRESS=live draws it on this pipe): the run's
    counts, and the pool's hosts with the run's jobs there, as standalone; its last frame is
    the run's end."""
    import re

    path = batch(tmp_path, [f"sleep 0.3; echo {i}" for i in range(8)])
    live = {**os.environ, "ANET_PROGRESS": "live"}
    for shown in (cli(str(path), env=live), cli("--no-pool", "-S", "2/:", str(path), env=live)):
        assert shown.returncode == 0, shown.stderr
        said = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stderr.decode())
        assert " 8/8 0 failed, 0 running, 0 queued" in said, said
        assert re.search(r"\nlocal +ready +0/2 +8 ", said), said
    assert "1  done" in cli("ls").stdout.decode()  # the first was the pool's run


@pytest.mark.parametrize(
    ("words", "why"),
    [
        (["echo {}", "::::", "-"], "a source read from stdin"),
        (["--transfer", "cat {}", ":::", "f.txt"], "--transfer/--return"),
        (["-"], "a batch from a stream"),
    ],
)
def test_a_command_a_pool_cannot_take_yet_runs_standalone_saying_why(pool, tmp_path, words, why):
    (tmp_path / "f.txt").write_text("a file\n")
    alone = cli("-q", *words, input=b"echo a\n", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr.decode() == f"anet: {why}: running standalone, not through the pool\n"
    assert len(cli("ls").stdout.decode().splitlines()) == 1  # the pool ran nothing


def test_a_finished_run_through_a_pool_drops_its_outputs_as_a_standalone_one_does(pool, tmp_path):
    """Journal retention after a pool's run: before, only a standalone run's end settled its
    journal, and a run through the pool left every output (here a spooled one, kept as a file
    beside the journal) for good."""
    from anet.streams import retention
    from anet.streams.journal import default_journal_path, outputs_dir

    (tmp_path / "failing").mkdir()
    done = batch(tmp_path, ["head -c 3000000 /dev/zero", "echo small"])
    failing = batch(tmp_path / "failing", ["head -c 3000000 /dev/zero", "exit 3"])
    assert cli(str(done)).returncode == 0
    assert cli(str(failing)).returncode == 1
    kept, dropped = (default_journal_path(p, os.environ) for p in (failing, done))
    assert retention.look(dropped).dropped and not outputs_dir(dropped).exists()
    status = cli("status", str(done)).stdout.decode()
    assert "2/2 jobs done, 0 failed" in status  # the job table stays
    assert not retention.look(kept).dropped  # a failed job: --resume needs the outputs
    assert (outputs_dir(kept) / "0.out").stat().st_size == 3_000_000
