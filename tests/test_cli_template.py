"""Command mode end to end: the generated commands are the batch, run by the real `anet` here
(no hosts: the local dispatcher) and on the shared sshd cluster, results checked byte for byte;
a generated batch's journal refuses changed inputs on --resume as a batch file's does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sshd_hosts import SshdCluster
from test_cli_ssh import decode
from test_template import gnu_parallel

from anet.core.template import dirname

NAMES = [
    "plain", "a b.txt", "it's.jpg", 'say "hi".x', "$HOME", "`id`", "a*", "é.ü", "", "-n",
    ".bashrc", "d/e.f/g.h", "two\nlines.txt", "tab\there",
]  # fmt: skip


def anet(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "anet", *map(str, args)]
    return subprocess.run(argv, capture_output=True, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL)


def expected(name: str) -> bytes:
    """What `printf '%s|%s|%s|%s' {} {.} {/} {//}` prints for `name`, computed here."""
    raw = name.encode()
    base = raw.rsplit(b"/", 1)[-1] if b"\n" not in raw else raw  # no newline in these with /
    stem = raw[: raw.rfind(b".")] if b"." in raw.rsplit(b"/", 1)[-1] else raw
    return b"|".join([raw, stem, base, dirname(raw)])


TEMPLATE = "printf '%s|%s|%s|%s' {} {.} {/} {//}"


def test_awkward_names_arrive_intact_on_the_local_machine():
    done = anet("-q", "--format", "msgpack", TEMPLATE, ":::", *NAMES)
    assert done.returncode == 0, done.stderr
    records = sorted(decode(done.stdout), key=lambda r: r.id)
    assert [r.id for r in records] == list(range(len(NAMES)))  # 0-based, one job each
    assert [r.stdout for r in records] == [expected(name) for name in NAMES]


def test_a_newline_in_an_argument_file_item_is_one_job(tmp_path: Path):
    items = tmp_path / "items"
    items.write_bytes(b"one\ntwo\0three\0")
    done = anet("-q", "-k", "--format", "msgpack", "-0", "printf %s {}", "::::", items)
    assert done.returncode == 0, done.stderr
    assert [(r.id, r.stdout) for r in decode(done.stdout)] == [(0, b"one\ntwo"), (1, b"three")]


@pytest.mark.usefixtures("no_leftover_processes")
def test_on_the_cluster_in_job_order_with_numbers_and_slots(cluster: SshdCluster):
    args = ["--ssh-config", cluster.ssh_config, "-S", "2/host1", "-S", "2/host2", "-k", "-q"]
    template = "printf '%s %s %s' {#} {%} {2}{1}"
    done = anet(*args, "--format", "msgpack", template, ":::", *"abcd", ":::", "x", "y z")
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    pairs = [(a, b) for a in "abcd" for b in ("x", "y z")]
    assert [r.id for r in records] == list(range(8))
    for record, (first, second) in zip(records, pairs, strict=True):
        number, slot, joined = record.stdout.decode().split(" ", 2)
        assert (number, joined) == (str(record.id + 1), second + first)
        assert slot in ("1", "2")
    assert {r.host for r in records} <= {"host1", "host2"}


def test_resume_finishes_the_inputs_and_refuses_changed_ones(tmp_path: Path):
    (tmp_path / "ok-a").touch()
    template = "echo {} >> log; test -e ok-{}"
    first = anet(
        "-q", "--retries", "0", "--format", "jsonl", template, ":::", "a", "b", cwd=tmp_path
    )
    assert first.returncode == 1, first.stderr  # b failed
    changed = anet("-q", "--resume", template, ":::", "a", "b", "c", cwd=tmp_path)
    assert changed.returncode == 255
    assert changed.stderr.decode().startswith("anet: the inputs changed since the journal ")
    (tmp_path / "ok-b").touch()
    resumed = anet("-q", "--resume", "--format", "msgpack", template, ":::", "a", "b", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r.id for r in decode(resumed.stdout)) == [0, 1]
    assert (tmp_path / "log").read_text() == "a\nb\nb\n"  # a ran once, b again


@pytest.mark.parametrize("args", [["echo", ":::"], ["echo", "::::", "/no/such/file"]])
def test_a_mistake_is_one_line_from_the_real_command(args):
    done = anet(*args)
    assert done.returncode == 255
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr


def test_a_batch_file_runs_as_before_and_dry_runs(tmp_path: Path):
    batch = tmp_path / "batch.txt"
    batch.write_bytes(b"echo {}\n\nprintf '%s' ':::'\n")
    done = anet("-q", "-k", "--format", "msgpack", batch)
    assert [(r.id, r.stdout) for r in decode(done.stdout)] == [(0, b"{}\n"), (1, b":::")]
    assert anet("--dry-run", batch).stdout == b"echo {}\nprintf '%s' ':::'\n"


def test_the_plain_format_is_the_jobs_own_output_grouped_per_job():
    template = "printf 'start %s\\n' {}; sleep 0.{#}; printf 'end %s\\n' {}; test {} != b"
    done = anet("-q", "-k", "--retries", "0", "--format", "plain", template, ":::", "a", "b", "c")
    assert done.returncode == 1, done.stderr  # b failed: its output is there all the same
    assert done.stdout == b"".join(b"start %s\nend %s\n" % (x, x) for x in (b"a", b"b", b"c"))


def test_plain_with_tag_prints_what_gnu_parallel_prints():
    args = ["-k", "--tag", "printf '%s-\\n' {2} {1}; echo", ":::", "a", "b c", ":::", "1", "é"]
    theirs = subprocess.run(
        [gnu_parallel(), "--will-cite", *args], capture_output=True, timeout=60, check=True
    ).stdout
    mine = anet("-q", "--format", "plain", *args)
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout == theirs
    assert theirs.startswith(b"a 1\t1-\na 1\ta-\na 1\t\n")


def test_plain_tags_of_a_resumed_run_and_of_a_batch_file(tmp_path: Path):
    (tmp_path / "ok-a").touch()
    template = "echo {}; test -e ok-{}"
    first = anet(
        "-q", "--retries", "0", "--format", "plain", template, ":::", "a", "b", cwd=tmp_path
    )
    assert first.returncode == 1 and sorted(first.stdout.splitlines()) == [b"a", b"b"]
    (tmp_path / "ok-b").touch()
    resumed = anet(
        "-q",
        "-k",
        "--resume",
        "--format",
        "plain",
        "--tag",
        template,
        ":::",
        "a",
        "b",
        cwd=tmp_path,
    )  # a's result is written again (its tag made again from the inputs), b runs
    assert (resumed.returncode, resumed.stdout) == (0, b"a\ta\nb\tb\n"), resumed.stderr
    batch = tmp_path / "batch.txt"
    batch.write_bytes(b"echo one\nprintf 'x\\ny'\n")
    done = anet("-q", "-k", "--format", "plain", "--tag", batch)
    assert done.stdout == b"echo one\tone\nprintf 'x\\ny'\tx\nprintf 'x\\ny'\ty\n"


def test_deps_come_with_an_option_in_command_mode(tmp_path: Path):
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "greet.sh").write_text('printf "hi %s" "$1"\n')
    done = anet(
        "-q", "-k", "--format", "plain", "--deps", f"{deps}/", "sh greet.sh {}", ":::", "a b"
    )
    assert (done.returncode, done.stdout) == (0, b"hi a b"), done.stderr
    twice = anet("--deps", deps, tmp_path / "batch.txt", deps)
    assert twice.returncode == 255
    assert twice.stderr == b"anet: give the deps folder once: as DEPS or as --deps\n"


def test_a_dry_run_into_a_pipe_closed_early_ends_quietly():
    argv = [sys.executable, "-m", "anet", "--dry-run", "echo", ":::", *map(str, range(100_000))]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"echo 0\n"
        proc.stdout.close()  # `| head -1`
        assert proc.stderr.read() == b""
        assert proc.wait(timeout=60) == 0
