"""Per-job files (--transfer, --return, --cleanup, --trc): sent to the host before a job and
brought back after it, over anet's one connection, against real sshd hosts.

What a user relies on: a file with any name arrives and comes back intact; a returned file
appears whole or not at all, and it is the file of the attempt that gave the job's result
(not a failed try's, not a losing copy's); --cleanup leaves nothing on the hosts; a missing
return file or a path anet cannot place is a line of the job's stderr, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster

from anet import results
from anet.core.batch import Job
from anet.core.files import FileRules, JobFiles, here, on_host
from anet.core.record import JobResult
from anet.errors import HostError
from anet.remote.transfer import Transfers
from dispatcher.jobfiles import Back
from dispatcher.protocol import Run

RSS_MASTER = Path(__file__).with_name("rss_master.py")
ROOT = Path(__file__).resolve().parent.parent

ODD_NAMES = [
    b"plain.txt",
    b"with space.txt",
    b'it\'s "quoted".txt',
    b"$HOME and `date`.txt",
    b"new\nline.txt",
    b"latin1-\xe9\xff.txt",
    b"-starts-with-dash.txt",
]


def anet(cluster: SshdCluster, cwd: Path, *args: str | bytes, timeout: float = 120) -> bytes:
    """Run anet in `cwd`; its stdout (msgpack records), after checking it exited as anet does
    for a run (never a traceback)."""
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config)]
    done = subprocess.run(
        [*argv, *args], cwd=cwd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert 0 <= done.returncode <= 101, done.stderr.decode(errors="replace")  # failed jobs
    return done.stdout


def records(stdout: bytes) -> dict[int, JobResult]:
    return {r.id: r for r in results.read(io.BytesIO(stdout))}


def hosts(cluster: SshdCluster, slots: int = 2) -> list[str]:
    return [arg for name in cluster.names for arg in ("-S", f"{slots}/{name}")]


def left_on(cluster: SshdCluster) -> list[Path]:
    """Files (not folders) under every host's per-job file store."""
    return [
        path
        for host in cluster.hosts
        for path in (host.anet_home / "files").rglob("*")
        if not path.is_dir()
    ]


RUN = ["--format", "msgpack", "--no-journal", "-q"]


# -- the rules, pure ------------------------------------------------------------------------------


def test_paths_on_the_host_follow_gnu_parallel_and_stay_in_the_jobs_folder():
    assert on_host(b"data/a.bin") == b"data/a.bin"
    assert on_host(b"./data//a.bin") == b"data/a.bin"
    assert on_host(b"/tmp/./foo/bar") == b"foo/bar"  # /./ keeps what follows, as rsync -R
    assert on_host(b"out/./in/file.out") == b"in/file.out"
    assert here(b"out/./in/file.out") == b"out/in/file.out"
    assert here(b"data/a.out") == b"data/a.out"
    for refused in (b"/etc/passwd", b"../up.txt", b"a/../../b", b"."):
        with pytest.raises(ValueError):
            on_host(refused)


def test_transfer_sends_the_arguments_that_name_files_and_a_bad_path_fails_the_job(
    tmp_path, monkeypatch
):
    (tmp_path / "a.txt").write_bytes(b"a")
    monkeypatch.chdir(tmp_path)
    rules = FileRules.parse(True, ["{2}.extra"], ["{1}.out"], False, [])
    files = rules.files([b"a.txt", b"nofile"], 1)
    assert files is not None and not files.error
    assert files.send == ((b"a.txt", b"a.txt"), (b"nofile.extra", b"nofile.extra"))
    assert files.back == ((b"a.txt.out", b"a.txt.out"),)
    trc = FileRules.parse(False, [], [], False, ["{.}.out"])
    assert trc.transfer and trc.cleanup and trc.returns
    failed = trc.files([b"/abs/a.txt"], 1)
    assert failed is not None and "absolute path" in failed.error
    assert FileRules().files([b"a.txt"], 1) is None


# -- against sshd hosts ---------------------------------------------------------------------------


