"""Which machines to use: host specs, hosts files, and the fallback to the local machine.

A spec is GNU parallel's sshlogin form `[N/][user@]host[:port]`, so a `--sshloginfile` carries
over unchanged: `N/` sets the job slots (default: the cores the dispatcher reports), `:` alone is
the local machine. `node[01-40]` (and `rack[1-2]-n[1,3,5-7]`) names many hosts at once, as
clush and pdsh spell it; zero padding is kept. Everything an ssh client would read from
`~/.ssh/config` (HostName, User, Port, IdentityFile, ProxyJump, ...) is resolved later, at
connect time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

LOCAL = ":"
LOCAL_LABEL = "local"

_DIGITS = re.compile(r"[0-9]+")
_RANGE = re.compile(r"\[([0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*)\]")
"""A bracketed list of numbers and ranges; an IPv6 address in brackets never matches (no '-'
or ',' alone would make `[1]`, which is no address either)."""
MAX_EXPANSION = 65536
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

    def with_slots(self, slots: int | None) -> HostSpec:
        return HostSpec(self.host, self.user, self.port, slots)


def parse_spec(text: str) -> HostSpec:
    """Parse one sshlogin; a malformed one is the user's mistake, named in the error."""
    text = text.strip()
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


def expand_range(text: str) -> list[str]:
    """`node[01-03]` -> node01, node02, node03; several brackets multiply; no bracket: [text]."""
    match = _RANGE.search(text)
    if match is None:
        return [text]
    numbers: list[str] = []
    for part in match[1].split(","):
        first, _, last = part.partition("-")
        last = last or first
        width = len(first) if first.startswith("0") else 0
        if int(last) < int(first):
            raise UsageError(f"bad host range {text!r}: {part} counts backwards")
        if len(numbers) + int(last) - int(first) >= MAX_EXPANSION:
            raise UsageError(f"host range {text!r} names over {MAX_EXPANSION} hosts")
        numbers += [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    head, tail = text[: match.start()], expand_range(text[match.end() :])
    if len(numbers) * len(tail) > MAX_EXPANSION:
        raise UsageError(f"host range {text!r} names over {MAX_EXPANSION} hosts")
    return [f"{head}{number}{rest}" for number in numbers for rest in tail]


def parse_specs(text: str) -> list[HostSpec]:
    """One spec, or as many as its host range names."""
    return [parse_spec(each) for each in expand_range(text.strip())]


def _check_slots(slots: int | None, text: str) -> int | None:
    if slots is not None and slots < 1:
        raise UsageError(f"bad host spec {text!r}: job slots must be at least 1")
    return slots


def parse_hosts_text(text: str, origin: str) -> list[HostSpec]:
    """A hosts file: one spec a line; blank lines and `#` comments are skipped."""
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


def read_hosts_file(path: str | os.PathLike[str]) -> list[HostSpec]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read hosts file {os.fspath(path)!r}: {exc.strerror}") from None
    return parse_hosts_text(text, os.fspath(path))


def resolve_hosts(
    specs: Iterable[str] = (),
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    slots: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[HostSpec]:
    """-S specs and -H files, else $ANET_HOSTS (a hosts file), else the local machine.

    `slots` (the CLI's -j) overrides every host's own N/. Repeated hosts are merged: one
    connection per end machine, whatever the user listed.
    """
    environ = os.environ if environ is None else environ
    hosts = [host for spec in specs for host in parse_specs(spec)]
    files = list(files)
    if not files and not hosts and environ.get("ANET_HOSTS"):
        files = [environ["ANET_HOSTS"]]
    for path in files:
        hosts += read_hosts_file(path)
    if files and not hosts:
        raise UsageError(f"no hosts listed in {', '.join(map(os.fspath, files))}")
    if not hosts:
        hosts = [HostSpec(LOCAL)]
    if slots is not None:
        _check_slots(slots, f"-j {slots}")
        hosts = [host.with_slots(slots) for host in hosts]
    unique: dict[str, HostSpec] = {}
    for host in hosts:
        unique.setdefault(host.label, host)
    return list(unique.values())
