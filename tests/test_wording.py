"""What anet says to a new user, through the real CLI: exit statuses as documented, warnings
that are true, and the guide's examples as the program prints them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "guide.md").read_text()


def anet(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):
    return subprocess.run(
        [sys.executable, "-m", "anet", *args], capture_output=True, timeout=120, text=True,
        stdin=subprocess.DEVNULL, cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(ROOT)} | (env or {}),
    )  # fmt: skip


def test_bare_anet_prints_the_help_and_exits_255():
    """255 is anet's own error, as the README says; 2 would read as "2 jobs failed"."""
    for argv in ([], ["hosts"]):
        done = anet(*argv)
        assert done.returncode == 255, (argv, done.returncode)
        assert done.stderr.startswith("Usage: anet"), done.stderr
        assert "Traceback" not in done.stderr


def test_sync_never_says_retrying_for_a_host_it_does_not_retry(tmp_path):
    """`anet sync` tries each host once; the table says which failed and why."""
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "a.txt").write_text("a\n")
    env = {"ANET_HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = anet("sync", "-S", "127.0.0.1:1", "-S", ":", f"{deps}/", env=env)
    assert done.returncode == 1, done.stderr
    assert "retrying" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "deps: 1 entries, 1 files, 2 B", lines
    assert re.match(r"127\.0\.0\.1:1 +FAILED: connection refused", lines[2]), lines
    assert re.match(r"local +ok +1 ", lines[3]), lines


def test_the_guides_first_example_is_what_anet_prints(tmp_path):
    """`anet -k primes.txt --format text | tail -5`: in job order, so the same every time.

    The lines shown are the last job's, and that job runs as written; the 39 before it count
    only their last thousand numbers (all 40 took 15 s of CPU, the last one alone 0.4 s)."""
    example = re.search(r"    \$ (anet [^\n]*primes\.txt[^\n]*\| tail -5)\n((?:    \d+\n)+)", GUIDE)
    assert example, "the guide's first run example is gone"
    command, shown = example[1], example[2].split()
    args = command.split("|")[0].split()[1:]
    [batch] = [i for i, arg in enumerate(args) if arg.endswith("primes.txt")]
    args[batch] = str(_last_job_whole(ROOT / args[batch], tmp_path / "primes.txt"))
    done = anet(*args, "--no-journal", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-5:] == shown


def _last_job_whole(primes: Path, copy: Path) -> Path:
    """`primes` with each job but the last cut to the last thousand numbers of its range."""
    *jobs, last = primes.read_text().splitlines()
    assert len(jobs) == 39, "the guide says primes.txt has 40 lines"
    cut = []
    for line in jobs:
        *command, _, end = line.split()
        cut.append(" ".join([*command, str(int(end) - 1000), end]))
    copy.write_text("".join(f"{line}\n" for line in [*cut, last]))
    return copy


def test_the_guides_host_key_lines_are_what_anet_says():
    """The guide quoted a message the program had stopped printing."""
    from anet.remote.connect import KEY_CHANGED, KEY_UNKNOWN, _key_reason
    from anet.remote.hosts import parse_spec

    for status, name in ((KEY_UNKNOWN, "stranger"), (KEY_CHANGED, "node1")):
        line = f"    anet: {name}: {_key_reason(status, parse_spec(name), name)}\n"
        assert line in GUIDE, line