def test_odd_names_go_and_come_back_intact_and_cleanup_leaves_nothing(cluster, tmp_path):
    data = tmp_path / b"in dir".decode()
    data.mkdir()
    for i, name in enumerate(ODD_NAMES):
        (data / os.fsdecode(name)).write_bytes(b"content %d of %r\n" % (i, name))
    args = [b"in dir/" + name for name in ODD_NAMES]
    out = anet(
        cluster, tmp_path, *hosts(cluster), *RUN, "--trc", "{}.out",
        "cat {} {} > {}.out; printf %s \"$PWD\"", ":::", *args,
    )  # fmt: skip
    got = records(out)
    assert sorted(got) == list(range(len(ODD_NAMES)))
    for i, name in enumerate(ODD_NAMES):
        assert got[i].ok, got[i].stderr
        sent = (data / os.fsdecode(name)).read_bytes()
        assert (data / os.fsdecode(name + b".out")).read_bytes() == sent * 2
        assert b"/files/" in got[i].stdout  # it ran in its own folder on the host
    assert len({r.stdout for r in got.values()}) == len(ODD_NAMES)  # one folder each
    assert not [p for p in data.iterdir() if p.name.startswith(".anet-")]
    assert left_on(cluster) == []


def test_without_cleanup_the_files_stay_on_the_host_in_a_private_folder(make_cluster, tmp_path):
    own = make_cluster(1)
    (tmp_path / "in.txt").write_bytes(b"x\n")
    out = anet(
        own, tmp_path, *hosts(own), *RUN, "--transfer", "--return", "{.}.out",
        "cp {} {.}.out", ":::", "in.txt",
    )  # fmt: skip
    assert records(out)[0].ok
    kept = sorted(p.name for p in left_on(own))
    assert kept == ["in.out", "in.txt"]
    store = own.hosts[0].anet_home / "files"
    for folder in [store, *store.rglob("*")]:
        if folder.is_dir():
            assert folder.stat().st_mode & 0o077 == 0, folder


def test_a_retried_job_returns_the_files_of_its_last_attempt(cluster, tmp_path):
    lock = tmp_path / "first-try"
    command = (  # the first try also leaves job.first, which must never arrive
        f"if mkdir {lock}; then echo first | tee {{}}.first > {{}}.out; exit 3;"
        f" else echo second > {{}}.out; fi"
    )
    (tmp_path / "job").write_bytes(b"in\n")
    out = anet(
        cluster, tmp_path, *hosts(cluster), *RUN, "--retries", "1", "--trc", "{}.out",
        "--return", "{}.first", command, ":::", "job",
    )  # fmt: skip
    result = records(out)[0]
    assert result.ok and result.attempts == 2
    assert (tmp_path / "job.out").read_bytes() == b"second\n"
    assert not (tmp_path / "job.first").exists()
    assert b"'job.first': No such file" in result.stderr  # the second try made none
    assert left_on(cluster) == []


def test_a_speculative_copy_that_wins_brings_its_files_and_the_losers_never_arrive(
    make_cluster, tmp_path
):
    own = make_cluster(2)
    lock = tmp_path / "straggler"
    # Job 0's first attempt writes its file and then hangs: a straggler. The quick jobs set
    # the pace; its copy (on the other host, free by then) writes another file and wins.
    command = (
        f"if [ {{}} = slow ] && mkdir {lock}; then echo loser > {{}}.out; sleep 30; "
        f"else echo winner > {{}}.out; sleep 0.2; fi"
    )
    names = ["slow", *[f"quick{i}" for i in range(8)]]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    start = time.monotonic()
    out = anet(own, tmp_path, *hosts(own, 1), *RUN, "--trc", "{}.out", command, ":::", *names)
    assert time.monotonic() - start < 25, "the straggler got no copy"
    got = records(out)
    assert all(r.ok for r in got.values())
    assert (tmp_path / "slow.out").read_bytes() == b"winner\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".anet-")]
    assert left_on(own) == []


