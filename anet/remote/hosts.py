"""Which machines to use: host specs, hosts files, and the fallback to the local machine.

A spec is GNU parallel's sshlogin form `[N/][user@]host[:port]`, so a `--sshloginfile` carries
over unchanged: `N/` sets the job slots (default: the cores the dispatcher reports), `:` alone is
the local machine. `node[01-40]` (and `rack[1-2]-n[1,3,5-7]`) names many hosts at once, as
clush and pdsh spell it; zero padding is kept. Besides hosts files, `-H` reads the hosts
where they already live: a Slurm or PBS allocation (`-H slurm`, `-H pbs`) or an Ansible
inventory (`-H inventory.yml[:GROUP]`). Everything an ssh client would read from
`~/.ssh/config` (HostName, User, Port, IdentityFile, ProxyJump, ...) is resolved later, at
connect time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..logs import get_logger
from ..printable import printable
from .allocations import SOURCES, allocation_hint, allocation_hosts
from .hostlist import expand_range

if TYPE_CHECKING:
    from .inventory import InventoryHost

log = get_logger()

LOCAL = ":"
LOCAL_LABEL = "local"

_DIGITS = re.compile(r"[0-9]+")
_UNDECODED = re.compile("[\udc80-\udcff]")
"""Bytes that were not UTF-8, as `surrogateescape` keeps them."""
_SPEC = re.compile(
    r"""^(?:(?P<slots>\d+)/)?              # N/
        (?:(?P<user>[^@\s/]+)@)?           # user@
        (?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s/\[\]]+)  # host, or [ipv6]
        (?::(?P<port>\d+))?$               # :port
    """,
    re.VERBOSE | re.ASCII,
)


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One end machine as the user named it; `label` names it in output and logs."""

    host: str
    user: str | None = None
    port: int | None = None
    slots: int | None = None

    @property
    def local(self) -> bool:
        return self.host == LOCAL

    @property
    def label(self) -> str:
        if self.local:
            return LOCAL_LABEL
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"

    @property
    def text(self) -> str:
        """The spec written back, `N/` included: it parses to this spec again."""
        name = LOCAL if self.local else self.label
        return f"{self.slots}/{name}" if self.slots else name

    def with_slots(self, slots: int | None) -> HostSpec:
        return HostSpec(self.host, self.user, self.port, slots)


def parse_spec(text: str) -> HostSpec:
    """Parse one sshlogin; a malformed one is the user's mistake, named in the error."""
    text = text.strip()
    if _UNDECODED.search(text):  # from a hosts file or argv: no host name has such bytes
        raise UsageError(f"bad host spec '{printable(text)}': not UTF-8")
    slots_text, sep, rest = text.partition("/")
    if (sep and _DIGITS.fullmatch(slots_text) and rest == LOCAL) or text == LOCAL:
        slots = int(slots_text) if sep else None
        return HostSpec(LOCAL, slots=_check_slots(slots, text))
    match = _SPEC.match(text)
    if match is None:
        raise UsageError(f"bad host spec {text!r}: expected [N/][user@]host[:port] or ':'")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"bad host spec {text!r}: port {port} is out of range")
    slots = int(match["slots"]) if match["slots"] else None
    host = match["host"].strip("[]")
    return HostSpec(host, match["user"], port, _check_slots(slots, text))


def parse_specs(text: str) -> list[HostSpec]:
    """One spec, or as many as its host range names."""
    return [parse_spec(each) for each in expand_range(text.strip())]


def _check_slots(slots: int | None, text: str) -> int | None:
    if slots is not None and slots < 1:
        raise UsageError(f"bad host spec {text!r}: job slots must be at least 1")
    return slots


def parse_hosts_text(text: str, origin: str) -> list[HostSpec]:
    """A hosts file: one spec a line; blank lines and `#` comments are skipped.

    `text` may hold undecodable bytes as surrogates (`read_hosts_file`): a comment in Latin-1
    is fine, a host name that is not UTF-8 is refused by `parse_spec`, named with its line.
    """
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            specs += parse_specs(line)
        except UsageError as exc:
            raise UsageError(f"{origin}:{number}: {exc}") from None
    return specs


def read_hosts_file(path: str | os.PathLike[str], group: str | None = None) -> list[HostSpec]:
    """A hosts file, or an Ansible inventory (`inventory.is_inventory`), of which `group`."""
    from . import inventory  # imported here: only -H pays for building its classes

    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read hosts file {os.fspath(path)!r}: {exc.strerror}") from None
    name = os.fspath(path)
    if inventory.is_inventory(name, text):
        return [_inventory_spec(host) for host in inventory.read_inventory(name, text, group)]
    if group is not None:
        raise UsageError(f"{name} is a hosts file, not an Ansible inventory: no group {group!r}")
    return parse_hosts_text(text, name)


def read_source(source: str | os.PathLike[str], environ: Mapping[str, str]) -> list[HostSpec]:
    """What one -H names: `slurm` or `pbs` (the allocation anet runs in), `FILE:GROUP` (a
    group of an Ansible inventory), or a file. Only the bare words are sources: `./slurm`, or a
    path object, is the file; a `FILE:GROUP` that exists as a file is that file."""
    if isinstance(source, str) and source in SOURCES:
        found = allocation_hosts(source, environ)
        return [parse_spec(host).with_slots(slots) for host, slots in found]
    if isinstance(source, str):
        return read_hosts_file(*_file_and_group(source))
    return read_hosts_file(source)


