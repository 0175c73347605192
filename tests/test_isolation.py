"""The suite's own safety net (tests/conftest.py, tests/leaks.py): every test runs in a home
of its own, and what a test leaves running or open is found."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
from pathlib import Path

import leaks

ROOT = Path(__file__).resolve().parent.parent


def test_a_test_and_what_it_starts_see_a_home_of_their_own(tmp_path):
    real = pwd.getpwuid(os.getuid()).pw_dir
    home = Path(os.environ["HOME"])
    assert str(home) != real and home.is_dir()
    for name in ("XDG_STATE_HOME", "XDG_CACHE_HOME", "ANET_HOME"):
        assert Path(os.environ[name]).is_relative_to(home), name
    batch = tmp_path / "batch.txt"
    batch.write_text("echo hi\n")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "anet", "-q", "-S", ":", str(batch)], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr
    journals = Path(os.environ["XDG_STATE_HOME"]) / "anet" / "journals"
    assert len(list(journals.glob("batch.txt-*.sqlite"))) == 1  # the default journal, here


def test_the_developers_anet_settings_do_not_reach_a_test():
    ours = {"ANET_HOME", leaks.MARK_ENV}  # set by the conftest
    assert [name for name in os.environ if name.startswith("ANET_")] == sorted(ours)


def test_a_process_a_thread_and_an_fd_left_behind_are_found():
    before = leaks.snapshot()
    mark = "leak-test"
    os.environ[leaks.MARK_ENV] = mark  # restored by the conftest after the test
    # A daemon: its parent exits, so only the marker in its environment leads to it.
    subprocess.run(["sh", "-c", "sleep 60 & exit"], start_new_session=True, check=True)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-running")
    thread.start()
    read_end, write_end = os.pipe()
    try:
        left = leaks.leftovers(before, mark, grace=0.2)
        assert [cmd for cmd in left.procs.values()] == ["sleep 60"]
        assert left.threads == [thread]
        assert set(left.fds) == {read_end, write_end}
    finally:
        leaks.kill(left.procs)
        stop.set()
        thread.join()
        os.close(read_end)
        os.close(write_end)
    assert not leaks.leftovers(before, mark, grace=5)  # and once ended, nothing


def test_a_process_that_is_ending_gets_the_grace():
    before = leaks.snapshot()
    child = subprocess.Popen(["sleep", "0.3"])
    assert not leaks.leftovers(before, "unused", grace=10)
    child.wait()


def test_the_leak_check_kills_by_pid_and_start_time_only():
    child = subprocess.Popen(["sleep", "60"])
    try:
        leaks.kill({(child.pid, 0): "sleep 60"})  # a start time that is not the child's
        assert child.poll() is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_tests_home_starts_with_the_dispatcher_payload_so_anet_does_not_build_it(monkeypatch):
    """The conftest links the worker's payload into each home: were it missing or stale (built
    from other sources), every `anet` a test starts would compile and zip the dispatcher again."""
    from anet.remote import bootstrap

    def build_zip(files: object) -> bytes:
        raise AssertionError("the payload was built, not read from the test's cache")

    cache = Path(os.environ["XDG_CACHE_HOME"]) / "anet"
    monkeypatch.setattr(bootstrap, "build_zip", build_zip)
    found = bootstrap.build_payload(cache)
    monkeypatch.undo()
    assert found == bootstrap.build_payload(None)


def test_a_python_a_test_starts_keeps_its_bytecode():
    """Hundreds of `anet` processes import anet: each compiled it again where the shell sets
    PYTHONDONTWRITEBYTECODE, unless the conftest sent their bytecode to a folder of its own."""
    code = "import sys; print(sys.dont_write_bytecode, sys.pycache_prefix)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[0] == "False", done.stdout
