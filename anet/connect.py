"""Open the one connection each end machine gets, and turn SSH failures into one-line reasons.

`~/.ssh/config` (or `--ssh-config`) is resolved per host with asyncssh's own parser, so aliases,
User, Port, IdentityFile and known_hosts files behave as with `ssh`. A ProxyJump host is
connected once and shared by every end connection behind it (asyncssh would open one per end
connection if handed the string). Handshakes are capped: sshd's MaxStartups drops connections
beyond 10 unauthenticated ones by default.

Host keys are always verified against known_hosts; there is no password or passphrase prompt.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .errors import HostError
from .hosts import HostSpec, parse_spec

MAX_HANDSHAKES = 8
CONNECT_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach the hosts: an ssh config replacing ~/.ssh/config, and handshake limits."""

    config: Path | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    max_handshakes: int = MAX_HANDSHAKES
    keepalive: float = 5.0

    def config_paths(self) -> list[str]:
        if self.config is not None:
            return [str(self.config)]
        default = Path.home() / ".ssh" / "config"
        return [str(default)] if default.is_file() else []


def describe_error(exc: BaseException, spec: HostSpec) -> str:
    """One line a user can act on, for anything that can go wrong while connecting."""
    target = spec.host
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (
            f"host key of {target} is unknown or has changed (not in known_hosts); check it and "
            f"accept it with `ssh {target}` once"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return (
            "authentication failed: no key was accepted (agent or IdentityFile); "
            "anet never asks for a password"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: is sshd running on that address and port?"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name {target!r}"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"disconnected: {exc.reason}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _needs_user(exc: BaseException) -> bool:
    """Errors that no retry can fix: the user must fix keys, known_hosts or the config."""
    return isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied | ValueError)


class Connector:
    """Opens end connections, sharing jump hosts and limiting concurrent handshakes."""

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self._handshakes = asyncio.Semaphore(options.max_handshakes)
        self._jumps: dict[str, asyncio.Future[asyncssh.SSHClientConnection]] = {}
        self._opened: list[asyncssh.SSHClientConnection] = []

    def _resolve(self, spec: HostSpec) -> asyncssh.SSHClientConnectionOptions:
        kwargs: dict[str, object] = {}
        if spec.port is not None:
            kwargs["port"] = spec.port
        if spec.user is not None:
            kwargs["username"] = spec.user
        return asyncssh.SSHClientConnectionOptions(
            host=spec.host,
            config=self.options.config_paths(),
            connect_timeout=self.options.connect_timeout,
            keepalive_interval=self.options.keepalive,
            keepalive_count_max=3,
            password_auth=False,
            kbdint_auth=False,
            **kwargs,
        )

    async def connect(self, spec: HostSpec) -> asyncssh.SSHClientConnection:
        """The end connection for `spec`; HostError with a one-line reason when it fails."""
        try:
            options = self._resolve(spec)
            tunnel = await self._jump(options.tunnel) if isinstance(options.tunnel, str) else ()
            async with self._handshakes:
                conn = await asyncio.wait_for(
                    asyncssh.connect(spec.host, options=options, tunnel=tunnel),
                    self.options.connect_timeout + 5,
                )
        except HostError:
            raise
        except (OSError, asyncssh.Error, ValueError, TimeoutError) as exc:
            reason = describe_error(exc, spec)
            raise HostError(spec.label, reason, permanent=_needs_user(exc)) from exc
        self._opened.append(conn)
        return conn

    async def _jump(self, tunnel: str) -> asyncssh.SSHClientConnection:
        """One connection per jump host chain, shared by every host behind it."""
        future = self._jumps.get(tunnel)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._jumps[tunnel] = future
            try:
                conn = await self._connect_chain(tunnel.split(","))
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it; no "never retrieved" noise
                raise
            future.set_result(conn)
        return await asyncio.shield(future)

    async def _connect_chain(self, hops: Sequence[str]) -> asyncssh.SSHClientConnection:
        conn: asyncssh.SSHClientConnection | None = None
        for hop in hops:
            spec = parse_spec(hop)
            try:
                options = self._resolve(spec)
                async with self._handshakes:
                    conn = await asyncssh.connect(spec.host, options=options, tunnel=conn or ())
            except (OSError, asyncssh.Error, ValueError, TimeoutError) as exc:
                reason = f"jump host: {describe_error(exc, spec)}"
                raise HostError(spec.label, reason, permanent=_needs_user(exc)) from exc
            self._opened.append(conn)
        assert conn is not None
        return conn

    async def close(self) -> None:
        """Close every connection this connector opened, end connections before jump hosts."""
        for conn in reversed(self._opened):
            conn.close()
        for conn in reversed(self._opened):
            try:
                async with asyncio.timeout(2):
                    await conn.wait_closed()
            except (TimeoutError, OSError, asyncssh.Error):
                pass
        self._opened.clear()
        self._jumps.clear()
