"""Open the one connection each end machine gets, and turn SSH failures into one-line reasons.

`~/.ssh/config` (or `--ssh-config`) is resolved per host with asyncssh's own parser, so aliases,
User, Port, IdentityFile and known_hosts files behave as with `ssh`. A ProxyJump host is
connected once and shared by every end connection behind it (asyncssh would open one per end
connection if handed the string). Handshakes are capped per sshd: its MaxStartups drops
connections beyond 10 unauthenticated ones by default.

Host keys are always verified against known_hosts; there is no password or passphrase prompt.
With `accept_new_hosts` (OpenSSH's StrictHostKeyChecking=accept-new) the key of a host that
known_hosts has never heard of is recorded there, but a *changed* key is still refused, loudly.
`Connector.host_key()` tells what happened to each host's key, for `anet hosts check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HostError
from . import earlyssh, preconnect
from .hosts import HostSpec, parse_spec
from .lean import lighten_connection
from .sshlib import asyncssh, channel_errors, config_paths

if TYPE_CHECKING:
    import asyncssh as ssh

MAX_HANDSHAKES = 8
"""Concurrent handshakes with one sshd: below its MaxStartups (10 unauthenticated by default)."""
MAX_CONNECTING = 128
"""Concurrent handshakes in all: enough that 64 hosts connect in one round."""
CONNECT_TIMEOUT = 20.0

FAST_CIPHERS_FIRST = [
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
]  # fmt: skip
"""asyncssh's default order puts chacha20-poly1305 first, which it computes partly in Python;
AES-GCM is one call into OpenSSL per packet: 2.3x the throughput measured here (200 MB to a
loopback sshd, 1.3 s vs 3.0 s). Used unless the ssh config names `Ciphers` anywhere."""


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach the hosts: an ssh config replacing ~/.ssh/config, and the handshake limit
    per sshd."""

    config: Path | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    max_handshakes: int = MAX_HANDSHAKES
    keepalive: float = 5.0
    accept_new_hosts: bool = False

    def config_paths(self) -> list[str]:
        return config_paths(self.config)


def _names_ciphers(paths: Sequence[str]) -> bool:
    """Does the ssh config choose ciphers itself? Then its choice stands, host by host.

    Read once per run (a plain word search, Include'd files not followed): building options
    twice per host to find out would parse the whole config twice per host.
    """
    for path in paths:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if any(line.strip().lower().startswith("ciphers") for line in text.splitlines()):
            return True
    return False


def describe_error(exc: BaseException, spec: HostSpec) -> str:
    """One line a user can act on, for anything that can go wrong while connecting."""
    target, asyncssh_ = spec.host, asyncssh()
    if isinstance(exc, asyncssh_.HostKeyNotVerifiable):
        return (
            f"host key of {target} is unknown or has changed (not in known_hosts); check it and "
            f"accept it with `ssh {target}` once, or use --accept-new-hosts"
        )
    if isinstance(exc, asyncssh_.PermissionDenied):
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
    if isinstance(exc, asyncssh_.DisconnectError):
        return f"disconnected: {exc.reason}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _needs_user(exc: BaseException) -> bool:
    """Errors that no retry can fix: the user must fix keys, known_hosts or the config."""
    asyncssh_ = asyncssh()
    return isinstance(exc, asyncssh_.HostKeyNotVerifiable | asyncssh_.PermissionDenied | ValueError)


KEY_KNOWN, KEY_UNKNOWN, KEY_CHANGED, KEY_ACCEPTED = "known", "unknown", "CHANGED", "accepted"
"""What became of a host's key: in known_hosts; never seen (refused); not the one known_hosts
has (always refused); never seen and recorded under accept_new_hosts."""


def _key_reason(status: str, spec: HostSpec, name: str) -> str | None:
    """The one line for a refused host key, now that we know whether it is new or changed."""
    if status == KEY_CHANGED:
        return (
            f"HOST KEY CHANGED: {name} sent a key other than the one in known_hosts, so anet "
            "refuses it (an attacker in the middle, or a reinstalled host: if you are sure, "
            f"remove the old key with `ssh-keygen -R '{name}'`)"
        )
    if status == KEY_UNKNOWN:
        return (
            f"host key of {spec.host} is unknown (not in known_hosts): check it and accept it "
            f"with `ssh {spec.host}` once, or use --accept-new-hosts"
        )
    return None


