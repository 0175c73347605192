"""`anet` ends without the interpreter's teardown, once everything it had to do at exit is done.

Finalizing the ~300 modules of a run (asyncssh's, the engine's) is CPU spent after the last
byte was written, while the user waits for the prompt. What must still happen does: atexit
handlers (the stderr drain), stdout and stderr flushed, the exit status. Seen from outside, on
the real entry point in a fresh interpreter: an object whose finalizer would run at teardown
tells whether teardown ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ENTRY = """
import atexit, os, sys
notes = os.open(sys.argv.pop(1), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
class Witness:
    def __del__(self, write=os.write, fd=notes):  # at teardown, when module globals go
        write(fd, b"teardown\\n")
witness = Witness()
atexit.register(lambda: os.write(notes, b"atexit\\n"))
print("buffered, not yet flushed", end="")
sys.argv[0] = "anet"
from anet.launch import main
main()
"""


def anet(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    notes = tmp_path / "notes.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, str(notes), *argv], capture_output=True, text=True, env=env
    )
    return done, notes.read_text().split() if notes.exists() else []


def test_anet_exits_after_its_atexit_work_without_the_teardown(tmp_path):
    done, notes = anet(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("buffered, not yet flushed")  # flushed before the exit
    assert "anet" in done.stdout
    assert notes == ["atexit"]


def test_the_exit_status_and_the_last_error_line_get_out(tmp_path):
    done, notes = anet(tmp_path, "run", "--no-such-option")
    assert done.returncode == 255
    assert "no-such-option" in done.stderr
    assert notes == ["atexit"]


def test_a_run_says_everything_before_it_exits(tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"echo line{i}\n" for i in range(50)) + "exit 3\n")
    done, notes = anet(tmp_path, "run", "-S", ":", "--no-journal", "--format", "text", str(batch))
    assert done.returncode == 1  # one job failed
    assert [f"line{i}" for i in range(50)] == sorted(
        (w for w in done.stdout.split() if w.startswith("line")), key=lambda w: int(w[4:])
    )
    assert "1 of 51 jobs failed" in done.stderr
    assert notes == ["atexit"]