def test_a_50_mb_file_goes_and_comes_back_whole_in_bounded_memory(cluster, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:
        for _ in range(50):
            out.write(os.urandom(1 << 20))
    rss = tmp_path / "rss"
    argv = [sys.executable, str(RSS_MASTER), str(rss), "--ssh-config", str(cluster.ssh_config),
            "-S", "1/host1", *RUN, "--trc", "{}.back", "cp {} {}.back",
            ":::", "big.bin"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=300, env=env)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert records(done.stdout)[0].ok
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert hashlib.sha256((tmp_path / "big.bin.back").read_bytes()).hexdigest() == digest
    assert left_on(cluster) == []
    peak_mb = int(rss.read_text()) / 1024
    print(f"50 MB there and back in {elapsed:.2f} s, master peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 100  # a chunk at a time, never the whole file (about 60 MB here)


def test_a_missing_return_file_is_said_in_the_jobs_stderr_and_its_status_stays(cluster, tmp_path):
    out = anet(
        cluster, tmp_path, *hosts(cluster), *RUN, "--return", "{}.out", "--cleanup",
        "echo ran; : {}", ":::", "nothing",
    )  # fmt: skip
    result = records(out)[0]
    assert result.ok and result.stdout == b"ran\n"  # as GNU parallel: the job's own status
    assert b"anet: --return: 'nothing.out': No such file or directory" in result.stderr
    assert not (tmp_path / "nothing.out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".anet-")]


def test_a_path_that_cannot_be_placed_fails_its_job_with_one_line(cluster, tmp_path):
    out = anet(
        cluster, tmp_path, *hosts(cluster), *RUN, "--retries", "0", "--trc", "{}.out",
        "cat {}", ":::", "/etc/hostname", "../up",
    )  # fmt: skip
    got = records(out)
    for result in got.values():
        assert not result.ok and result.exit_code == 127
        assert result.stderr.count(b"\n") == 1
    assert b"is an absolute path" in got[0].stderr
    assert b"leaves the job's folder" in got[1].stderr


def test_transfer_options_need_command_mode(cluster, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("echo hi\n")
    argv = [sys.executable, "-m", "anet", "--trc", "{}.out", str(batch)]
    done = subprocess.run(argv, capture_output=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 255
    assert done.stderr.count(b"\n") == 1 and b"COMMAND ::: FILES" in done.stderr


def test_a_returned_file_this_side_cannot_write_is_one_warning_and_the_run_goes_on(
    make_cluster, tmp_path
):
    own = make_cluster(1)
    (tmp_path / "blocker").write_bytes(b"a file where the folder should be")
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(own.ssh_config), *hosts(own)]
    done = subprocess.run(
        [*argv, *RUN, "--return", "blocker/{}.out", "--return", "{}.out",
         "mkdir blocker; head -c 700000 /dev/zero | tee blocker/{}.out > {}.out",
         ":::", "big"],
        cwd=tmp_path, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"cannot write 'blocker/big.out'" in done.stderr
    assert b"protocol error" not in done.stderr and b"Traceback" not in done.stderr
    assert records(done.stdout)[0].ok
    assert (tmp_path / "big.out").read_bytes() == bytes(700000)


def test_with_a_deps_folder_a_job_with_files_finds_it_as_anet_deps(cluster, tmp_path):
    deps = tmp_path / "tools"
    deps.mkdir()
    (deps / "count.sh").write_text('wc -l < "$1"\n')
    (tmp_path / "lines.txt").write_bytes(b"1\n2\n3\n")
    out = anet(
        cluster, tmp_path, "-S", "1/host1", *RUN, "--deps", "tools/", "--trc", "{}.n",
        'sh "$ANET_DEPS/count.sh" {} > {}.n', ":::", "lines.txt",
    )  # fmt: skip
    assert records(out)[0].ok, records(out)[0].stderr
    assert (tmp_path / "lines.txt.n").read_bytes().strip() == b"3"


# -- the master's side, pure: what a host may send back, and what is renamed ----------------------


def _placed(tmp_path: Path, aid: int, host: str = "h1"):
    target = os.fsencode(tmp_path / "out" / "a.res")
    job = Job(7, b"true", files=JobFiles(back=((b"a.res", target),)))
    transfers = Transfers(None, None)  # type: ignore[arg-type]  # nothing to send: no task
    frames = transfers.place(host, [Run(aid, 7, b"true")], lambda _aid: job)
    assert [type(f).__name__ for f in frames] == ["Place", "Run"]
    return transfers, Path(os.fsdecode(target))


def test_returned_files_past_max_output_are_dropped_as_output_past_it_is(cluster, tmp_path):
    """A host (or a job) cannot fill this side's disk through --return: the files an attempt
    sends back count against --max-output as its output does; past it they are not kept."""
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config)]
    done = subprocess.run(
        [*argv, *hosts(cluster), *RUN, "--max-output", "1M", "--return", "{}.out",
         "--return", "{}.small", "--cleanup",
         "echo tiny > {}.small; head -c 3000000 /dev/zero > {}.out; echo ran", ":::", "big"],
        cwd=tmp_path, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"job 0: its returned files passed --max-output 1M; none is kept" in done.stderr
    assert records(done.stdout)[0].ok and records(done.stdout)[0].stdout == b"ran\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing of that attempt is kept"


def test_a_host_may_send_back_only_what_it_was_asked_for(tmp_path):
    transfers, _ = _placed(tmp_path, 1)
    for host, msg in (("h2", Back(1, 0, b"x", True)), ("h1", Back(2, 0, b"x", True)),
                      ("h1", Back(1, 1, b"x", True))):  # fmt: skip
        with pytest.raises(HostError, match="protocol error") as raised:
            transfers.back(host, msg)
        assert raised.value.permanent
    transfers.back("h1", Back(1, 0, b"x", True))
    with pytest.raises(HostError, match="protocol error"):  # that file ended
        transfers.back("h1", Back(1, 0, b"more", True))


def test_only_the_attempt_that_gave_the_result_renames_its_files(tmp_path):
    transfers, target = _placed(tmp_path, 1)
    transfers.back("h1", Back(1, 0, b"first ", False))
    assert not target.exists() and len(list(target.parent.iterdir())) == 1  # the hidden part
    transfers.back("h1", Back(1, 0, b"try", True))
    transfers.ended(1, [])  # no result: a try that runs again
    assert list(target.parent.iterdir()) == []
    transfers, target = _placed(tmp_path, 2)
    transfers.back("h1", Back(2, 0, b"winner", True))
    transfers.ended(2, [JobResult(7, True, 0, None, "h1", 2, 0.1, b"", b"")])
    assert [p.name for p in target.parent.iterdir()] == ["a.res"]
    assert target.read_bytes() == b"winner"
    transfers, target = _placed(tmp_path, 3)
    transfers.back("h1", Back(3, 0, b"cut sho", False))  # the host went before the end
    transfers.host_lost("h1")
    assert target.read_bytes() == b"winner" and len(list(target.parent.iterdir())) == 1


def test_a_file_to_send_that_cannot_be_read_fails_its_job_with_the_reason(cluster, tmp_path):
    (tmp_path / "a").write_bytes(b"data\n")
    out = anet(
        cluster, tmp_path, "-S", "1/host1", *RUN, "--retries", "0", "--tf", "{}",
        "--tf", "{}.idx", "cat {} {}.idx", ":::", "a",
    )  # fmt: skip
    result = records(out)[0]
    assert not result.ok and result.exit_code == 127 and result.stdout == b""
    assert result.stderr == b"anet: --transfer: cannot read 'a.idx': No such file or directory\n"


def test_a_sent_file_keeps_its_permission_bits_as_rsync_keeps_them(cluster, tmp_path):
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho tool ran\n")
    script.chmod(0o750)
    (tmp_path / "data").write_bytes(b"")
    (tmp_path / "data").chmod(0o640)
    out = anet(
        cluster, tmp_path, "-S", "1/host1", *RUN, "--tf", "tool.sh", "--transfer",
        "./tool.sh; stat -c %a tool.sh {}", ":::", "data",
    )  # fmt: skip
    result = records(out)[0]
    assert result.ok, result.stderr
    assert result.stdout.split() == [b"tool", b"ran", b"750", b"640"]
