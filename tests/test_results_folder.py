"""`--results DIR` off the event loop: a big result is copied into its folder by a thread while
the loop goes on (heartbeats, other hosts, the output), and the result still leaves only once
its folder is whole (renamed into place), as when the copy was made on the loop."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import anet
from anet.runs import RunOptions
from anet.views.observe import ObserveArgs, RunObservers

BIG = 200_000_000


def test_a_big_result_is_copied_into_its_folder_while_the_loop_runs(tmp_path):
    root = tmp_path / "results"
    seen = RunObservers(ObserveArgs(results=root), io.StringIO(), None, None)
    copying: list[bool] = []  # at each turn of a ticker: was a folder being written?

    async def ticker() -> None:
        while True:
            copying.append(any(p.name.endswith(".tmp") for p in root.iterdir()))
            await asyncio.sleep(0.001)

    async def main() -> list[tuple[int, int]]:
        got = []
        async with anet.Cluster([":"], cwd=str(tmp_path)) as cluster:
            ticking = asyncio.get_running_loop().create_task(ticker())
            batch = [f"head -c {BIG} /dev/zero", "echo small"]
            async for result in cluster.run(batch, RunOptions(arrived=seen.arrived)):
                # the folder is whole before the result goes on (to stdout, and its mark)
                folder = root / str(result.id)
                got.append((result.id, (folder / "stdout").stat().st_size))
                assert (folder / "meta.json").exists()
            ticking.cancel()
        return got

    assert sorted(asyncio.run(main())) == [(0, BIG), (1, 6)]
    assert any(copying), "the loop never ran while a folder was being written"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    with (root / "0" / "stdout").open("rb") as out:
        assert out.read(1 << 20) == bytes(1 << 20)
    assert Path(root / "1" / "stdout").read_bytes() == b"small\n"