def _file_and_group(source: str) -> tuple[str, str | None]:
    """`FILE:GROUP` when FILE exists (or is named as an inventory) and the whole does not."""
    path, sep, group = source.rpartition(":")
    if not sep or not group or os.path.exists(source):
        return source, None
    from .inventory import SUFFIXES

    if os.path.exists(path) or path.lower().endswith(SUFFIXES):
        return path, group
    return source, None


def _inventory_spec(host: InventoryHost) -> HostSpec:
    """The spec of an inventory's host; its address checked as a -S host would be."""
    if host.local:
        return HostSpec(LOCAL, slots=host.slots)
    name = parse_spec(f"[{host.address}]" if ":" in host.address else host.address).host
    return HostSpec(name, host.user, host.port, host.slots)


def resolve_hosts(
    specs: Iterable[str] = (),
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    slots: int | None = None,
    environ: Mapping[str, str] | None = None,
    ssh_config: Sequence[str] | None = None,
    say: Callable[[str], object] = log.warning,
) -> list[HostSpec]:
    """-S specs and -H sources (`read_source`), else $ANET_HOSTS (a hosts file), else the local
    machine (with a hint when that is inside a batch system's allocation). `say` takes the
    notes of merged specs and the hint (the early connections, which resolve the hosts before
    the run does, pass one that drops them: the run says them).

    `slots` (the CLI's -j) overrides every host's own N/. Specs that name one end machine are
    merged (`merge_hosts`): one connection per end machine, whatever the user listed.
    """
    listed = listed_hosts(specs, files, slots=slots, environ=environ, say=say)
    return merge_hosts(listed, ssh_config, say)


def listed_hosts(
    specs: Iterable[str] = (),
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    slots: int | None = None,
    environ: Mapping[str, str] | None = None,
    say: Callable[[str], object] = log.warning,
) -> list[HostSpec]:
    """`resolve_hosts`' hosts as listed, before they are merged: no ssh config read, no
    asyncssh (the early connections start their TCP connections from these)."""
    environ = os.environ if environ is None else environ
    hosts = [host for spec in specs for host in parse_specs(spec)]
    files = list(files)
    if not files and not hosts and environ.get("ANET_HOSTS"):
        files = [environ["ANET_HOSTS"]]
    for path in files:
        hosts += read_source(path, environ)
    if files and not hosts:
        raise UsageError(f"no hosts listed in {', '.join(map(os.fspath, files))}")
    if not hosts:
        if hint := allocation_hint(environ):
            say(hint)
        hosts = [HostSpec(LOCAL)]
    if slots is not None:
        _check_slots(slots, f"-j {slots}")
        hosts = [host.with_slots(slots) for host in hosts]
    return hosts


def merge_hosts(
    hosts: Sequence[HostSpec],
    ssh_config: Sequence[str] | None = None,
    say: Callable[[str], object] = log.warning,
) -> list[HostSpec]:
    """One spec per end machine (`merge_specs`). Without `ssh_config` (the config files'
    paths, maybe none) that means the same user, host and port as written; with it, as the
    ssh config and name resolution say (`anet.identity`)."""
    if ssh_config is None:
        return _merged(hosts, say, lambda spec: spec.label)
    from .identity import machine_keys  # it reads ssh configs: asyncssh, loaded when needed

    keys, ends = machine_keys(hosts, ssh_config)
    return _merged(hosts, say, lambda spec: keys[spec.label], lambda spec: ends.get(spec.label))


def _merged(
    hosts: Sequence[HostSpec],
    say: Callable[[str], object],
    key: Callable[[HostSpec], Hashable],
    where: Callable[[HostSpec], object] | None = None,
) -> list[HostSpec]:
    merged, notes = merge_specs(hosts, key, where)
    for note in notes:
        say(note)
    return merged


def merge_specs(
    specs: Sequence[HostSpec],
    key: Callable[[HostSpec], Hashable],
    where: Callable[[HostSpec], object] | None = None,
) -> tuple[list[HostSpec], list[str]]:
    """One spec per `key` (one end machine), in first-listed order, and a line for each merge
    that dropped a name or a slot count (`where(spec)`, if not None, says where they all go).

    The first spec's name is kept, with the largest `N/` any of them gave; an `N/` beats none,
    as the only number the user wrote for that machine.
    """
    groups: dict[Hashable, list[HostSpec]] = {}
    for spec in specs:
        groups.setdefault(key(spec), []).append(spec)
    merged, notes = [], []
    for group in groups.values():
        counts = [spec.slots for spec in group if spec.slots is not None]
        kept = group[0].with_slots(max(counts) if counts else None)
        merged.append(kept)
        if len(set(group)) > 1:  # more than repeats of one spec
            names = list(dict.fromkeys(spec.text for spec in group))
            place = where(group[0]) if where is not None else None
            machine = f"one machine ({place})" if place else "one machine"
            notes.append(f"{_and(names)} name {machine}: used once, as {kept.text}")
    return merged, notes


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
