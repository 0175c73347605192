"""`anet BATCH` at the seams around the jobs: where the batch comes from, a journal that fills
the disk, and a run with nothing to do. Real `python3 -m anet` processes; results are read
back with anet's own reader."""

from __future__ import annotations

import io
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from anet import results
from anet.core.record import JobResult

ROOT = Path(__file__).resolve().parent.parent


def anet(
    *args: str, tmp_path: Path, stdin: bytes | None = None, quiet: bool = True, **kw
) -> subprocess.CompletedProcess[bytes]:
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    env.pop("ANET_HOSTS", None)
    return subprocess.run(
        [sys.executable, "-m", "anet", *(["-q"] if quiet else []), "--format", "msgpack", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True, env=env, timeout=120, **kw,
    )  # fmt: skip


def decode(data: bytes) -> list[JobResult]:
    return list(results.read(io.BytesIO(data), "msgpack"))


ECHO_FIVE = b"".join(b"echo line-%d\n" % i for i in range(5))


def assert_five(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 0, done.stderr
    got = sorted((r.id, r.stdout) for r in decode(done.stdout))
    assert got == [(i, b"line-%d\n" % i) for i in range(5)]


# -- a reader that leaves ----------------------------------------------------------------------


def test_a_reader_that_leaves_once_it_has_every_result_ends_no_run_in_error(tmp_path):
    """The original ANet's example consumer stops reading, and exits, once it has every id: the
    pipe is closed before anet closes its end. Every result was delivered: exit 0, no
    traceback (it was uvloop's "the handler is closed", from a closed pipe's transport)."""
    size = sum(8 + len(b"line-%d\n" % i) for i in range(5))  # the five `anet` records
    batch = tmp_path / "batch.txt"
    batch.write_bytes(ECHO_FIVE)
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    env.pop("ANET_HOSTS", None)
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as into_head, open(write_end, "wb") as out_of_anet:
        head = subprocess.Popen(["head", "-c", str(size)], stdin=into_head, stdout=subprocess.PIPE)
        argv = [sys.executable, "-m", "anet", "-q", "--no-journal", str(batch)]
        run = subprocess.Popen(argv, stdout=out_of_anet, stderr=subprocess.PIPE, env=env)
    _, err = run.communicate(timeout=60)
    out, _ = head.communicate(timeout=10)
    assert len(out) == size
    assert (run.returncode, err) == (0, b"")


# -- a batch from a stream ----------------------------------------------------------------------


def test_a_batch_on_stdin_as_dash_runs_every_line(tmp_path):
    assert_five(anet("-", tmp_path=tmp_path, stdin=ECHO_FIVE))


def test_a_batch_piped_through_dev_stdin_runs_every_line(tmp_path):
    """The journal's fingerprint used to read the pipe first: nothing ran, exit status 0."""
    assert_five(anet("/dev/stdin", tmp_path=tmp_path, stdin=ECHO_FIVE))


def test_a_fifo_batch_is_read_once(tmp_path):
    """It used to hang for ever: the fingerprint read the FIFO, the batch opened it again."""
    fifo = tmp_path / "batch.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as writer:
            writer.write(ECHO_FIVE)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert_five(anet(str(fifo), tmp_path=tmp_path))
    feeder.join(5)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--resume", "-"], "--resume needs the journal of a batch file: standard input can only"),
        (["--halt", "soon,fail=10%", "-"], "--halt with a percentage needs a batch file"),
    ],
)
def test_what_a_stream_cannot_do_is_one_line(tmp_path, args, said):
    done = anet(*args, tmp_path=tmp_path, stdin=ECHO_FIVE)
    assert done.returncode == 255
    assert done.stderr.decode().startswith(f"anet: {said}")
    assert len(done.stderr.splitlines()) == 1


def test_a_stream_batch_keeps_a_journal_only_when_asked(tmp_path):
    assert_five(anet("-", tmp_path=tmp_path, stdin=ECHO_FIVE))
    assert not list((tmp_path / "state").rglob("*.sqlite*"))  # (the spool folder may be there)
    journal = tmp_path / "mine.sqlite"
    assert_five(anet("--journal", str(journal), "-", tmp_path=tmp_path, stdin=ECHO_FIVE))
    assert journal.exists()


# -- a journal that cannot be written -------------------------------------------------------------


def small_files(tmp_path: Path, limit: int = 200_000):
    """Files of the anet process (its journal) stop growing at `limit` bytes: a full disk for it
    alone. Pipes are not files, so its stdout is not limited. The local host's dispatcher is
    put in this test's home first (its payload is bigger than the limit): the disk fills for
    the journal, not before the host can start."""
    warm = tmp_path / "warm.txt"
    warm.write_text("true\n")
    assert anet("--no-journal", str(warm), tmp_path=tmp_path).returncode == 0

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return limit_files


