"""The floor under a big output's MB/s: one bare asyncssh session reading a command's stdout.

    python3 -m bench.sshfloor SSH_CONFIG HOST COMMAND

Nothing of anet runs here but the connection's options (anet's cipher order, uvloop when
present): the session's bytes are counted and dropped as asyncssh hands them over. Whatever
this costs, anet's master pays too before it decodes a frame, so bigout.py's row for it is the
most an asyncssh master can reach against the OpenSSH client on the same host, measured in
the same run (docs/benchmarks.md, "Big output: the asyncssh floor").
"""

from __future__ import annotations

import asyncio
import sys

import asyncssh

from anet.remote.connect import FAST_CIPHERS_FIRST


class _Drop(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.size = 0

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.size += len(data)


async def _read(config: str, host: str, command: str) -> int:
    async with asyncssh.connect(host, config=[config], encryption_algs=FAST_CIPHERS_FIRST) as conn:
        channel, session = await conn.create_session(_Drop, command, encoding=None)
        await channel.wait_closed()
        return session.size


def main() -> None:
    config, host, command = sys.argv[1:4]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    size = asyncio.run(_read(config, host, command))
    print(size)


if __name__ == "__main__":
    main()
