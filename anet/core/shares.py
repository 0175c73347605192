"""Several runs on one cluster: each gets an equal share of every host's slots.

The slots are dealt like cards: host after host, slot after slot, to the runs in turn, the turn
carrying over from one host to the next. So every run's total is within one slot of every
other's, and so is its share of each host; a run that arrived when every slot was dealt gets
none until one ends (its jobs wait; none of the others' is stopped).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def deal(slots: Mapping[str, int], runs: Sequence[K]) -> dict[K, dict[str, int]]:
    """Each run's share of each host: `slots` is every ready host's slots, in the order the
    hosts were given; the earliest runs get the odd slots (they were there first)."""
    shares: dict[K, dict[str, int]] = {run: dict.fromkeys(slots, 0) for run in runs}
    if not runs:
        return shares
    turn = 0
    for host, count in slots.items():
        whole, odd = divmod(count, len(runs))
        for run in runs:
            shares[run][host] = whole
        for _ in range(odd):
            shares[runs[turn]][host] += 1
            turn = (turn + 1) % len(runs)
    return shares
