"""Batches and consumers written for the original ANet, through the real `anet` command on this
machine and on real sshd hosts: its job ids, its `dependencies/` layout, its record stream.

The original's own code decides what is expected (tests/original_anet.py): its batch reader
numbers the jobs, its example consumer reads the results.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from original_anet import CONSUMER, original_commands
from sshd_hosts import SshdCluster

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.usefixtures("no_leftover_processes"), pytest.mark.slow]


def anet_argv(where: str, cluster: SshdCluster, *args: str) -> list[str]:
    """`python3 -m anet` on this machine (`local`) or on two sshd hosts of the shared cluster."""
    hosts = [] if where == "local" else ["--ssh-config", str(cluster.ssh_config)]
    if where == "sshd":
        hosts += ["-S", f"2/{cluster.names[0]}", "-S", f"2/{cluster.names[1]}"]
    return [sys.executable, "-m", "anet", "-q", *hosts, *args]


def anet_env(tmp_path: Path) -> dict[str, str]:
    """Journal and the local host's deps store under tmp_path, never the user's."""
    env = os.environ | {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "ANET_HOME": str(tmp_path / "anet-home"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("ANET_HOSTS", None)
    return env


def records(stream: bytes) -> dict[int, bytes]:
    """The original's record stream: uint32 LE id, uint32 LE length, the bytes; each id once."""
    out: dict[int, bytes] = {}
    while stream:
        job_id, length = struct.unpack_from("<II", stream)
        assert job_id not in out, f"job {job_id} twice"
        out[job_id] = stream[8 : 8 + length]
        stream = stream[8 + length :]
    return out


# -- job ids ----------------------------------------------------------------------------------

BATCH = (
    b"echo a\n\n  \n\t\r\necho b\r\necho c\rprintf d\r\r\n \r\n\r\n\r\r\r\n"
    b"# comment\necho $ANET_JOB_ID\n\nprintf e"
)
"""Blank lines, white-space-only lines (jobs that print nothing and exit 0), CRLF, a lone CR
between two commands, CR CR LF, a comment, no final newline."""

OUTPUT = {
    b"echo a": b"a\n",
    b"  ": b"",
    b"\t": b"",
    b"echo b": b"b\n",
    b"echo c": b"c\n",
    b"printf d": b"d",
    b" ": b"",
    b"# comment": b"",
    b"echo $ANET_JOB_ID": b"8\n",
    b"printf e": b"e",
}
"""What each command prints."""


@pytest.mark.parametrize(
    ("where", "source"), [("local", "file"), ("local", "stdin"), ("sshd", "file")]
)
def test_every_job_has_the_id_the_original_gives_it(cluster, tmp_path, where, source):
    commands = original_commands(BATCH)
    assert commands == list(OUTPUT)  # read off the original's own code, in its order
    batch = tmp_path / "batch.txt"
    batch.write_bytes(BATCH)
    done = subprocess.run(
        anet_argv(where, cluster, str(batch) if source == "file" else "-"),
        input=BATCH if source == "stdin" else b"",
        capture_output=True, env=anet_env(tmp_path), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == {i: OUTPUT[command] for i, command in enumerate(commands)}


# -- the original's dependencies/ layout -------------------------------------------------------

WORKER = """\
import os
import sys

n = int(sys.argv[1])
table = "dependencies/offset.txt"  # a path as the original's jobs saw it, from ~/anet
offset = int(open(table).read()) if os.path.exists(table) else 0
print(n * n + offset, end="")
"""


def original_style_batch(path: Path, jobs: int, anet_style: int = 0) -> None:
    """As the original's example.py writes one: `python3 dependencies/...`, no final newline.
    The last `anet_style` lines say `python3 worker.py`, as batches written for anet do."""
    lines = [
        f"python3 {'' if i >= jobs - anet_style else 'dependencies/'}worker.py {i}"
        for i in range(jobs)
    ]
    path.write_text("\n".join(lines))


def consume(argv: list[str], env: dict[str, str], jobs: int) -> tuple[dict[int, str], bytes]:
    """Run anet piped into the original's consumer; what it found per id, and anet's stderr."""
    read_end, write_end = os.pipe()  # anet | consumer
    with open(read_end, "rb") as stdin, open(write_end, "wb") as stdout:
        consumer = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(jobs)], stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        anet = subprocess.Popen(
            argv, stdout=stdout, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL
        )
    try:
        _, anet_err = anet.communicate(timeout=120)
        out, err = consumer.communicate(timeout=30)
    finally:
        for proc in (anet, consumer):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert anet.returncode == 0, anet_err
    assert consumer.returncode == 0, err  # it crashes if the stream ends with ids missing
    text = out.decode()
    assert f"finished {jobs}/{jobs} requests" in text
    found = re.findall(r"Finished request (\d+), .*\n(?:\nFOUND SOLUTION: (.*)\n\n)?", text)
    return {int(job_id): solution for job_id, solution in found}, anet_err


@pytest.mark.parametrize("where", ["local", "sshd"])
def test_a_batch_for_the_original_layout_runs_unchanged_beside_anets(cluster, tmp_path, where):
    """`anet batch.txt deps/`: `dependencies/worker.py` is deps/worker.py, as in the original,
    and so is `worker.py` for anet's own batches; the worker's own `dependencies/` paths work."""
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "worker.py").write_text(WORKER)
    (deps / "offset.txt").write_text("1000")
    batch = tmp_path / "batch_file.txt"
    original_style_batch(batch, 12, anet_style=4)  # each job starts a Python: a few suffice
    argv = anet_argv(where, cluster, str(batch), f"{deps}/")
    found, _ = consume(argv, anet_env(tmp_path), 12)
    assert found == {i: str(i * i + 1000) for i in range(12)}


@pytest.mark.parametrize("where", ["local", "sshd"])
def test_the_original_examples_deps_argument_a_single_worker_file(cluster, tmp_path, where):
    """The original's example.py runs `anet batch_file.txt example_worker.py`: the file lands
    in dependencies/ there, and is dependencies/example_worker.py here too."""
    (tmp_path / "worker.py").write_text(WORKER)
    batch = tmp_path / "batch_file.txt"
    original_style_batch(batch, 8)
    argv = anet_argv(where, cluster, str(batch), str(tmp_path / "worker.py"))
    found, _ = consume(argv, anet_env(tmp_path), 8)
    assert found == {i: str(i * i) for i in range(8)}
