"""A pattern that backtracks for ever must not take a host with it, against a real sshd host.

`(a+)+$` against a command line of 50 `a`s then a space (`exec -a aaa... sleep 300`) takes
Python's `re` about 2^50 steps to fail. The match
runs in a child of the dispatcher, with a deadline: the host answers with an error within the
bound, the master's giving up cancels it, and the dispatcher's loop serves jobs meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_hosts import _proc_table
from test_machines import anet, jsonl

from anet.housekeeping import Machines
from anet.remote.connect import SshOptions
from dispatcher.forked import Cancel
from dispatcher.procs import FindProcs
from dispatcher.protocol import FrameDecoder, encode

CATASTROPHIC = "(a+)+$"


@pytest.fixture
def fifty_as() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line is 50 `a`s and its argument (a `sleep` named so)."""
    proc = subprocess.Popen(["a" * 50, "300"], executable="/bin/sleep", start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def ticks(pid: int) -> int:
    """CPU clock ticks (user + system) of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    return [p for p, (ppid, state, _) in _proc_table().items() if ppid == pid and state not in "ZX"]


def busy(pid: int) -> int:
    """CPU ticks of `pid` and of its live children: the matching, wherever it runs."""
    total = ticks(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += ticks(child)
    return total


def test_a_catastrophic_pattern_is_one_host_error_within_the_bound(make_cluster, fifty_as):
    own = make_cluster(1)
    started = time.monotonic()
    done = anet(own, "--find", CATASTROPHIC, "-S", "host1", "--format", "jsonl", timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 3, (done.stdout, done.stderr)
    (row,) = jsonl(done.stdout)
    assert row["host"] == "host1"
    assert row["error"].startswith("the pattern took over 5s to match"), row
    assert took < 15, took
    assert "Traceback" not in done.stderr
    deadline = time.monotonic() + 5
    while own["host1"].processes():  # the dispatcher goes with the master: nothing spins on
        assert time.monotonic() < deadline, own["host1"].processes()
        time.sleep(0.05)


def test_jobs_run_while_a_pattern_is_matched_and_giving_up_cancels_it(make_cluster, fifty_as):
    own = make_cluster(1)

    async def main() -> None:
        options = SshOptions(config=own.ssh_config)
        async with Machines(["host1"], ssh=options) as machines:
            session = await machines.cluster.ready_session("host1")
            assert session.hello is not None
            dispatcher = session.hello.pid
            before = busy(dispatcher)
            finding = asyncio.create_task(machines.find(CATASTROPHIC, timeout=60))
            await _until(lambda: busy(dispatcher) - before >= 20, 10, "matching never started")

            async with asyncio.timeout(8):  # well before the 15 s watchdog drops the host
                results = [r async for r in machines.cluster.run(["echo ok"] * 4)]
            assert sorted(r.stdout for r in results) == [b"ok\n"] * 4
            assert not finding.done()

            finding.cancel()  # the master gives up: the host stops matching at once
            with pytest.raises(asyncio.CancelledError):
                await finding
            await _until(lambda: not children(dispatcher), 3, "the matcher was not cancelled")
            idle = ticks(dispatcher)
            await asyncio.sleep(1.0)  # a spinning dispatcher would burn ~100 ticks here
            assert ticks(dispatcher) - idle < 20

            started = asyncio.get_running_loop().time()
            (answer,) = await machines.find(CATASTROPHIC, timeout=1.0)
            assert answer.error is not None and answer.error.startswith(
                "the pattern took over 1s to match"
            )
            assert asyncio.get_running_loop().time() - started < 10
            await _until(lambda: not children(dispatcher), 3, "the late matcher lives on")
            again = [r async for r in machines.cluster.run(["echo still"])]
            assert [r.stdout for r in again] == [b"still\n"]

    asyncio.run(main())


async def _until(condition, bound: float, why: str) -> None:
    deadline = asyncio.get_running_loop().time() + bound
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, why
        await asyncio.sleep(0.02)


def test_find_and_cancel_messages_round_trip():
    messages = [FindProcs(7, "x", "boot:ns", 42, 2.5), Cancel(7)]
    data = b"".join(map(encode, messages))
    decoder = FrameDecoder()
    assert [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])] == messages