class _KeyChecking:
    """Called by asyncssh only for a key that known_hosts does not trust: tell unknown from
    changed, and record an unknown one when the user asked to accept new hosts. Mixed into
    asyncssh's SSHClient by `_client_class()`, once asyncssh is loaded."""

    def __init__(
        self, paths: list[str], accept_new: bool, status: dict[str, tuple[str, str]], label: str
    ) -> None:
        self._paths = paths
        self._accept_new = accept_new
        self._status = status
        self._label = label

    def validate_host_public_key(self, host: str, addr: str, port: int, key: ssh.SSHKey) -> bool:
        readable = [p for p in self._paths if os.path.isfile(p)]
        trusted: tuple[object, ...] = ()
        if readable:
            found = asyncssh().match_known_hosts(readable, host, addr, port if port != 22 else None)
            trusted = (*found[0], *found[1])  # host keys and CA keys for this host
        name = host if port == 22 else f"[{host}]:{port}"
        if trusted:
            self._status[self._label] = (KEY_CHANGED, name)
            return False
        if not self._accept_new or not self._paths:
            self._status[self._label] = (KEY_UNKNOWN, name)
            return False
        line = key.export_public_key("openssh").decode().split()
        try:
            os.makedirs(os.path.dirname(self._paths[0]) or ".", 0o700, exist_ok=True)
            with open(self._paths[0], "a") as known_hosts:
                known_hosts.write(f"{name} {line[0]} {line[1]}\n")
        except OSError:  # cannot record it: refuse, as ssh does, rather than trust unrecorded
            self._status[self._label] = (KEY_UNKNOWN, name)
            return False
        self._status[self._label] = (KEY_ACCEPTED, name)
        return True


@functools.cache
def _client_class() -> type[ssh.SSHClient]:
    return type("_KeyCheckingClient", (_KeyChecking, asyncssh().SSHClient), {})


async def _preconnected(options: ssh.SSHClientConnectionOptions) -> socket.socket | None:
    """The socket `anet`'s entry point connected to this host's sshd (preconnect.py), if it
    went where asyncssh would connect now: the same host and port, straight, from no chosen
    address or family. asyncssh then runs over it; the host's name is still the one its
    key is checked under."""
    if options.tunnel or options.proxy_command or options.local_addr or options.family:
        return None
    return await preconnect.take(str(options.host), int(options.port))


