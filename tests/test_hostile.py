"""What a hostile host can say, and what anet makes of it (invariant 8 of the design).

Every host here is a real sshd on loopback; the hostile one runs the fake dispatcher of
tests/hostile_dispatcher.py, which forges, lies and misbehaves as each test asks. Results are
read back with anet's own reader, and every assertion is about what a user would see.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from hostile_dispatcher import Hostile
from sshd_hosts import SshdCluster

from anet import results
from anet.record import JobResult


def run_anet(
    cluster: SshdCluster, *args: str, batch: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """`anet --ssh-config ... ARGS [BATCH]`, its output captured."""
    argv = [sys.executable, "-m", "anet", "--ssh-config", str(cluster.ssh_config), *args]
    return subprocess.run(
        [*argv, *([str(batch)] if batch else [])],
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def hosts_args(cluster: SshdCluster, slots: int | None = None) -> list[str]:
    prefix = f"{slots}/" if slots else ""
    return [arg for name in cluster.names for arg in ("-S", f"{prefix}{name}")]


def write_batch(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "batch.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def decode(stdout: bytes) -> list[JobResult]:
    return list(results.read(io.BytesIO(stdout)))


def once_it_said_hello(bad: Hostile) -> str:
    """A job's first words: wait (10 s at most) until the hostile host's dispatcher said Hello,
    so the honest host cannot finish the batch before the hostile one had a chance to lie."""
    return (
        f"n=0; until grep -qs ^hello {bad.events_file} || [ $n -ge 200 ]; "
        "do sleep 0.05; n=$((n + 1)); done; "
    )


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
