"""Which host specs name the same end machine, so that each gets one connection (invariant 7).

`h1`, `bob@10.0.0.7`, `8/h1-alias` and `bob@10.0.0.7:22` may all be one machine. Two specs are
the same end machine when they log in as the same user to the same port of the same host:

- **after the ssh config** (`Host` aliases, HostName, User, Port): the common case, and cheap,
  since it reads a local file (about 0.2 ms a host);
- **and after name resolution**, where a name and something else look like one machine: both
  resolve to the same address (`h1` in /etc/hosts and `127.0.1.1`, `node1` and
  `node1.example.org`). A name is resolved only when another spec has its user and port and is
  an address, or a name with the same first label: a pool of `node01`..`node40` costs no
  lookup at all. Lookups run at once in threads, within `DNS_BUDGET` seconds; a name that
  does not answer in time is compared by its text, and the run starts anyway. A name with
  several addresses of one family (a round-robin alias, a multi-homed host) is compared by its
  text too: merging on a shared address would chain distinct machines together.

Two aliases of one host with different keys or known_hosts files (`IdentityFile`, ...) stay
apart: they are different ways in, and keeping only the first could keep the one that fails.

A host behind ProxyJump or ProxyCommand is never resolved here: its name means what it means on
the jump host, and two clusters behind two gateways may well both have a 10.0.0.5. Such hosts
are the same machine only if their jump is the same too.
"""

from __future__ import annotations

import getpass
import ipaddress
import socket
import threading
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .sshlib import asyncssh

if TYPE_CHECKING:  # anet.hosts imports this module
    from .hosts import HostSpec

DNS_BUDGET = 1.0
"""Seconds anet waits for host names to resolve before it starts; the rest count as distinct."""
DNS_THREADS = 16
DEFAULT_PORT = 22
AUTH_OPTIONS = (
    "IdentityFile", "CertificateFile", "IdentitiesOnly", "IdentityAgent", "UserKnownHostsFile",
    "GlobalKnownHostsFile", "HostKeyAlias", "StrictHostKeyChecking", "PubkeyAuthentication",
    "PreferredAuthentications",
)  # fmt: skip
"""ssh config options that change how a login is made: aliases that differ in them stay apart."""


@dataclass(frozen=True, slots=True)
class EndMachine:
    """Where a spec's connection really goes, by the ssh config: user, host, port, jump."""

    user: str
    host: str  # HostName, lowercased; an IP address in its canonical form
    port: int
    via: str = ""  # ProxyJump or ProxyCommand: the host is reached, and named, from there
    auth: tuple[tuple[str, object], ...] = ()  # AUTH_OPTIONS as the config sets them

    @property
    def login(self) -> tuple[str, int, str, tuple[tuple[str, object], ...]]:
        """Everything but the host: specs with equal logins may be one machine."""
        return self.user, self.port, self.via, self.auth

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = f" via {self.via}" if self.via else ""
        return f"{self.user}@{host}:{self.port}{via}"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry: the config or the spec names the user
        return ""


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()  # DNS names are case-insensitive; OpenSSH lowercases them too


def end_machine(spec: HostSpec, config_paths: Sequence[str]) -> EndMachine:
    """`spec` as the ssh config resolves it; the spec alone when the config cannot be read
    (the connection will report that error itself)."""
    local = _local_user()
    user, host, port = spec.user or local, spec.host, spec.port or DEFAULT_PORT
    try:
        config = asyncssh().config.SSHClientConfig.load(
            None, list(config_paths), False, False, False,
            local, spec.user or (), spec.host, spec.port or (),
        )  # fmt: skip
    except (OSError, ValueError):
        return EndMachine(user, _canonical(host), port)
    host = str(config.get("Hostname", spec.host))
    user = str(config.get("User", user))
    port = int(config.get("Port", port))  # type: ignore[call-overload]
    via = str(config.get("ProxyJump") or config.get("ProxyCommand") or "")  # "none" is None
    auth = tuple((name, _hashable(config.get(name))) for name in AUTH_OPTIONS if config.get(name))
    return EndMachine(user, _canonical(host), port, via, auth)


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_names(names: Iterable[str], budget: float = DNS_BUDGET) -> dict[str, frozenset[str]]:
    """Each name's addresses, resolved in parallel daemon threads; the names that fail, or do
    not answer within `budget` seconds, are left out (a thread stuck in getaddrinfo is left to
    finish on its own: it holds nothing, and as a daemon it never delays the exit)."""
    todo = list(dict.fromkeys(names))
    found: dict[str, frozenset[str]] = {}
    lock = threading.Condition()
    pending = [len(todo)]

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                name = todo.pop()
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
                addresses = frozenset(_canonical(str(info[4][0])) for info in infos)
            except (OSError, UnicodeError):
                addresses = frozenset()
            with lock:
                if addresses:
                    found[name] = addresses
                pending[0] -= 1
                lock.notify_all()

    for _ in range(min(DNS_THREADS, len(todo))):
        threading.Thread(target=worker, name="anet-resolve", daemon=True).start()
    deadline = time.monotonic() + budget
    with lock:
        while pending[0] and (left := deadline - time.monotonic()) > 0:
            lock.wait(left)
        return dict(found)


def _worth_resolving(hosts: set[str]) -> list[str]:
    """The names among one login's hosts that may be another of them: all of them when one is
    an address, else those sharing a first label (`node1`, `node1.example.org`)."""
    names = sorted(host for host in hosts if not _is_address(host))
    if len(names) < len(hosts):
        return names
    firsts: dict[str, list[str]] = {}
    for name in names:
        firsts.setdefault(name.split(".", 1)[0], []).append(name)
    return [name for same in firsts.values() if len(same) > 1 for name in same]


def _one_per_family(addresses: frozenset[str]) -> bool:
    v6 = sum(":" in a for a in addresses)
    return v6 <= 1 and len(addresses) - v6 <= 1


class _Groups:
    """Union-find over hashable items: which are known to be the same."""

    def __init__(self) -> None:
        self._parent: dict[Hashable, Hashable] = {}

    def find(self, item: Hashable) -> Hashable:
        parent = self._parent.setdefault(item, item)
        if parent != item:
            parent = self._parent[item] = self.find(parent)
        return parent

    def join(self, a: Hashable, b: Hashable) -> None:
        self._parent[self.find(a)] = self.find(b)


def machine_keys(
    specs: Sequence[HostSpec],
    config_paths: Sequence[str],
    budget: float = DNS_BUDGET,
) -> tuple[dict[str, Hashable], dict[str, EndMachine]]:
    """For each spec's label: a key equal for the specs of one end machine, and where the
    spec's connection goes."""
    ends = {s.label: end_machine(s, config_paths) for s in specs if not s.local}
    by_login: dict[Hashable, set[str]] = {}
    for end in ends.values():
        if not end.via:  # behind a jump, a name means what it means there
            by_login.setdefault(end.login, set()).add(end.host)
    names = [name for hosts in by_login.values() for name in _worth_resolving(hosts)]
    addresses: Mapping[str, frozenset[str]] = resolve_names(names, budget)
    groups = _Groups()
    for end in ends.values():
        if not end.via and _one_per_family(found := addresses.get(end.host, frozenset())):
            for address in found:
                groups.join((end.login, end.host), (end.login, address))
    keys: dict[str, Hashable] = {s.label: ("local",) for s in specs if s.local}
    for label, end in ends.items():
        keys[label] = groups.find((end.login, end.host))
    return keys, ends