def chatty_batch(tmp_path: Path, n: int = 120) -> Path:
    batch = tmp_path / "batch.txt"
    batch.write_text(
        "".join(f"echo job-{i}; head -c 4000 /dev/zero | tr '\\0' x\n" for i in range(n))
    )
    return batch


def expected(i: int) -> bytes:
    return b"job-%d\n" % i + b"x" * 4000


def test_a_full_disk_under_the_default_journal_costs_one_warning_not_results(tmp_path):
    """It used to abort with 255 after some 40 results."""
    batch = chatty_batch(tmp_path)
    done = anet(str(batch), tmp_path=tmp_path, preexec_fn=small_files(tmp_path))
    assert done.returncode == 0, done.stderr
    records = decode(done.stdout)
    assert sorted(r.id for r in records) == list(range(120))
    assert all(r.stdout == expected(r.id) for r in records)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "cannot write journal" in lines[0], lines
    assert "running on without it" in lines[0]


def test_a_full_disk_under_a_journal_asked_for_stops_cleanly_and_resumes(tmp_path):
    """--journal FILE is a promise to resume: no result leaves without being committed there.
    The run stops with one line; what it wrote and what the resume writes lose nothing. What
    comes twice is exactly what the failed commit's delivery marks named: the results written
    since the last commit, the end of what the first run wrote (how many depends on how the
    results bunched, so the test reads the marks rather than guessing a number)."""
    batch = chatty_batch(tmp_path)
    journal = tmp_path / "mine.sqlite"
    first = anet(
        "--journal", str(journal), str(batch), tmp_path=tmp_path, preexec_fn=small_files(tmp_path)
    )
    assert first.returncode == 255
    said = first.stderr.decode().splitlines()
    assert said[-1].startswith(f"anet: cannot write journal {journal}: "), said
    written = [r.id for r in decode(first.stdout)]
    assert written, "the journal broke before any result: nothing was tested"
    assert len(written) < 120, "the run went on without its journal"
    marked = delivery_marks(journal)
    assert set(marked) == set(written[: len(marked)]), "a mark for a result not yet written"
    resumed = anet(
        "--journal", str(journal), "--resume", "--only-new", str(batch), tmp_path=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    again = decode(resumed.stdout)
    assert sorted(r.id for r in again) == sorted(set(range(120)) - set(marked))
    assert all(r.stdout == expected(r.id) for r in again)
    assert set(written) - {r.id for r in again} == set(marked)


def delivery_marks(journal: Path) -> list[int]:
    """The ids the journal holds as delivered (read-only: the resume must find it as left)."""
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT id FROM results WHERE delivered")]


# -- nothing to do --------------------------------------------------------------------------------


class SilentHost:
    """A TCP listener that accepts and never says a word: an SSH server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def spec(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_host():
    host = SilentHost()
    yield host
    host.close()


def run_on(cluster, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Not quiet: the progress view gives the hosts time to start connecting, as a user sees."""
    hosts = [a for name in cluster.names for a in ("-S", name)]
    return anet(
        "--ssh-config", str(cluster.ssh_config), *hosts, *args, tmp_path=tmp_path, quiet=False
    )


def logins(cluster) -> int:
    return sum(cluster[name].accepted_connections() for name in cluster.names)


def test_an_empty_batch_connects_no_host_and_ends_at_once(cluster, tmp_path):
    """It used to connect every host and wait for them: 'did not stop in time; cutting them
    off', 5-9 s."""
    batch = tmp_path / "batch.txt"
    batch.write_bytes(b"\n\r\n\r\r\n")  # line ends only: no job
    before = logins(cluster)
    done = run_on(cluster, str(batch), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert decode(done.stdout) == [] and b"did not stop in time" not in done.stderr
    assert logins(cluster) == before


def test_resuming_a_finished_batch_connects_no_host(cluster, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_bytes(ECHO_FIVE)
    assert_five(run_on(cluster, str(batch), tmp_path=tmp_path))
    before = logins(cluster)
    done = run_on(cluster, "--resume", "--only-new", str(batch), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert decode(done.stdout) == [] and b"did not stop in time" not in done.stderr
    assert logins(cluster) == before


def test_a_host_still_connecting_at_the_end_is_cut_off_at_once(tmp_path, silent_host):
    """The batch ends on the local host while the other never finished its handshake: that
    host has no job to stop, so anet does not wait for it."""
    batch = tmp_path / "batch.txt"
    batch.write_bytes(ECHO_FIVE)
    started = time.monotonic()
    done = anet("-S", ":", "-S", silent_host.spec, str(batch), tmp_path=tmp_path)
    took = time.monotonic() - started
    assert_five(done)
    assert b"did not stop in time" not in done.stderr
    assert silent_host.accepted, "the silent host was never tried: nothing was tested"
    assert took < 4.5, f"{took:.1f}s: waited for the silent host"
