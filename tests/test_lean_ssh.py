"""asyncssh's per-packet work turned off on anet's connections (anet/remote/lean.py), against
real sshd hosts: no ignore packet ahead of each packet sent, no packet log lines built below
the packet debug level, one keepalive timer an interval; and the keepalive still drops a
frozen host and keeps an idle live one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from anet.remote.connect import Connector, SshOptions
from anet.remote.hosts import parse_spec
from anet.remote.lean import lighten_channel, uses_cbc

Echo = Callable[[bytes], Awaitable[bytes]]


@asynccontextmanager
async def echoing(
    config: Path, host: str = "host1", keepalive: float = 5.0
) -> AsyncIterator[tuple[Any, Echo]]:
    """A connection made as anet makes it, and a `cat` on it: write a line, read it back."""
    connector = Connector(SshOptions(config=config, keepalive=keepalive))
    try:
        conn = await connector.connect(parse_spec(host))
        process = await conn.create_process("cat", encoding=None)
        lighten_channel(process.stdin.channel)

        async def echo(line: bytes) -> bytes:
            process.stdin.write(line)
            async with asyncio.timeout(10):
                return await process.stdout.readline()

        yield conn, echo
        process.close()
    finally:
        await connector.close()


@pytest.mark.parametrize("cipher", ["", "aes256-ctr"])
def test_one_packet_per_write_without_cbc(cluster, tmp_path, cipher):
    """asyncssh alone sends two packets a write (an empty SSH_MSG_IGNORE first)."""
    config = tmp_path / "ssh_config"
    ciphers = f"Host *\n    Ciphers {cipher}\n\n" if cipher else ""
    config.write_text(ciphers + cluster.ssh_config.read_text())

    async def main() -> list[int]:
        async with echoing(config) as (conn, echo):
            sent = []
            for n in range(5):
                before = conn._send_seq  # one sequence number per packet sent
                assert await echo(b"line %d\n" % n) == b"line %d\n" % n
                sent.append(conn._send_seq - before)
            return sent

    assert asyncio.run(main()) == [1] * 5


def test_cbc_ciphers_are_told_apart():
    assert uses_cbc("aes128-cbc")
    assert uses_cbc(None)  # not known: keep asyncssh's ignore packets
    assert not uses_cbc("aes128-gcm@openssh.com")
    assert not uses_cbc("chacha20-poly1305@openssh.com")
    assert not uses_cbc("aes256-ctr")


def test_packet_log_lines_only_at_the_packet_level(cluster, monkeypatch, caplog):
    """Below debug level 3 no packet line is formatted; at 3 every packet is logged still."""
    formatted = []
    stock = asyncssh.packet.SSHPacketLogger._log_packet

    def counting(self: Any, *args: Any) -> None:
        formatted.append(args[0])
        stock(self, *args)

    monkeypatch.setattr(asyncssh.packet.SSHPacketLogger, "_log_packet", counting)

    async def main() -> tuple[int, int]:
        async with echoing(cluster.ssh_config) as (_, echo):
            formatted.clear()
            await echo(b"quiet\n")
            quiet = len(formatted)
            asyncssh.set_debug_level(3)
            try:
                with caplog.at_level(logging.DEBUG, logger="asyncssh"):
                    await echo(b"loud\n")
            finally:
                asyncssh.set_debug_level(1)
            return quiet, len(formatted)

    quiet, loud = asyncio.run(main())
    assert quiet == 0
    assert loud >= 2  # the data sent, the data echoed
    assert any("Sent" in r.getMessage() for r in caplog.records)
    assert any("Received" in r.getMessage() for r in caplog.records)


def test_reads_do_not_remake_the_keepalive_timer(cluster):
    async def main() -> set[int]:
        async with echoing(cluster.ssh_config) as (conn, echo):
            timers = set()
            for n in range(10):
                await echo(b"%d\n" % n)
                timers.add(id(conn._keepalive_timer))
            return timers

    assert len(asyncio.run(main())) == 1


def test_keepalive_keeps_an_idle_live_host(cluster):
    """Idle for 8 intervals: its keepalive requests are answered, the connection stays."""

    async def main() -> bool:
        async with echoing(cluster.ssh_config, keepalive=0.25) as (conn, echo):
            await asyncio.sleep(2.0)
            assert await echo(b"still here\n") == b"still here\n"
            return conn.is_closed()

    assert asyncio.run(main()) is False


def test_keepalive_drops_a_frozen_host(make_cluster):
    """Three unanswered requests, one an interval, then the connection is dropped."""
    cluster = make_cluster(1)
    interval = 0.25

    async def main() -> float:
        async with echoing(cluster.ssh_config, keepalive=interval) as (conn, echo):
            await echo(b"warm\n")
            cluster["host1"].freeze()
            try:
                frozen = time.monotonic()
                async with asyncio.timeout(10):
                    await conn.wait_closed()
                return time.monotonic() - frozen
            finally:
                cluster["host1"].thaw()

    took = asyncio.run(main())
    assert 3 * interval <= took < 4 * interval + 2.0
