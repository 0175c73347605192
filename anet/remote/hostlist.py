"""Host ranges and Slurm's hostlist syntax: `node[01-03,07],gpu[1-2]` to host names and back,
and the slots of `SLURM_JOB_CPUS_PER_NODE` (`36(x2),72`).

One expander serves `-S node[01-40]`, `hosts scan` and `-H slurm`: a name holds any number of
bracket groups (`rack[1-2]-node[01-02]`, the first group varying slowest, as Slurm lists them),
each a comma list of numbers and ranges; a number written with a leading zero keeps its width.
Folding (for `--onall`'s blocks) works on a name's last number only. ClusterShell's NodeSet
does both, on every dimension, but it is one more package on every master, and its import
alone (`from ClusterShell.NodeSet import NodeSet`, 1.10.1) took some 80 ms more than the
modules it shares with anet: more than this file's whole job. The tests compare the expansion
and the folding with Slurm's own `scontrol`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import UsageError

MAX_EXPANSION = 65536
"""The most host names one range or list may name: a typo like `n[1-99999999]` must not eat
the master's memory."""

_RANGE = re.compile(r"\[([0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*)\]")
"""A bracketed list of numbers and ranges; an IPv6 address in brackets never matches (no '-'
or ',' alone would make `[1]`, which is no address either)."""
_CPUS = re.compile(r"([0-9]+)(?:\(x([0-9]+)\))?")
_SEPARATORS = re.compile(r"[,\s]")


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


def split_hostlist(text: str) -> list[str]:
    """The names of a list, split at commas (and blanks) outside brackets: `n[1,3],m` -> `n[1,3]`
    and `m`. An unclosed or stray bracket is refused here, where the whole list can be named."""
    names, start, depth = [], 0, 0
    for at, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if depth not in (0, 1):
            raise UsageError(f"bad host list {text!r}: brackets do not pair up")
        if depth == 0 and _SEPARATORS.fullmatch(char):
            names.append(text[start:at])
            start = at + 1
    if depth:
        raise UsageError(f"bad host list {text!r}: brackets do not pair up")
    names.append(text[start:])
    return [name for name in names if name]


def expand_hostlist(text: str) -> list[str]:
    """Every host name a Slurm hostlist names, in its order: `node[01-03,07],gpu[1-2]` -> node01,
    node02, node03, node07, gpu1, gpu2. A bracket that holds anything but numbers and ranges is
    refused (Slurm's own lists never have one)."""
    hosts: list[str] = []
    for name in split_hostlist(text):
        expanded = expand_range(name)
        if any("[" in host or "]" in host for host in expanded):
            raise UsageError(f"bad host list {text!r}: {name!r} is no name[ranges]")
        hosts += expanded
        if len(hosts) > MAX_EXPANSION:
            raise UsageError(f"host list {text!r} names over {MAX_EXPANSION} hosts")
    return hosts


def expand_cpus_per_node(text: str) -> list[int]:
    """`SLURM_JOB_CPUS_PER_NODE`'s run-length form to one count per node: `36(x2),72` -> 36, 36,
    72 (the nodes in `SLURM_JOB_NODELIST`'s order)."""
    counts: list[int] = []
    for part in text.split(","):
        match = _CPUS.fullmatch(part.strip())
        if match is None:
            raise UsageError(f"bad CPU counts {text!r}: {part!r} is not N or N(xM)")
        repeat = int(match[2] or 1)
        if len(counts) + repeat > MAX_EXPANSION:
            raise UsageError(f"CPU counts {text!r} name over {MAX_EXPANSION} nodes")
        counts += [int(match[1])] * repeat
    return counts


_LAST_NUMBER = re.compile(r"(.*?)([0-9]+)([^0-9]*)")
_UNFOLDABLE = re.compile(r"[\[\],\s]")
"""A name with a bracket, comma or blank would read as a list once folded: it stays as is."""


def fold_hostlist(names: Iterable[str]) -> list[str]:
    """Names folded back into ranges on their last number, one item per kind of name, in the
    order each kind first appears: node01, node02, node03, node07, gpu1 -> `node[01-03,07]`,
    `gpu1`. `expand_hostlist(", ".join(...))` gives the names back (sorted within a kind, once
    each). A zero-padded number keeps its width; an unpadded one of that width joins it."""
    kinds: dict[tuple[str, str, int] | str, set[int]] = {}
    padded: dict[tuple[str, str], set[int]] = {}  # the widths of padded numbers, by kind
    parsed = []
    for name in dict.fromkeys(names):
        match = None if _UNFOLDABLE.search(name) else _LAST_NUMBER.fullmatch(name)
        parsed.append((name, match))
        if match and _is_padded(match[2]):
            padded.setdefault((match[1], match[3]), set()).add(len(match[2]))
    for name, match in parsed:
        if match is None:
            kinds.setdefault(name, set())
            continue
        prefix, digits, suffix = match.groups()
        fits = _is_padded(digits) or len(digits) in padded.get((prefix, suffix), ())
        kinds.setdefault((prefix, suffix, len(digits) if fits else 0), set()).add(int(digits))
    return [
        key if isinstance(key, str) else _fold_kind(*key, numbers) for key, numbers in kinds.items()
    ]


def _is_padded(digits: str) -> bool:
    return len(digits) > 1 and digits.startswith("0")


def _fold_kind(prefix: str, suffix: str, width: int, numbers: set[int]) -> str:
    ordered = sorted(numbers)
    if len(ordered) == 1:
        return f"{prefix}{str(ordered[0]).zfill(width)}{suffix}"
    runs: list[list[int]] = []
    for number in ordered:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    parts = [
        "-".join(str(n).zfill(width) for n in dict.fromkeys((run[0], run[-1]))) for run in runs
    ]
    return f"{prefix}[{','.join(parts)}]{suffix}"
