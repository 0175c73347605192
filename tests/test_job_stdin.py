"""Jobs that read their stdin, from the library: `Job(..., stdin=...)` and `Cluster.map`.

Against the local dispatcher and the shared sshd hosts: exact results, a job that does not
read, a retried job that reads its input again, and a big input with the master's memory
bounded (measured in a process of its own, as tests/test_bigout.py does).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import anet
from anet.core.batch import FilePart, Job
from anet.errors import HostError
from anet.remote.connect import SshOptions
from anet.remote.feed import Feeds
from dispatcher.protocol import INPUT_CHUNK, INPUT_WINDOW, Input, InputAck, Message

ROOT = Path(__file__).resolve().parent.parent


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"  -\n"


def inputs(n: int) -> list[bytes]:
    """Inputs of many sizes, around the chunk and window sizes, with every byte value."""
    sizes = [0, 1, 255, 256 * 1024 - 1, 256 * 1024 + 1, INPUT_WINDOW + 3, 5 << 20]
    return [bytes(range(256)) * (sizes[i % len(sizes)] // 256) + b"x" * (i % 7) for i in range(n)]


def test_map_gives_each_input_to_its_job_in_input_order(tmp_path):
    given = inputs(14)

    async def main():
        async with anet.Cluster(["4/:"], cwd=str(tmp_path)) as cluster:
            return [r async for r in cluster.map("sha256sum", given)]

    results = asyncio.run(main())
    assert [r.id for r in results] == list(range(14))
    assert [r.stdout for r in results] == [sha(data) for data in given]


def test_jobs_read_bytes_files_and_parts_of_files(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "in.bin").write_bytes(data)
    jobs = [
        Job(0, b"sha256sum", stdin=data),
        Job(1, b"sha256sum", stdin=str(tmp_path / "in.bin")),
        Job(2, b"sha256sum", stdin=FilePart(tmp_path / "in.bin", 1000, 300_000)),
        Job(3, b"sha256sum", stdin=FilePart(tmp_path / "in.bin", 1 << 20)),  # at the end: empty
        Job(4, b"cat /dev/stdin | wc -c"),  # no stdin: /dev/null
    ]

    async def main():
        async with anet.Cluster(["2/:"]) as cluster:
            return {r.id: r.stdout async for r in cluster.run(jobs)}

    got = asyncio.run(main())
    assert got == {
        0: sha(data),
        1: sha(data),
        2: sha(data[1000:301_000]),
        3: sha(b""),
        4: b"0\n",
    }


def test_a_job_that_never_reads_its_stdin_stalls_no_other_job(tmp_path):
    """One job sits on a 50 MB input it never reads; the others (one slot each) all end."""
    big = b"z" * (50 << 20)
    jobs = [Job(0, b"sleep 300", stdin=big)]
    jobs += [Job(i, b"wc -c", stdin=b"a" * i * 1000) for i in range(1, 20)]

    async def main():
        async with anet.Cluster(["2/:"]) as cluster:
            got = {}
            async for result in cluster.run(jobs):
                got[result.id] = result.stdout
                if len(got) == 19:
                    break
            return got

    got = asyncio.run(main())
    assert got == {i: b"%d\n" % (i * 1000) for i in range(1, 20)}


def test_a_job_that_exits_without_reading_a_big_input_succeeds(tmp_path):
    async def main():
        async with anet.Cluster(["2/:"]) as cluster:
            return [r async for r in cluster.map("head -c 3", [b"abcdef" * (4 << 20), b"xy"])]

    results = asyncio.run(main())
    assert [(r.ok, r.stdout) for r in results] == [(True, b"abc"), (True, b"xy")]


def test_a_retried_job_reads_the_same_input_again(tmp_path):
    """The first attempt reads half its input and fails; the retry gets all of it, from the
    start."""
    data = bytes(range(256)) * 8192  # 2 MiB
    command = (
        'if [ -e "tried$ANET_JOB_ID" ]; then sha256sum; '
        'else touch "tried$ANET_JOB_ID"; head -c 1000000 > /dev/null; exit 1; fi'
    )

    async def main():
        async with anet.Cluster(["2/:"], cwd=str(tmp_path)) as cluster:
            return [r async for r in cluster.map(command, [data, data[:5000]])]

    results = asyncio.run(main())
    assert [r.stdout for r in results] == [sha(data), sha(data[:5000])]
    assert [r.attempts for r in results] == [2, 2]


def test_map_over_the_sshd_hosts_gives_exact_results(cluster):
    given = inputs(21)

    async def main():
        hosts = [host.spec for host in cluster.hosts]
        ssh = SshOptions(config=cluster.ssh_config)
        async with anet.Cluster(hosts, ssh=ssh) as on_hosts:
            return [r async for r in on_hosts.map("sha256sum", given, ordered=False)]

    results = asyncio.run(main())
    assert sorted(r.id for r in results) == list(range(21))
    assert {r.id: r.stdout for r in results} == {i: sha(data) for i, data in enumerate(given)}
    assert len({r.host for r in results}) > 1


BIG_INPUT = textwrap.dedent(
    """
    import asyncio, sys
    import anet
    from anet.remote.connect import SshOptions

    async def main():
        ssh = SshOptions(config=sys.argv[2])
        async with anet.Cluster([sys.argv[3]], ssh=ssh) as cluster:
            async for result in cluster.map("wc -c", [sys.argv[1]]):
                print(result.ok, result.stdout.decode().strip())

    asyncio.run(main())
    with open("/proc/self/status") as status:
        print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
    """
)


def test_a_200_mb_input_streams_to_an_sshd_host_in_bounded_master_memory(cluster, tmp_path):
    size = 200 << 20
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        out.truncate(size)  # sparse: the disk holds nothing, the job reads 200 MB of zeros
    run = subprocess.run(
        [sys.executable, "-c", BIG_INPUT, str(path), str(cluster.ssh_config), "host1"],
        capture_output=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()
    said, peak = run.stdout.decode().splitlines()
    assert said == f"True {size}"
    assert int(peak) < 100 * 1024, f"master peak RSS {int(peak) >> 10} MiB"


def test_an_input_ack_is_believed_only_from_the_host_fed_and_for_no_more_than_was_sent():
    async def main():
        sent: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

        async def send_drained(host: str, msg: Message) -> None:
            await sent.put((host, msg))

        async with asyncio.TaskGroup() as tasks:
            feeds = Feeds(send_drained, tasks, lambda *why: None)
            feeds.start("host1", 5, b"0123456789")
            assert await sent.get() == ("host1", Input(5, b"0123456789", False))
            assert await sent.get() == ("host1", Input(5, b"", True))
            with pytest.raises(HostError, match="host2: protocol error: InputAck about attempt 5"):
                feeds.ack("host2", InputAck(5, 1, False))
            with pytest.raises(HostError, match="InputAck of 11 bytes, 10 unacknowledged"):
                feeds.ack("host1", InputAck(5, 11, False))
            feeds.ack("host1", InputAck(5, 10, False))
            feeds.ended(5)
            with pytest.raises(HostError, match="InputAck about attempt 5"):
                feeds.ack("host1", InputAck(5, 0, False))

    asyncio.run(main())


def test_a_queued_attempt_gets_one_chunk_and_a_started_one_a_window():
    """A dispatcher queues up to 8 attempts a slot: each holds one chunk of input until it
    starts, then its feed runs a window ahead of the acknowledgements."""

    async def main():
        sent: asyncio.Queue[Message] = asyncio.Queue()

        async def send_drained(host: str, msg: Message) -> None:
            await sent.put(msg)

        async with asyncio.TaskGroup() as tasks:
            feeds = Feeds(send_drained, tasks, lambda *why: None)
            feeds.start("host1", 1, bytes(4 * INPUT_CHUNK))
            assert len((await sent.get()).data) == INPUT_CHUNK
            for _ in range(20):  # the feed's task gets every chance to send more
                await asyncio.sleep(0)
            assert sent.empty()
            feeds.started(1)
            got = [await sent.get() for _ in range(4)]
            assert [len(m.data) for m in got] == [INPUT_CHUNK] * 3 + [0] and got[-1].eof

    asyncio.run(main())
