"""`-k` with many big results waiting for a slow job 0: each spooled result held an open spool
file (two: one per stream), so 2,000 results of 2 MB behind job 0 wanted 4,000 descriptors,
past the usual limit of 1,024, and jobs failed ("could not be spooled to disk"). Past a few,
waiting spools are parked in one shared file (keeporder.py): the descriptors stay bounded.
Run under a low RLIMIT_NOFILE (120), so that 150 results are enough to show it; job 0 looks
for the others every 0.05 s (every 0.01 s, its `ls | wc` forked some 300 processes a second)."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys

import pytest
from stream_digest import digest_msgpack

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

N = 150
SIZE = 1_100_000  # past spool.SPOOL_AT (1 MiB): spooled
NOFILE = 120


def low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_many_spooled_results_wait_for_job_0_under_a_low_descriptor_limit(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    wait = f"i=0; while [ $(ls {marks} | wc -l) -lt {N - 1} ] && [ $i -lt 1200 ]; do sleep 0.05;" \
           " i=$((i+1)); done"  # fmt: skip
    batch = [f"{wait}; echo zero"]
    batch += [f"head -c {SIZE} /dev/zero; echo {i}; touch {marks}/{i}" for i in range(1, N)]
    (tmp_path / "batch.txt").write_text("".join(line + "\n" for line in batch))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    argv = [sys.executable, "-m", "anet", "-S", "4/:", "-k", "-q", "--format", "msgpack",
            "--no-journal", "--no-speculate", str(tmp_path / "batch.txt")]  # fmt: skip
    with (tmp_path / "out").open("wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, env=env,
                              preexec_fn=low_nofile, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    with (tmp_path / "out").open("rb") as stream:
        found = digest_msgpack(stream)
    assert list(found) == list(range(N))  # in job order
    assert found[0].sha("stdout") == hashlib.sha256(b"zero\n").hexdigest()
    for job_id in range(1, N):
        expected = hashlib.sha256(bytes(SIZE) + b"%d\n" % job_id).hexdigest()
        assert found[job_id].sha("stdout") == expected, job_id
