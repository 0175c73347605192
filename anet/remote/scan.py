"""Find machines with an SSH server in an address range: the first step of onboarding a pool.

A target answers when a TCP connection to the port succeeds *and* the first line it sends is
an SSH banner (`SSH-2.0-...`): an open port running something else is not a host for anet.
Connections are bounded in number and time, so scanning a /20 neither exhausts file
descriptors nor waits on every silent address in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .hostlist import MAX_EXPANSION, expand_range

SCAN_TIMEOUT = 1.0
SCAN_CONCURRENCY = 256
BANNER_BYTES = 255
"""RFC 4253: the identification line is at most 255 bytes, CR LF included."""


@dataclass(frozen=True, slots=True)
class SshServer:
    """An address and port that answered with an SSH banner."""

    address: str
    port: int
    banner: str

    @property
    def spec(self) -> str:
        """The host spec anet takes for it: the port only when it is not 22."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return host if self.port == 22 else f"{host}:{self.port}"


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Addresses or names from CIDR blocks (`10.0.0.0/24`), ranges (`node[01-40]`,
    `10.0.0.[1-20]`) and plain names, in order, without repeats."""
    found: dict[str, None] = {}
    for target in targets:
        if "/" in target:
            try:
                network = ipaddress.ip_network(target, strict=False)
            except ValueError as exc:
                raise UsageError(f"bad address range {target!r}: {exc}") from None
            if network.num_addresses > MAX_EXPANSION:
                raise UsageError(f"{target} holds over {MAX_EXPANSION} addresses")
            hosts = list(network.hosts()) or [network.network_address]
            found.update((str(address), None) for address in hosts)
        else:
            found.update((name, None) for name in expand_range(target))
        if len(found) > MAX_EXPANSION:
            raise UsageError(f"over {MAX_EXPANSION} addresses to scan")
    return list(found)


async def scan(
    addresses: Sequence[str],
    ports: Sequence[int] = (22,),
    *,
    timeout: float = SCAN_TIMEOUT,
    concurrency: int = SCAN_CONCURRENCY,
) -> list[SshServer]:
    """Every (address, port) with an SSH server, in the order of `addresses` then `ports`."""
    limit = asyncio.Semaphore(concurrency)

    async def probe(address: str, port: int) -> SshServer | None:
        async with limit:
            banner = await _banner(address, port, timeout)
        return SshServer(address, port, banner) if banner is not None else None

    probes = [probe(address, port) for address in addresses for port in ports]
    return [server for server in await asyncio.gather(*probes) if server is not None]


async def _banner(address: str, port: int, timeout: float) -> str | None:
    """The server's identification line, or None: closed, silent, or not SSH."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):  # ValueError: a line over the stream limit
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(timeout):
                    await writer.wait_closed()
    if not line.startswith(b"SSH-"):
        return None
    return line[:BANNER_BYTES].decode("ascii", "replace").strip()