class Connector:
    """Opens end connections, sharing jump hosts and limiting concurrent handshakes per sshd.

    sshd's MaxStartups (10 by default) counts the unauthenticated connections of one sshd, so
    the limit is per sshd: the address and port the config resolves to, behind the same jump
    hosts. Distinct machines do not wait for each other (a global cap of 8 made 64 hosts take
    eight rounds of handshakes); `MAX_CONNECTING` only bounds the whole, so that a thousand
    hosts do not all time out together on a busy master.
    """

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self._connecting = asyncio.Semaphore(MAX_CONNECTING)
        self._per_sshd: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._jumps: dict[str, asyncio.Future[ssh.SSHClientConnection]] = {}
        self._opened: list[ssh.SSHClientConnection] = []
        self._keys: dict[str, tuple[str, str]] = {}  # label -> (KEY_*, known_hosts name)
        self._config_names_ciphers = _names_ciphers(options.config_paths())

    def _resolve(self, spec: HostSpec) -> ssh.SSHClientConnectionOptions:
        kwargs: dict[str, object] = {}
        if spec.port is not None:
            kwargs["port"] = spec.port
        if spec.user is not None:
            kwargs["username"] = spec.user
        if not self._config_names_ciphers:
            kwargs["encryption_algs"] = FAST_CIPHERS_FIRST
        return asyncssh().SSHClientConnectionOptions(
            host=spec.host,
            config=self.options.config_paths(),
            connect_timeout=self.options.connect_timeout,
            keepalive_interval=self.options.keepalive,
            keepalive_count_max=3,
            password_auth=False,
            kbdint_auth=False,
            **kwargs,
        )

    @contextlib.asynccontextmanager
    async def _handshake(
        self, via: str, options: ssh.SSHClientConnectionOptions
    ) -> AsyncIterator[None]:
        """A place among the handshakes to this sshd (`via`: the jump hosts in front of it)."""
        key = (via, str(options.host).lower(), int(options.port))
        gate = self._per_sshd.setdefault(key, asyncio.Semaphore(self.options.max_handshakes))
        async with gate, self._connecting:
            yield

    def _client_factory(
        self, spec: HostSpec, options: ssh.SSHClientConnectionOptions
    ) -> Callable[[], ssh.SSHClient]:
        """Clients that classify (and, asked to, record) keys known_hosts does not trust."""
        paths = [os.path.expanduser(p) for p in options.known_hosts or ()]
        paths = paths or [os.path.expanduser("~/.ssh/known_hosts")]
        status, label, accept = self._keys, spec.label, self.options.accept_new_hosts
        client = _client_class()
        return lambda: client(paths, accept, status, label)  # type: ignore[call-arg]

    async def connect(self, spec: HostSpec) -> ssh.SSHClientConnection:
        """The end connection for `spec`; HostError with a one-line reason when it fails."""
        early = earlyssh.take(self, spec)
        if early is not None:  # started by `anet`'s entry point, as this would have
            conn = await early  # or the HostError this would have raised
            self._keys[spec.label] = earlyssh.key_status(spec.label) or (KEY_KNOWN, spec.host)
            self._opened.append(conn)
            return conn
        asyncssh_ = asyncssh()
        try:
            options = self._resolve(spec)
            via = options.tunnel if isinstance(options.tunnel, str) else ""
            tunnel = await self._jump(via) if via else ()
            async with self._handshake(via, options):
                factory = self._client_factory(spec, options)
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a cancel
                async with asyncio.timeout(self.options.connect_timeout + 5):
                    sock = await _preconnected(options)
                    conn = await asyncssh_.connect(
                        spec.host, options=options, tunnel=tunnel, client_factory=factory, sock=sock
                    )
        except HostError:
            raise
        except (OSError, asyncssh_.Error, ValueError, TimeoutError) as exc:
            reason = describe_error(exc, spec)
            if isinstance(exc, asyncssh_.HostKeyNotVerifiable) and spec.label in self._keys:
                status, name = self._keys[spec.label]
                reason = _key_reason(status, spec, name) or reason
            raise HostError(spec.label, reason, permanent=_needs_user(exc)) from exc
        self._keys.setdefault(spec.label, (KEY_KNOWN, spec.host))
        lighten_connection(conn)
        self._opened.append(conn)
        return conn

    def key_status(self, label: str) -> tuple[str, str] | None:
        """(KEY_*, the name known_hosts has it under) for a host whose handshake got as far
        as its host key, else None."""
        return self._keys.get(label)

    def host_key(self, label: str) -> str | None:
        """KEY_* for a host whose handshake got as far as its host key, else None."""
        found = self.key_status(label)
        return found[0] if found else None

    async def _jump(self, tunnel: str) -> ssh.SSHClientConnection:
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

    async def _connect_chain(self, hops: Sequence[str]) -> ssh.SSHClientConnection:
        asyncssh_ = asyncssh()
        conn: ssh.SSHClientConnection | None = None
        for at, hop in enumerate(hops):
            spec = parse_spec(hop)
            try:
                options = self._resolve(spec)
                async with self._handshake(",".join(hops[:at]), options):
                    conn = await asyncssh_.connect(spec.host, options=options, tunnel=conn or ())
            except (OSError, asyncssh_.Error, ValueError, TimeoutError) as exc:
                reason = f"jump host: {describe_error(exc, spec)}"
                raise HostError(spec.label, reason, permanent=_needs_user(exc)) from exc
            lighten_connection(conn)
            self._opened.append(conn)
        assert conn is not None
        return conn

    def close_nowait(self) -> None:
        """Close every connection this connector opened, without waiting for them to go."""
        for conn in reversed(self._opened):
            conn.close()

    async def close(self) -> None:
        """Close every connection this connector opened, end connections before jump hosts."""
        for conn in reversed(self._opened):
            conn.close()
        for conn in reversed(self._opened):
            try:
                async with asyncio.timeout(2):
                    await conn.wait_closed()
            except (TimeoutError, *channel_errors()):
                pass
        self._opened.clear()
        self._jumps.clear()
