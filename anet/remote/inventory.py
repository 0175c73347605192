"""Ansible inventories as host lists: `-H inventory.ini`, `-H inventory.yml:GROUP`.

A fleet's machines are often listed once, in the inventory its Ansible playbooks use; anet
reads the same file rather than asking for a copy. Read: groups (`all` and `ungrouped`
included), children groups at any depth, group and host variables, and of those the ones that
say how to reach a host: `ansible_host`, `ansible_user`, `ansible_port` (and their older
`ansible_ssh_*` names), `ansible_connection=local`, plus anet's own `anet_slots`. Host ranges
are Ansible's own: `web[01:03]`, `db-[a:c]`, `n[0:10:5]`.

YAML is read with PyYAML, imported only when a YAML inventory is read (start-up never pays it);
Ansible's INI form is simple enough to read here. The result is plain data: hosts.py makes the
host specs.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .hostlist import MAX_EXPANSION

YAML_SUFFIXES = (".yml", ".yaml")
INI_SUFFIX = ".ini"
SUFFIXES = (*YAML_SUFFIXES, INI_SUFFIX)
_HEADER = re.compile(r"\[([A-Za-z_][\w.-]*)(?::(children|vars))?\]")
"""An INI section: `[web]`, `[web:children]`, `[web:vars]`. No IPv6 address matches (it has at
least two colons), so a hosts file whose first line is `[::1]` stays a hosts file."""
_ANSIBLE_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_NAME_PORT = re.compile(r"(?P<name>(?:[^:\[\]]|\[[^\]]*\])+):(?P<port>[0-9]+)")
"""`name:port`, the name maybe a range; a bare IPv6 address (colons outside brackets) is none."""
_USER = ("ansible_user", "ansible_ssh_user")
_HOST = ("ansible_host", "ansible_ssh_host")
_PORT = ("ansible_port", "ansible_ssh_port")


@dataclass(frozen=True, slots=True)
class InventoryHost:
    """One host as the inventory says to reach it; `local` for `ansible_connection=local`."""

    address: str
    user: str | None = None
    port: int | None = None
    slots: int | None = None
    local: bool = False


@dataclass(slots=True)
class Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Inventory:
    """Groups by name; `hosts` keeps every host once, in the order the file first names it."""

    origin: str
    groups: dict[str, Group] = field(default_factory=dict)
    hosts: dict[str, None] = field(default_factory=dict)

    def group(self, name: str) -> Group:
        return self.groups.setdefault(name, Group())

    def add_host(self, group: str, pattern: str, variables: Mapping[str, Any]) -> None:
        """`pattern` may be a range and carry a port (`web[1:3]:2222`), as Ansible allows."""
        match = _NAME_PORT.fullmatch(pattern)
        name, port = (match["name"], match["port"]) if match else (pattern, None)
        for host in expand_ansible_range(name, self.origin):
            self.hosts.setdefault(host)
            here = self.group(group).hosts.setdefault(host, {})
            here.update(variables)
            if port is not None:
                here.setdefault("ansible_port", port)


def is_inventory(path: str, text: str) -> bool:
    """By extension (.yml, .yaml, .ini), else by content: any line that is an INI section
    header (`[web]`, `[web:children]`). No hosts file has one: the only bracketed spec is an
    IPv6 address, which has two colons at least."""
    if path.lower().endswith(SUFFIXES):
        return True
    return any(_HEADER.fullmatch(line.strip()) for line in text.splitlines())


def read_inventory(path: str, text: str, group: str | None) -> list[InventoryHost]:
    """The hosts of `group` (and of its children, at any depth), or of the whole inventory."""
    if path.lower().endswith(YAML_SUFFIXES):
        inventory = parse_yaml(text, path)
    else:
        inventory = parse_ini(text, path)
    return select(inventory, group or "all")


# -- the two file forms ------------------------------------------------------------------------


def parse_ini(text: str, origin: str) -> Inventory:
    """Ansible's INI form: hosts before any section are `ungrouped`."""
    inventory = Inventory(origin)
    section, kind = "ungrouped", None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = _HEADER.fullmatch(line)
        where = f"{origin}:{number}"
        if header:
            section, kind = header[1], header[2]
            inventory.group(section)
        elif line.startswith("["):
            raise UsageError(f"{where}: bad section header {line!r}")
        elif kind == "children":
            inventory.group(section).children.append(line.split()[0])
        elif kind == "vars":
            inventory.group(section).vars.update([_group_var(line, where)])
        else:
            words = _split(line, where)
            inventory.add_host(section, words[0], _assignments(words[1:], where))
    return inventory


