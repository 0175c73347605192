"""What a hostile host can say, and what anet makes of it (invariant 8 of the design).

Every host here is a real sshd on loopback; the hostile one runs the fake dispatcher of
tests/hostile_dispatcher.py, which forges, lies and misbehaves as each test asks. Results are
read back with anet's own reader, and every assertion is about what a user would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hostile_dispatcher import Hostile
from sshd_hosts import SshdCluster
from test_machines import SLEEPER, Planted

from anet import results
from anet.api import Cluster
from anet.core.record import JobResult
from anet.remote.connect import SshOptions
from anet.remote.session import MAX_AUTO_SLOTS
from dispatcher.procs import HostProbe, ProcsFound, Signalled
from dispatcher.protocol import PROTOCOL_VERSION, Hello, Run
from dispatcher.syncproto import SyncWant


def run_anet(
    cluster: SshdCluster, *args: str, batch: Path | None = None, stderr: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`anet [COMMAND] --ssh-config ... ARGS [BATCH]`, its output captured (its stderr in the
    file `stderr` as it is written, if given: jobs can wait for a line there)."""
    words = {"find": 1, "killall": 1, "onall": 1, "sync": 1, "hosts": 2}.get(args[0], 0)
    config = ["--ssh-config", str(cluster.ssh_config)]
    argv = [sys.executable, "-m", "anet", *args[:words], *config, *args[words:]]
    with contextlib.ExitStack() as files:
        err = files.enter_context(stderr.open("wb")) if stderr else subprocess.PIPE
        done = subprocess.run(
            [*argv, *([str(batch)] if batch else [])],
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    if stderr:
        done.stderr = stderr.read_bytes()
    return done


def hosts_args(cluster: SshdCluster, slots: int | None = None) -> list[str]:
    prefix = f"{slots}/" if slots else ""
    return [arg for name in cluster.names for arg in ("-S", f"{prefix}{name}")]


def write_batch(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "batch.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def decode(stdout: bytes) -> list[JobResult]:
    return list(results.read(io.BytesIO(stdout)))


def until_in(path: Path, text: str) -> str:
    """Shell words that wait (10 s at most) until `text` is in the file `path`."""
    return (
        f"n=0; until grep -qs '{text}' {path} || [ $n -ge 200 ]; do sleep 0.05; n=$((n+1)); done; "
    )


def once_it_said_hello(bad: Hostile) -> str:
    """A job's first words: wait until the hostile host's dispatcher said Hello, so the honest
    host cannot finish the batch before the hostile one had a chance to lie."""
    return until_in(bad.events_file, "^hello")


def test_the_fake_dispatcher_is_honest_until_told(make_hostile, tmp_path):
    own, bad = make_hostile(2)
    wait = once_it_said_hello(bad)
    batch = write_batch(tmp_path, [f"{wait}echo job-{i}; echo $ANET_HOST >&2" for i in range(40)])
    done = run_anet(own, *hosts_args(own, 2), "--format", "msgpack", batch=batch)
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    assert sorted(r.id for r in records) == list(range(40))
    assert all(r.stdout == f"job-{r.id}\n".encode() for r in records)
    assert {r.stderr for r in records} == {b"host1\n", b"host2\n"}  # both hosts ran jobs
    assert [e for e in bad.events() if e.startswith("hello")]  # the fake, not the real one


def anet_lines(stderr: bytes, host: str) -> list[str]:
    """anet's stderr lines about `host`."""
    return [line for line in stderr.decode(errors="replace").splitlines() if f"{host}:" in line]


# -- item 1: a host speaks only for itself ---------------------------------------------------------


def test_a_host_cannot_forge_the_results_of_another(make_hostile, tmp_path):
    own, bad = make_hostile(2)
    bad.behave(forge=True)
    wait = once_it_said_hello(bad)
    batch = write_batch(
        tmp_path, [f"{wait}sleep 0.0$((RANDOM % 5)); echo job-{i}" for i in range(200)]
    )
    done = run_anet(own, *hosts_args(own, 4), "--format", "msgpack", batch=batch)
    assert any(e.startswith("forged") for e in bad.events())  # it did try
    records = decode(done.stdout)
    assert sorted(r.id for r in records) == list(range(200))  # each exactly once
    wrong = [r.id for r in records if r.stdout != f"job-{r.id}\n".encode() or not r.ok]
    assert wrong == [], f"{len(wrong)} forged results: {wrong[:10]}"
    assert done.returncode == 0, done.stderr
    reported = anet_lines(done.stderr, "host2")
    assert len(reported) == 1 and "attempt" in reported[0], done.stderr


# -- item 2: every field a host sends is bounded before it is believed -------------------------

NAN, INF = float("nan"), float("inf")
_LIES: dict[str, tuple[dict[str, Any], str, str]] = {
    # knobs, what the host's one stderr line must say, the fake's event that shows the lie
    "10**7 cores": ({"hello": {"cores": 10**7}}, "Hello.cores", "hello"),
    "a pid of -1 in Hello": ({"hello": {"pid": -1}}, "Hello.pid", "hello"),
    "a 100,000 character python": ({"hello": {"python": "3" * 100_000}}, "Hello.python", "hello"),
    "exit code 2**40": ({"exit": {"code": 2**40}}, "Exit.code", "lied Exit"),
    "a negative duration": ({"exit": {"duration": -1.0}}, "Exit.duration", "lied Exit"),
    "a NaN duration": ({"exit": {"duration": NAN}}, "Exit.duration", "lied Exit"),
    "an infinite cpu time": ({"exit": {"cpu": INF}}, "Exit.cpu", "lied Exit"),
    "a negative maxrss": ({"exit": {"maxrss_kb": -1}}, "Exit.maxrss_kb", "lied Exit"),
    "a code and a signal": ({"exit": {"signal": 9}}, "Exit", "lied Exit"),
    "stream 7": ({"output": {"stream": 7}}, "Output.stream", "lied Output"),
    "pid 0 in Started": ({"started": {"pid": 0}}, "Started.pid", "lied Started"),
    "slot 99 of 2": ({"started": {"slot": 99}}, "Started in slot 99 of 2", "lied Started"),
    "Started twice": ({"started_twice": True}, "a second Started", "started twice"),
    "Exit twice": ({"exit_twice": True}, "Exit about attempt", "exit twice"),
    "Output after Exit": ({"output_after_exit": True}, "Output about attempt", "output after"),
    "a Run from the dispatcher": (
        {"after_hello": [[Run.CODE, 1, 1, b"rm -rf ~", {}]]},
        "the dispatcher sent Run, which only the master sends",
        "hello",
    ),
    "a second Hello": (
        {"after_hello": [[Hello.CODE, PROTOCOL_VERSION, "h", 2, "3.11.7", 0.0, 5, "/w"]]},
        "the dispatcher sent a second Hello",
        "hello",
    ),
}


@pytest.mark.parametrize(("knobs", "said", "told"), list(_LIES.values()), ids=list(_LIES))
def test_a_host_that_lies_is_given_up_and_its_jobs_run_elsewhere(
    make_hostile, tmp_path, knobs: dict[str, Any], said: str, told: str
):
    own, bad = make_hostile(2)
    bad.behave(**knobs)
    batch = write_batch(tmp_path, [f"{once_it_said_hello(bad)}echo job-{i}" for i in range(20)])
    done = run_anet(own, *hosts_args(own, 2), "--format", "msgpack", batch=batch)
    assert any(e.startswith(told) for e in bad.events())  # it did lie
    records = decode(done.stdout)
    assert sorted(r.id for r in records) == list(range(20))
    assert all(r.ok and r.exit_code == 0 and r.stdout == f"job-{r.id}\n".encode() for r in records)
    assert done.returncode == 0, done.stderr
    reported = anet_lines(done.stderr, "host2")
    assert len(reported) == 1, done.stderr
    assert "protocol error" in reported[0] and said in reported[0], reported
    assert len(reported[0]) < 400 and b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "knobs",
    [{"boot_error": b"E" * 3_000_000}, {"boot_stderr": b"S" * 3_000_000}],
    ids=["a boot error line of 3 MB", "a stderr line of 3 MB"],
)
def test_a_host_cannot_fill_the_masters_memory_or_stderr_with_one_line(
    make_hostile, tmp_path, knobs: dict[str, Any]
):
    own, bad = make_hostile(2)
    bad.behave(**knobs)
    stderr = tmp_path / "stderr"
    batch = write_batch(tmp_path, [f"{until_in(stderr, 'host2:')}echo job-{i}" for i in range(4)])
    done = run_anet(own, *hosts_args(own, 2), "--format", "msgpack", batch=batch, stderr=stderr)
    assert bad.events()[:1] in (["boot error"], ["boot stderr"])
    assert sorted(r.id for r in decode(done.stdout)) == [0, 1, 2, 3]
    (line,) = anet_lines(done.stderr, "host2")
    assert len(line) < 5000, f"{len(line)} characters"


def test_a_host_gets_the_slots_the_user_allowed_or_a_sane_maximum(make_hostile):
    own, bad = make_hostile(2)
    bad.behave(hello={"cores": 5000})

    async def slots(spec: str) -> int:
        ssh = SshOptions(config=own.ssh_config)
        async with Cluster([spec], ssh=ssh) as cluster:
            return (await cluster.ready_session(spec)).slots

    assert asyncio.run(slots("host2")) == MAX_AUTO_SLOTS < 5000
    assert asyncio.run(slots("7/host2")) == 7
    assert asyncio.run(slots("2000/host2")) == 2000  # the user's word beats the cap


# -- item 4: a bad reply is that host's error; the others still answer -------------------------

_BAD_REPLIES: dict[str, list[Any] | bytes] = {
    "a malformed row": [ProcsFound.CODE, [["not", "a", "row"]], ""],
    "a reply of the wrong type": [HostProbe.CODE, 1, 2, 0.5],
    "bytes that are no frame": b"\x00\x00\x00\x03\xc1\xc1\xc1",
}


@pytest.mark.parametrize("reply", list(_BAD_REPLIES.values()), ids=list(_BAD_REPLIES))
def test_find_shows_every_other_host_when_one_replies_garbage(make_hostile, reply):
    own, bad = make_hostile(2)
    bad.behave(replies={"FindProcs": reply})
    with contextlib.closing(Planted()) as planted:
        sleeper = planted.start(SLEEPER, "sleeper")
        done = run_anet(own, "find", planted.marker, *hosts_args(own), "--format", "jsonl")
    assert "replied FindProcs" in bad.events()
    assert b"Traceback" not in done.stderr, done.stderr
    assert done.returncode == 3, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["pid"] for r in rows if r["host"] == "host1"] == [sleeper.pid]
    (error,) = [r["error"] for r in rows if r["host"] == "host2"]
    assert error.startswith("protocol error: ") and len(error) < 200, error


