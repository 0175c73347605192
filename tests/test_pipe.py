"""`--pipe` and `--pipe-part`: input cut into blocks at record boundaries, one job's stdin each.

The cutting is pure enough to check on any input (hypothesis); the command end to end runs
against the local dispatcher and the shared sshd hosts, with 200 MB through a master of at most
150 MB (its peak RSS from rss_master.py, as tests/test_bigout.py measures it).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anet.pipeblocks as pipeblocks
from anet.pipeblocks import Blocks, Cutting, parts

RSS_MASTER = Path(__file__).with_name("rss_master.py")
ROOT = Path(__file__).resolve().parent.parent


def cut(data: bytes, cutting: Cutting, tmp_path: Path) -> tuple[list[bytes], list[bytes]]:
    """The blocks --pipe makes of `data`, and the parts --pipe-part makes of it as a file."""
    with Blocks(cutting, b"cat", tmp_path / "spool") as blocks:
        piped = [job.stdin.read_bytes() for job in blocks.jobs(io.BytesIO(data))]
        assert list(blocks.folder.iterdir()) == [] or all(
            p.stat().st_mode & 0o077 == 0 for p in blocks.folder.iterdir()
        )
    (tmp_path / "in").write_bytes(data)
    whole = (tmp_path / "in").read_bytes()
    parted = [
        whole[job.stdin.offset : job.stdin.offset + job.stdin.length]
        for job in parts(tmp_path / "in", cutting, b"cat")
    ]
    return piped, parted


records = st.lists(st.binary(max_size=12), max_size=30)
separators = st.sampled_from(
    [(b"\n", b""), (b"\r\n", b""), (b"", b">"), (b"\n", b">"), (b"ab", b"")]
)


@settings(max_examples=300, deadline=None)
@given(records, separators, st.integers(1, 40), st.sampled_from([1, 2, 5, 64, 1 << 20]))
def test_blocks_and_parts_hold_the_input_cut_only_between_records(
    tmp_path_factory, bodies, separator, block, piece
):
    recend, recstart = separator
    data = b"".join(recstart + body + recend for body in bodies)
    old, pipeblocks.PIECE = pipeblocks.PIECE, piece  # a record straddles pieces, and blocks
    try:
        piped, parted = cut(data, Cutting(block, recend, recstart), tmp_path_factory.mktemp("c"))
    finally:
        pipeblocks.PIECE = old
    for blocks in (piped, parted):
        assert b"".join(blocks) == data
        assert all(blocks)  # no empty block
        for this, after in itertools.pairwise(blocks):
            assert (this + after[: len(recstart)]).endswith(recend + recstart)


def test_a_block_ends_at_the_last_record_end_within_its_size_or_the_first_after(tmp_path):
    lines = b"aaaa\nbb\ncccccccccccc\nd\n"
    piped, parted = cut(lines, Cutting(8), tmp_path)
    assert piped == parted == [b"aaaa\nbb\n", b"cccccccccccc\n", b"d\n"]


def test_the_header_tops_every_block(tmp_path):
    data = b"name,n\n" + b"".join(b"row%d,%d\n" % (i, i) for i in range(100))
    for header in (":", "1", r"name,.*\n"):
        with Blocks(Cutting.parse(100, None, None, header), b"cat", tmp_path) as blocks:
            got = [job.stdin.read_bytes() for job in blocks.jobs(io.BytesIO(data))]
        assert len(got) > 5
        assert all(block.startswith(b"name,n\nrow") for block in got)
        assert b"".join(block[len(b"name,n\n") :] for block in got) == data[len(b"name,n\n") :]


# -- the command --------------------------------------------------------------------------------


def anet(*args: str, stdin: bytes = b"", cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "anet", *args], input=stdin, capture_output=True, cwd=cwd,
        timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def jsonl(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_pipe_keeps_order_ids_and_every_byte_with_k(tmp_path):
    data = b"".join(b"%d\n" % i for i in range(200_000))
    run = anet("-S", "3/:", "-q", "--no-journal", "-k", "--format", "jsonl", "--pipe",
               "--block", "100k", "cat", stdin=data)  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = jsonl(run.stdout)
    assert [r["id"] for r in results] == list(range(len(results)))
    assert len(results) > 10
    assert "".join(r["stdout"] for r in results).encode() == data


def test_a_retried_block_is_the_same_block(tmp_path):
    """Every job fails its first attempt after reading part of its block; the retries' output
    is the whole input, in order."""
    data = b"".join(b"line %d\n" % i for i in range(100_000))
    marks = tmp_path / "marks"
    marks.mkdir()
    command = (
        f"if [ -e {marks}/$ANET_JOB_ID ]; then cat; "
        f"else touch {marks}/$ANET_JOB_ID; head -c 1000 > /dev/null; exit 1; fi"
    )
    run = anet("-S", "2/:", "-q", "--no-journal", "-k", "--format", "jsonl", "--pipe",
               "--block", "200k", command, stdin=data)  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = jsonl(run.stdout)
    assert {r["attempts"] for r in results} == {2}
    assert "".join(r["stdout"] for r in results).encode() == data
    spool = Path(os.environ["XDG_STATE_HOME"], "anet", "spool")  # the test's own (conftest)
    assert spool.is_dir() and not list(spool.glob("pipe-*"))  # every block removed


def test_pipe_part_reads_the_file_in_parts_over_the_sshd_hosts(cluster, tmp_path):
    data = b"".join(b"%08d,some record\n" % i for i in range(300_000))
    (tmp_path / "big.csv").write_bytes(data)
    hosts = [arg for host in cluster.hosts for arg in ("-S", f"2/{host.name}")]
    run = anet("--ssh-config", str(cluster.ssh_config), *hosts, "-q", "--no-journal",
               "--format", "jsonl", "--pipe-part", "-a", str(tmp_path / "big.csv"),
               "--block", "256k", "-k", "sleep 0.3; cat", stdin=b"")  # fmt: skip
    # (each part takes a while: a run does not wait for hosts still booting, and one host
    # alone would take instant parts as fast as they come)
    assert run.returncode == 0, run.stderr
    results = jsonl(run.stdout)
    assert "".join(r["stdout"] for r in results).encode() == data
    assert len({r["host"] for r in results}) > 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--pipe", "batch.txt"], "--pipe runs COMMAND on every block: 'batch.txt' is a file"),
        (["--pipe", "--block", "lots", "wc -l"], "--block takes a size (e.g. 10M), not 'lots'"),
        (["--pipe", "--block", "0", "wc -l"], "--block must be at least 1 byte, not 0"),
        (["--block", "1M", "batch.txt"], "--block goes with --pipe or --pipe-part"),
        (["--pipe", "--resume", "wc -l"], "--resume cannot take up a --pipe run"),
        (["--pipe-part", "wc -l"], "--pipe-part needs the file to cut: -a FILE"),
        (["--pipe", "--recend", "", "wc -l"], "--recend and --recstart cannot both be empty"),
        (["--pipe", "--header", "(", "wc -l"], "--header '(' is not a regular expression"),
    ],
)
def test_a_user_mistake_is_one_line_and_exit_255(tmp_path, args, said):
    (tmp_path / "batch.txt").write_text("echo hi\n")
    run = anet("-S", ":", *args, stdin=b"1\n", cwd=tmp_path)
    assert run.returncode == 255, run  # anet's own error, as every usage error
    lines = run.stderr.decode().splitlines()
    assert len(lines) == 1 and said in lines[0], lines


def test_200_mb_through_pipe_counts_every_line_in_a_master_of_at_most_150_mb(cluster, tmp_path):
    """200 MB of 100-byte lines from a generator, 10M blocks to two sshd hosts counting lines:
    the counts add up exactly, and the master's peak RSS stays under 150 MB. 200 MB is past
    what the master keeps of the input in memory (a 1 MiB piece; 2 MiB unacknowledged per
    attempt; blocks wait in files), and held whole it alone passes the bound; 1 GB (bench's
    `pipe`, docs/benchmarks.md) took 25 s here."""
    rss = tmp_path / "rss"
    argv = [sys.executable, str(RSS_MASTER), str(rss), "--ssh-config", str(cluster.ssh_config),
            "-S", "2/host1", "-S", "2/host2", "-q", "--no-journal", "--format", "jsonl",
            "--pipe", "--block", "10M", "wc -l"]  # fmt: skip
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    line = b"x" * 99 + b"\n"
    chunk = line * 10_000  # 1 MB

    def feed() -> None:
        with proc.stdin:
            for _ in range(200):
                proc.stdin.write(chunk)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        results = [json.loads(row) for row in proc.stdout]
        assert proc.wait(300) == 0
    finally:
        writer.join(60)
        if proc.poll() is None:
            proc.kill()  # our own child, by its pid
            proc.wait()
        proc.stdout.close()
    assert sorted(r["id"] for r in results) == list(range(len(results)))
    assert len(results) == 20  # 2e8 bytes in 10 MiB blocks
    assert sum(int(r["stdout"]) for r in results) == 2_000_000
    assert all(r["ok"] for r in results)
    peak = int(rss.read_text())
    assert peak <= 150_000, f"master peak RSS {peak} KiB"
    assert not list((tmp_path / "state").glob("**/pipe-*"))
