"""Cipher choice: AES-GCM first by default (asyncssh's chacha20 is the slow one), and an ssh
config that names Ciphers is obeyed."""

from __future__ import annotations

import asyncio

from anet.remote.connect import Connector, SshOptions
from anet.remote.hosts import parse_spec


def negotiated(config) -> str:
    async def main() -> str:
        connector = Connector(SshOptions(config=config))
        try:
            conn = await connector.connect(parse_spec("host1"))
            return conn.get_extra_info("send_cipher")
        finally:
            await connector.close()

    return asyncio.run(main())


def test_aes_gcm_is_preferred_by_default(cluster):
    assert negotiated(cluster.ssh_config) == "aes128-gcm@openssh.com"


def test_a_config_naming_ciphers_is_obeyed(cluster, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    Ciphers aes256-ctr\n\n" + cluster.ssh_config.read_text())
    assert negotiated(config) == "aes256-ctr"