def parse_yaml(text: str, origin: str) -> Inventory:
    """Ansible's YAML form: a mapping of groups, each with `hosts`, `children` and `vars`."""
    import yaml  # only here: PyYAML takes longer to import than anet takes to start

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise UsageError(f"{origin}{line}: not a YAML inventory: {problem}") from None
    inventory = Inventory(origin)
    for name, body in _mapping(tree or {}, f"{origin}: the top level").items():
        _yaml_group(inventory, str(name), body)
    return inventory


def _yaml_group(inventory: Inventory, name: str, body: Any) -> None:
    where = f"{inventory.origin}: group {name!r}"
    group = inventory.group(name)
    body = _mapping(body or {}, where)
    group.vars.update(_mapping(body.get("vars") or {}, f"{where} vars"))
    for host, variables in _mapping(body.get("hosts") or {}, f"{where} hosts").items():
        inventory.add_host(name, str(host), _mapping(variables or {}, f"{where} host {host!r}"))
    for child, child_body in _mapping(body.get("children") or {}, f"{where} children").items():
        group.children.append(str(child))
        _yaml_group(inventory, str(child), child_body)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


def _split(line: str, where: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _group_var(line: str, where: str) -> tuple[str, str]:
    """A `[g:vars]` line: `key = value`, blanks around `=` allowed, the value maybe quoted."""
    key, sep, value = (part.strip() for part in line.partition("="))
    if not sep or not key:
        raise UsageError(f"{where}: expected key=value, found {line!r}")
    if value.startswith(("'", '"')):
        value = " ".join(_split(value, where))
    return key, value


def _assignments(words: Iterable[str], where: str) -> dict[str, str]:
    variables = {}
    for word in (w for each in words for w in _split(each, where)):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{where}: expected key=value, found {word!r}")
        variables[key.strip()] = value.strip()
    return variables


# -- ranges ------------------------------------------------------------------------------------


def expand_ansible_range(pattern: str, origin: str) -> list[str]:
    """`web[01:03]` -> web01..web03 (a leading zero keeps the width), `db-[a:c]` -> db-a..db-c,
    `n[0:10:5]` -> n0, n5, n10; several ranges multiply."""
    match = _ANSIBLE_RANGE.search(pattern)
    if match is None:
        return [pattern]
    first, last, stride = match[1], match[2], int(match[3] or 1)
    values = _range_values(first, last, stride, f"{origin}: bad host range {pattern!r}")
    head, tails = pattern[: match.start()], expand_ansible_range(pattern[match.end() :], origin)
    if len(values) * len(tails) > MAX_EXPANSION:
        raise UsageError(f"{origin}: host range {pattern!r} names over {MAX_EXPANSION} hosts")
    return [f"{head}{value}{tail}" for value in values for tail in tails]


def _range_values(first: str, last: str, stride: int, bad: str) -> list[str]:
    if stride < 1:
        raise UsageError(f"{bad}: the step must be at least 1")
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") else 0
        if int(last) < int(first):
            raise UsageError(f"{bad}: it counts backwards")
        if (int(last) - int(first)) // stride >= MAX_EXPANSION:
            raise UsageError(f"{bad}: over {MAX_EXPANSION} hosts")
        return [str(n).zfill(width) for n in range(int(first), int(last) + 1, stride)]
    letters = string.ascii_letters
    if len(first) == len(last) == 1 and first in letters and last in letters:
        if letters.index(last) < letters.index(first):
            raise UsageError(f"{bad}: it counts backwards")
        return list(letters[letters.index(first) : letters.index(last) + 1 : stride])
    raise UsageError(f"{bad}: expected [N:M] or [a:z]")


# -- choosing hosts ----------------------------------------------------------------------------


def select(inventory: Inventory, group: str) -> list[InventoryHost]:
    """The hosts of `group` and its descendants, in the file's order, each with the variables
    that apply to it: `all`'s, then its groups' from the shallowest to the deepest (a child's
    vars beat its parent's), then its own, as Ansible ranks them."""
    if group not in {*inventory.groups, "all", "ungrouped"}:
        names = ", ".join(sorted({*inventory.groups, "all", "ungrouped"}))
        raise UsageError(f"{inventory.origin} has no group {group!r} (its groups: {names})")
    members = _members(inventory, group)
    depths = _depths(inventory)
    chosen = []
    for host in inventory.hosts:
        owners = [name for name, each in inventory.groups.items() if host in each.hosts]
        if group == "ungrouped":  # Ansible's: the hosts of no group but `all`
            if not set(owners) <= {"all", "ungrouped"}:
                continue
        elif group != "all" and host not in members:
            continue
        variables = dict(inventory.groups.get("all", Group()).vars)
        ancestors = _ancestors(inventory, owners)
        for name in sorted(ancestors - {"all"}, key=lambda name: (depths.get(name, 1), name)):
            variables.update(inventory.groups[name].vars)
        for name in owners:
            variables.update(inventory.groups[name].hosts[host])
        chosen.append(_host(host, variables, inventory.origin))
    return chosen


def _members(inventory: Inventory, group: str) -> set[str]:
    """Every host of `group` and of its children, however deep (a cycle is walked once)."""
    seen: set[str] = set()
    pending, hosts = [group], set()
    while pending:
        name = pending.pop()
        if name in seen or name not in inventory.groups:
            continue
        seen.add(name)
        hosts.update(inventory.groups[name].hosts)
        pending += inventory.groups[name].children
    return hosts


def _ancestors(inventory: Inventory, groups: list[str]) -> set[str]:
    parents: dict[str, list[str]] = {}
    for name, group in inventory.groups.items():
        for child in group.children:
            parents.setdefault(child, []).append(name)
    found: set[str] = set()
    pending = list(groups)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += parents.get(name, [])
    return found


def _depths(inventory: Inventory) -> dict[str, int]:
    """Each group's depth below `all`: a group nobody lists as a child is at 1."""
    depths: dict[str, int] = {}
    children = {child for group in inventory.groups.values() for child in group.children}
    level = [name for name in inventory.groups if name not in children and name != "all"]
    level += inventory.groups["all"].children if "all" in inventory.groups else []
    depth = 1
    while level and depth <= len(inventory.groups):
        for name in level:
            depths[name] = max(depths.get(name, 0), depth)
        level = [c for name in level for c in inventory.groups.get(name, Group()).children]
        depth += 1
    return depths


def _host(name: str, variables: Mapping[str, Any], origin: str) -> InventoryHost:
    def first(keys: tuple[str, ...]) -> str | None:
        found = next((variables[key] for key in keys if variables.get(key) is not None), None)
        return None if found is None else str(found)

    if str(variables.get("ansible_connection", "")) == "local":
        return InventoryHost(name, slots=_number(variables, "anet_slots", name, origin), local=True)
    return InventoryHost(
        first(_HOST) or name,
        first(_USER),
        _number({"ansible_port": first(_PORT)}, "ansible_port", name, origin),
        _number(variables, "anet_slots", name, origin),
    )


def _number(variables: Mapping[str, Any], key: str, host: str, origin: str) -> int | None:
    value = variables.get(key)
    if value is None:
        return None
    text = str(value).strip()
    limit = 65535 if key == "ansible_port" else None
    if not text.isdigit() or int(text) < 1 or (limit is not None and int(text) > limit):
        raise UsageError(f"{origin}: host {host!r}: bad {key} {value!r}")
    return int(text)
