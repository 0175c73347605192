"""The output ledger over a real pipe whose reader leaves: a result is marked delivered only
when the kernel took all of its bytes, never because anet handed them to a transport that then
lost them (a delivery mark for bytes never written is a result `--resume --only-new` skips)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os

from anet.streams.output import OutputClosed, open_output

RECORD = 4096
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def test_a_reader_that_leaves_gets_no_mark_for_bytes_it_never_could_take() -> None:
    asyncio.run(_reader_leaves())


async def _reader_leaves() -> None:
    r, w = os.pipe()
    capacity = fcntl.fcntl(w, F_SETPIPE_SZ, RECORD)  # the kernel's share, kept small and known
    marked: list[int] = []
    with os.fdopen(w, "wb", buffering=0) as stream:
        out = await open_output(stream)

        async def writer() -> None:
            with contextlib.suppress(OutputClosed):
                for job_id in range(40):
                    await out.write(bytes([job_id]) * RECORD, job_id)
                    marked.extend(out.delivered())
                    await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        for _ in range(200):  # until the writer filled the pipe and the transport's buffer
            await asyncio.sleep(0.01)
            if out._unsent() > 0:
                break
        read = len(os.read(r, 2 * RECORD))  # the reader takes a little, then leaves
        os.close(r)
        await asyncio.wait_for(task, 10)
        marked.extend(out.delivered())
        await out.close(0.2)
        marked.extend(out.delivered())
    reachable = (read + capacity) // RECORD  # read, or in the pipe when the reader left
    assert marked == list(range(len(marked)))
    assert len(marked) <= reachable, f"{len(marked)} marked, at most {reachable} were taken"
