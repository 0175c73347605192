"""Keep-order's spill, end to end: a run through `Cluster.run` whose results wait past a small
MAX_HELD, so most of them go to the spill (the journal, or a temporary file) and come back.

The CLI tests of keep-order hold fewer results than the real MAX_HELD, so they never reach the
spill; here job 0 ends only after every other result arrived, and all but MAX_HELD of those
wait in the spill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import anet
from anet.runs import RunOptions
from anet.streams import keeporder
from anet.streams.journal import Journal

HELD = 4
N = 40


def batch(flag: Path) -> list[str]:
    """Job 0 waits (polling, bounded) for a flag the master sets once every other result came."""
    wait = f"i=0; while [ ! -e {flag} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done"
    return [f"{wait}; echo 0", *(f"echo {i}; printf 'err {i}' >&2" for i in range(1, N))]


def flag_after_the_others(flag: Path) -> Callable[[anet.JobResult], None]:
    arrived: set[int] = set()

    def note(result: anet.JobResult) -> None:
        arrived.add(result.id)
        if arrived == set(range(1, N)):
            flag.touch()

    return note


@pytest.mark.parametrize("journal", [True, False], ids=["journal-spill", "file-spill"])
def test_results_past_max_held_come_back_from_the_spill_in_order(tmp_path, monkeypatch, journal):
    monkeypatch.setattr(keeporder, "MAX_HELD", HELD)
    spilled: list[int] = []
    spill_class = keeporder.JournalSpill if journal else keeporder.FileSpill
    put = spill_class.put

    def counted_put(self, result):
        spilled.append(result.id)
        put(self, result)

    monkeypatch.setattr(spill_class, "put", counted_put)

    async def main(options: RunOptions) -> list[anet.JobResult]:
        policy = anet.RunPolicy(speculate=False)
        async with anet.Cluster(["2/:"], cwd=str(tmp_path), policy=policy) as cluster:
            return [r async for r in cluster.run(batch(tmp_path / "flag"), options)]

    arrived = flag_after_the_others(tmp_path / "flag")
    if journal:
        with Journal.open(tmp_path / "j.sqlite", "f" * 64, "batch.txt", resume=False) as j:
            out = asyncio.run(main(RunOptions(journal=j, keep_order=True, arrived=arrived)))
    else:
        out = asyncio.run(main(RunOptions(keep_order=True, arrived=arrived)))
    assert [r.id for r in out] == list(range(N))
    assert [r.stdout for r in out] == [b"%d\n" % i for i in range(N)]
    assert [r.stderr for r in out[1 : N - 1]] == [b"err %d" % i for i in range(1, N - 1)]
    assert sorted(spilled) == list(range(1 + HELD, N))  # all but HELD of jobs 1..N-1 did