def test_killall_kills_on_the_other_hosts_when_one_replies_garbage(make_hostile):
    own, bad = make_hostile(2)
    bad.behave(replies={"SignalProcs": [Signalled.CODE, [[1]]]})
    with contextlib.closing(Planted()) as planted:
        sleeper = planted.start(SLEEPER, "sleeper")
        planted.wait_started(2)
        done = run_anet(own, "killall", planted.marker, *hosts_args(own), "--format", "jsonl")
    assert "replied SignalProcs" in bad.events()
    assert b"Traceback" not in done.stderr, done.stderr
    assert done.returncode == 3, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["pid"], r["result"]) for r in rows if r["host"] == "host1"] == [
        (sleeper.pid, "killed")
    ]
    (error,) = [r["error"] for r in rows if r["host"] == "host2"]
    assert "protocol error" in error


def test_onall_shows_every_other_host_when_one_lies(make_hostile):
    own, bad = make_hostile(2)
    bad.behave(exit={"code": 2**40})
    done = run_anet(own, "onall", *hosts_args(own), "--format", "jsonl", "--", "echo hi")
    assert any(e.startswith("lied Exit") for e in bad.events())
    assert b"Traceback" not in done.stderr, done.stderr
    rows = {r["host"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert rows["host1"]["stdout"] == "hi\n" and rows["host1"]["exit"] == 0
    assert "protocol error" in rows["host2"]["error"]
    assert done.returncode == 1


def test_hosts_check_shows_every_other_host_when_one_replies_garbage(make_hostile):
    own, bad = make_hostile(2)
    bad.behave(replies={"ProbeHost": [ProcsFound.CODE, [], ""]})
    done = run_anet(own, "hosts", "check", *hosts_args(own), "--format", "jsonl")
    assert "replied ProbeHost" in bad.events()
    assert b"Traceback" not in done.stderr, done.stderr
    rows = {r["host"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert rows["host1"]["error"] is None and rows["host1"]["cores"] >= 1
    assert "protocol error" in rows["host2"]["error"]
    assert done.returncode != 0


def make_deps(tmp_path: Path) -> Path:
    deps = tmp_path / "deps"
    (deps / "sub").mkdir(parents=True)
    (deps / "a.txt").write_text("a")
    (deps / "sub" / "b.txt").write_text("b")
    return deps


def test_anet_sync_goes_on_when_a_host_wants_files_that_do_not_exist(make_hostile, tmp_path):
    own, bad = make_hostile(2)
    bad.behave(replies={"SyncEntries": [SyncWant.CODE, b"", 0]})  # a bitmap too short
    done = run_anet(own, "sync", *hosts_args(own), str(make_deps(tmp_path)))
    assert "replied SyncEntries" in bad.events()
    assert b"Traceback" not in done.stderr, done.stderr
    # One line about host2: its row of the table (sync tries once: no log line says it again).
    (line,) = [line for line in done.stderr.decode().splitlines() if "host2" in line]
    assert line.startswith("host2 ") and "FAILED: " in line, line
    assert "protocol error" in line and "SyncWant" in line, line
    assert done.returncode != 0
    assert any(p.name == "a.txt" for p in own["host1"].anet_home.rglob("a.txt"))


def test_a_host_that_answers_a_deps_offer_out_of_turn_is_given_up(make_hostile, tmp_path):
    own, bad = make_hostile(2)
    bad.behave(replies={"SyncOffer": [HostProbe.CODE, 1, 2, 0.5]})
    stderr = tmp_path / "stderr"
    batch = write_batch(tmp_path, [f"{until_in(stderr, 'host2:')}echo job-{i}" for i in range(4)])
    deps = str(make_deps(tmp_path))
    done = run_anet(own, *hosts_args(own), "--format", "msgpack", str(batch), deps, stderr=stderr)
    assert "replied SyncOffer" in bad.events()
    assert sorted(r.id for r in decode(done.stdout)) == [0, 1, 2, 3]
    (line,) = anet_lines(done.stderr, "host2")
    assert "protocol error" in line and "retrying" not in line, line
