"""The early hosts' TCP connections are opened before asyncssh is imported, and used.

`anet`'s entry point connects to each early host's sshd from a thread (remote/preconnect.py)
at the address the ssh config's Host blocks give (`sshlib.direct_address`, read without
asyncssh); `Connector.connect` hands that socket to asyncssh when asyncssh's own reading of
the config goes to the same host and port. Checked against real sshd hosts: one TCP
connection per host (sshd logs each), the handshake made over the early socket, hosts behind
a jump never connected early, a refused port failing in the same words as without.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from anet.errors import HostError
from anet.remote import preconnect, sshlib
from anet.remote.connect import Connector, SshOptions
from anet.remote.hosts import parse_spec


@pytest.fixture(autouse=True)
def _nothing_left_pending():
    yield
    preconnect.close_untaken()


def tcp_connections(host) -> int:  # type: ignore[no-untyped-def]
    """TCP connections this sshd accepted (LogLevel VERBOSE logs each), probes included."""
    return host.log.read_text(errors="replace").count("Connection from ")


def wait_connected(address: tuple[str, int]) -> socket.socket | None:
    pending = preconnect._pending[address]
    assert pending.done.wait(10)
    return pending.sock


def test_the_connector_runs_the_handshake_over_the_socket_opened_early(make_cluster):
    cluster = make_cluster(1)
    host = cluster["host1"]
    spec, paths = parse_spec("host1"), [str(cluster.ssh_config)]
    before = tcp_connections(host)
    preconnect.start([spec], paths)
    early = wait_connected((host.address, host.port))
    assert early is not None
    local = early.getsockname()

    async def run() -> tuple[object, bytes]:
        connector = Connector(SshOptions(config=cluster.ssh_config))
        conn = await connector.connect(spec)
        try:
            done = await conn.run("echo over-the-early-socket", check=True, encoding=None)
            return conn.get_extra_info("sockname"), done.stdout
        finally:
            await connector.close()

    sockname, out = asyncio.run(run())
    assert out == b"over-the-early-socket\n"
    assert tuple(sockname)[:2] == local[:2]  # the socket opened early, not a new one
    assert tcp_connections(host) - before == 1
    assert preconnect._pending == {}  # taken once


def test_the_address_read_without_asyncssh_is_asyncssh_s(make_cluster, tmp_path):
    """Host blocks, HostName, Port, first value winning, `!` patterns, the spec's own port:
    `direct_address` says what asyncssh resolves, for the test hosts and a config of each."""
    cluster = make_cluster(2)
    config = tmp_path / "ssh_config"
    config.write_text(
        cluster.ssh_config.read_text()
        + "\nHost alias1 !alias2 *-alias\n    HostName 127.0.0.9\n    Port 2200\n"
        "Host *\n    Port 2201\n"
    )
    paths = [str(config)]
    connector = Connector(SshOptions(config=config))
    for spec in map(parse_spec, ["host1", "host2", "alias1", "x-alias", "alias2", "alias1:23"]):
        options = connector._resolve(spec)
        expected = (str(options.host), int(options.port))
        assert sshlib.direct_address(spec.host, spec.port, paths) == expected, spec


@pytest.mark.parametrize(
    "lines",
    [
        "Host jumped\n    ProxyJump host1\n",
        "Host jumped\n    ProxyCommand nc %h %p\n",
        "Match host jumped\n    HostName 127.0.0.1\n",
        "Host jumped\n    BindAddress 127.0.0.1\n",
        "Include other_config\n",
    ],
    ids=["proxyjump", "proxycommand", "match", "bindaddress", "include"],
)
def test_a_host_the_host_blocks_cannot_place_is_not_connected_early(tmp_path, lines):
    config = tmp_path / "ssh_config"
    config.write_text(lines + "Host *\n    HostName 127.0.0.1\n    Port 22\n")
    assert sshlib.direct_address("jumped", None, [str(config)]) is None
    preconnect.start([parse_spec("jumped")], [str(config)])
    assert preconnect._pending == {}


def test_a_jump_host_s_end_host_is_not_connected_early_and_still_reached(make_cluster, tmp_path):
    """Through a real jump host: nothing is connected early, and the run gets there."""
    cluster = make_cluster(2)
    config = tmp_path / "ssh_config"
    config.write_text(
        cluster.ssh_config.read_text().replace("Host host2\n", "Host host2\n    ProxyJump host1\n")
    )
    spec = parse_spec("host2")
    preconnect.start([spec], [str(config)])
    assert preconnect._pending == {}

    async def run() -> bytes:
        connector = Connector(SshOptions(config=config))
        try:
            conn = await connector.connect(spec)
            return (await conn.run("echo behind", check=True, encoding=None)).stdout
        finally:
            await connector.close()

    assert asyncio.run(run()) == b"behind\n"


def test_a_refused_port_fails_in_the_words_of_a_connection_made_the_usual_way(
    make_cluster, tmp_path
):
    cluster = make_cluster(1)
    with socket.socket() as probe:  # a port nothing listens on: bound, then freed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "ssh_config"
    config.write_text(
        cluster.ssh_config.read_text().replace(f"Port {cluster['host1'].port}", f"Port {port}")
    )
    spec = parse_spec("host1")

    def reason(early: bool) -> str:
        if early:
            preconnect.start([spec], [str(config)])
            assert wait_connected((cluster["host1"].address, port)) is None  # refused

        async def run() -> str:
            connector = Connector(SshOptions(config=config))
            try:
                await connector.connect(spec)
            except HostError as exc:
                return str(exc)
            finally:
                await connector.close()
            raise AssertionError("connected to a closed port")

        return asyncio.run(run())

    assert reason(early=True) == reason(early=False)
    assert "connection refused" in reason(early=False)


def test_a_socket_no_one_took_is_closed(make_cluster):
    cluster = make_cluster(1)
    host = cluster["host1"]
    preconnect.start([parse_spec("host1")], [str(cluster.ssh_config)])
    early = wait_connected((host.address, host.port))
    assert early is not None and early.fileno() >= 0
    preconnect.close_untaken()
    assert early.fileno() == -1 and preconnect._pending == {}


def test_the_config_lines_are_tokenised_once_for_both_readers():
    """`direct_address` reads `_lines` under the key asyncssh's parse uses: its kinds."""
    config = sshlib.asyncssh().config.SSHClientConfig
    assert frozenset(config._no_split) == sshlib.CLIENT_NO_SPLIT
    assert frozenset(config._conditionals) == sshlib.CLIENT_CONDITIONALS


def test_a_missing_config_connects_nothing_early(tmp_path: Path):
    assert sshlib.direct_address("h1", None, [str(tmp_path / "none")]) is None
