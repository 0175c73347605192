"""Journal retention through the real `anet` command on this machine: a finished run's outputs
dropped while status, report and resume still work; `anet journals` and `anet journals clean`;
the caps; a state directory that turns read-only under a run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from anet import results
from anet.streams import retention
from anet.streams.journal import Journal, fingerprint_batch

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (
    "ANET_HOSTS",
    "ANET_JOURNALS_KEEP",
    "ANET_JOURNALS_MAX_SIZE",
    "ANET_JOURNALS_KEEP_OUTPUTS",
)


def environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    for name in SETTINGS:
        env.pop(name, None)
    return env | extra


def anet(*args: str, tmp_path: Path, env: dict[str, str] | None = None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "anet", *args],
        capture_output=True, env=env or environ(tmp_path), timeout=120, **kw,
    )  # fmt: skip


def run_batch(tmp_path: Path, batch: Path, *args: str, **kw) -> subprocess.CompletedProcess[bytes]:
    return anet("-q", "--format", "msgpack", *args, str(batch), tmp_path=tmp_path, **kw)


def decode(data: bytes) -> list:
    return list(results.read(io.BytesIO(data), "msgpack"))


def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "anet" / "journals"


def journals(tmp_path: Path) -> list[Path]:
    return sorted(state_dir(tmp_path).glob("*.sqlite"))


def big_batch(tmp_path: Path, name: str = "batch.txt", jobs: int = 5, fail: int | None = None):
    """Jobs that print 100 kB each and note that they ran; job `fail` fails."""
    ran = tmp_path / f"{name}.ran"
    lines = [
        f"echo {i} >> {ran}; head -c 100000 /dev/zero" + ("; exit 3" if i == fail else "")
        for i in range(jobs)
    ]
    batch = tmp_path / name
    batch.write_text("".join(line + "\n" for line in lines))
    return batch, ran


def test_a_complete_run_drops_its_outputs_and_status_report_and_resume_still_work(tmp_path):
    batch, ran = big_batch(tmp_path)
    first = run_batch(tmp_path, batch)
    assert first.returncode == 0, first.stderr
    assert [r.stdout for r in decode(first.stdout)] == [b"\0" * 100000] * 5
    (path,) = journals(tmp_path)
    assert os.path.getsize(path) < 64 * 1024, "the outputs were kept"

    status = anet("status", str(path), tmp_path=tmp_path)
    assert status.returncode == 0, status.stderr
    assert b"5/5 jobs done, 0 failed" in status.stdout
    report = anet("report", str(path), "-o", str(tmp_path / "r.html"), tmp_path=tmp_path)
    assert report.returncode == 0, report.stderr

    only_new = run_batch(tmp_path, batch, "--resume", "--only-new")
    assert only_new.returncode == 0, only_new.stderr
    assert decode(only_new.stdout) == []
    assert len(ran.read_text().split()) == 5, "a job ran again"

    resumed = run_batch(tmp_path, batch, "--resume")
    assert resumed.returncode == 255
    said = resumed.stderr.decode().splitlines()
    assert len(said) == 1 and said[0].startswith("anet: the outputs of journal"), said
    assert "--only-new" in said[0]
    assert len(ran.read_text().split()) == 5


def test_a_run_with_a_failed_job_keeps_its_journal_whole_for_resume(tmp_path):
    batch, ran = big_batch(tmp_path, fail=2)
    first = run_batch(tmp_path, batch, "--retries", "0")
    assert first.returncode == 1, first.stderr
    (path,) = journals(tmp_path)
    assert os.path.getsize(path) > 4 * 100000
    second = run_batch(tmp_path, batch, "--resume", "--retries", "0")
    assert second.returncode == 1  # job 2 fails again, the earlier outputs come first
    records = decode(second.stdout)
    assert sorted(r.id for r in records if r.ok) == [0, 1, 3, 4]
    assert all(r.stdout == b"\0" * 100000 for r in records)
    assert sorted(ran.read_text().split()) == ["0", "1", "2", "2", "3", "4"]  # only job 2 again


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_run(tmp_path: Path, batch: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "anet", "-q", "--format", "msgpack", str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ(tmp_path),
    )  # fmt: skip


def test_journals_lists_every_default_journal_and_clean_removes_all_but_a_running_one(tmp_path):
    complete, _ = big_batch(tmp_path, "complete.txt")
    with_failure, _ = big_batch(tmp_path, "failing.txt", fail=0)
    assert run_batch(tmp_path, complete).returncode == 0
    assert run_batch(tmp_path, with_failure, "--retries", "0").returncode == 1
    endless = tmp_path / "endless.txt"
    endless.write_text("echo started\nsleep 60\n")
    running = start_run(tmp_path, endless)
    try:
        assert running.stdout is not None
        wait_for(lambda: any(p.name.startswith("endless") for p in journals(tmp_path)))
        wait_for(lambda: any(i.state == "running" for i in retention.survey(state_dir(tmp_path))))
        listed = anet("journals", tmp_path=tmp_path)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.decode().splitlines()
        assert lines[0] == f"journals in {state_dir(tmp_path)}:"
        assert lines[1].split() == [
            "batch", "last", "run", "state", "jobs", "failed", "outputs", "size", "journal",
        ]  # fmt: skip
        rows = {line.split()[0]: line.split() for line in lines[2:-1]}
        # batch, last run (date, time), state, jobs, failed, outputs, size (number, unit), journal
        assert rows[str(complete)][3:7] == ["complete", "5/5", "0", "dropped"]
        assert rows[str(with_failure)][3:7] == ["complete", "5/5", "1", "kept"]
        assert rows[str(endless)][3] == "running"
        assert lines[-1].startswith("3 journals, ") and "limits: 20 journals, 1.0 GiB" in lines[-1]

        (busy,) = (p for p in journals(tmp_path) if p.name.startswith("endless"))
        cleaned = anet("journals", "clean", "--all", tmp_path=tmp_path)
        assert cleaned.returncode == 0, cleaned.stderr
        said = cleaned.stdout.decode()
        assert said.count("removed ") == 2 and f"kept {busy.name}: in use by a running anet" in said
        assert said.splitlines()[-1].startswith("freed ")
        assert journals(tmp_path) == [busy]
    finally:
        running.send_signal(signal.SIGTERM)
        running.communicate(timeout=60)
    recent = anet("journals", "clean", "--older-than", "1d", tmp_path=tmp_path)
    assert recent.returncode == 0 and len(journals(tmp_path)) == 1, recent.stderr
    assert b"nothing to remove" in recent.stdout
    everything = anet("journals", "clean", "--older-than", "0s", tmp_path=tmp_path)
    assert everything.returncode == 0 and journals(tmp_path) == [], everything.stderr
    assert sorted(state_dir(tmp_path).iterdir()) == []  # lock files too


def test_an_interrupted_run_keeps_its_outputs_and_is_listed_as_interrupted(tmp_path):
    batch, _ = big_batch(tmp_path, jobs=3)
    batch.write_text(batch.read_text() + "sleep 60\n")
    run = start_run(tmp_path, batch)
    assert run.stdout is not None
    seen = []
    for record in results.read(run.stdout, "msgpack"):
        seen.append(record)
        if len(seen) == 3:
            break
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    (path,) = journals(tmp_path)
    with Journal.open(path, fingerprint_batch(batch), batch, resume=True) as journal:
        kept = {r.id: r.stdout for r in journal.succeeded_results()}
    assert kept == {i: b"\0" * 100000 for i in range(3)}
    listed = anet("journals", tmp_path=tmp_path).stdout.decode().splitlines()
    assert listed[2].split()[3:7] == ["interrupted", "3/4", "0", "kept"]


def test_only_the_most_recent_default_journals_are_kept_and_a_named_one_never_changes(tmp_path):
    env = environ(tmp_path, ANET_JOURNALS_KEEP="2")
    names = []
    for n in range(4):
        batch, _ = big_batch(tmp_path, f"b{n}.txt", jobs=1)
        assert run_batch(tmp_path, batch, env=env).returncode == 0
        names.append(batch.name)
    assert [p.name.split("-")[0] for p in journals(tmp_path)] == names[2:]
    mine = tmp_path / "mine.sqlite"
    batch, _ = big_batch(tmp_path, "named.txt", jobs=2)
    assert run_batch(tmp_path, batch, "--journal", str(mine), env=env).returncode == 0
    assert os.path.getsize(mine) > 2 * 100000  # a journal you named is kept whole
    assert len(journals(tmp_path)) == 2
    bad = run_batch(tmp_path, batch, env=environ(tmp_path, ANET_JOURNALS_KEEP="lots"))
    assert bad.returncode == 255
    assert bad.stderr.decode().startswith("anet: ANET_JOURNALS_KEEP takes a number")


def in_namespace(script: str, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`script` (sh), then `argv`, in a user and mount namespace of our own: there a read-only
    bind mount is a real EROFS, which a chmod is not for root."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f'{script} && exec "$@"',
         "sh", *argv],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip


def test_a_journal_that_cannot_be_removed_costs_one_warning_not_the_run(tmp_path):
    old, _ = big_batch(tmp_path, "old.txt", jobs=1)
    assert run_batch(tmp_path, old).returncode == 0
    (stuck,) = journals(tmp_path)
    lock = f"{stuck}.lock"
    batch, _ = big_batch(tmp_path, jobs=3)
    argv = [sys.executable, "-m", "anet", "-q", "--format", "msgpack", str(batch)]
    done = in_namespace(
        f"mount --bind {lock} {lock} && mount -o remount,bind,ro {lock}",
        *argv, env=environ(tmp_path, ANET_JOURNALS_KEEP="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(r.id for r in decode(done.stdout)) == [0, 1, 2]
    assert done.stderr.decode().splitlines() == [
        f"anet: cannot clean up journal {stuck}: Read-only file system; journals left as they are"
    ]
    assert stuck in journals(tmp_path)


def test_a_read_only_state_dir_costs_one_line_per_run_and_per_journal_not_cleaned(tmp_path):
    state = tmp_path / "state"
    old, _ = big_batch(tmp_path, "old.txt", jobs=1)
    assert run_batch(tmp_path, old).returncode == 0
    read_only = f"mount --bind {state} {state} && mount -o remount,bind,ro {state}"
    batch, _ = big_batch(tmp_path, jobs=3)
    argv = [sys.executable, "-m", "anet"]
    env = environ(tmp_path, ANET_JOURNALS_KEEP="1")
    run = in_namespace(read_only, *argv, "-q", "--format", "msgpack", str(batch), env=env)
    assert run.returncode == 0, run.stderr
    assert sorted(r.id for r in decode(run.stdout)) == [0, 1, 2]
    (said,) = run.stderr.decode().splitlines()
    assert said.startswith("anet: cannot create journal ") and "Read-only file system" in said
    cleaned = in_namespace(read_only, *argv, "journals", "clean", "--all", env=env)
    assert cleaned.returncode == 255
    assert cleaned.stdout == b"nothing to remove\n"
    (said,) = cleaned.stderr.decode().splitlines()
    assert said.startswith("anet: cannot clean up journal ") and "Read-only file system" in said
    assert len(journals(tmp_path)) == 1


OPENS = """
import atexit, sys
opened, into = [], sys.argv.pop(1)
sys.addaudithook(lambda event, args: event == "sqlite3.connect" and opened.append(str(args[0])))
atexit.register(lambda: open(into, "w").write("\\n".join(opened)))
from anet.launch import main
sys.argv[0] = "anet"
main()
"""
"""`anet` with every SQLite database it opens (Python's audit events) written to argv[1]."""


def test_a_finished_run_opens_its_own_journal_once_and_no_other(tmp_path):
    """The end of a run settles its journal (the batch size, its outputs dropped) in the run's
    own connection before it closes it, and checks the caps from the files' sizes: the journal
    is not opened again once closed (a lock, a read and four syncs, most of a one-job run's
    end), nor is any other journal read while all of them fit the caps."""
    for n in range(3):  # journals of earlier runs, within the caps
        other = tmp_path / f"other{n}.txt"
        other.write_text("true\n")
        assert run_batch(tmp_path, other).returncode == 0
    batch = tmp_path / "batch.txt"
    batch.write_text("true\ntrue\n")  # no output: settled where it is, no copy
    opens = tmp_path / "opens.txt"
    argv = [sys.executable, "-c", OPENS, str(opens), "-q", "--format", "msgpack", str(batch)]
    done = subprocess.run(argv, capture_output=True, env=environ(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(r.id for r in decode(done.stdout)) == [0, 1]
    [path] = [p for p in journals(tmp_path) if p.name.startswith("batch.txt")]
    opened = opens.read_text().splitlines()
    assert [db for db in opened if path.name in db and f".{path.name}" not in db] == [str(path)]
    assert [db for db in opened if "other" in db] == [], "a journal within the caps was read"
    info = retention.look(path)
    assert (info.state, info.total, info.recorded, info.dropped) == ("complete", 2, True, True)
    assert len(journals(tmp_path)) == 4
