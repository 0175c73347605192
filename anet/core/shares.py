"""Several runs on one cluster: each gets a share of every host's slots, by its priority.

The slots are dealt like cards: host after host, slot after slot, each to the run furthest
below its due (its weight's part of the slots dealt so far, counting this one), the earliest
run on a tie. With equal weights that is a plain turn, carrying over from one host to the next:
every run's total is within one slot of every other's, and so is its share of each host. With
weights (`--priority`), each run's total stays within one slot of its part of all the slots
(weight 2 of 3: two thirds). A run that arrived when every slot was dealt gets none until one
ends (its jobs wait; none of the others' is stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def deal(
    slots: Mapping[str, int],
    runs: Sequence[K],
    weights: Mapping[K, int] | None = None,
    usable: Callable[[K, str], bool] | None = None,
) -> dict[K, dict[str, int]]:
    """Each run's share of each host: `slots` is every ready host's slots, in the order the
    hosts were given; `weights` each run's priority (1 when missing: an equal share); the
    earliest runs get the odd slots (they were there first). `usable(run, host)` false: the
    run cannot use that host yet (its deps are not there), and its slots go to the others."""
    shares: dict[K, dict[str, int]] = {run: dict.fromkeys(slots, 0) for run in runs}
    if not runs:
        return shares
    weight = [max(1, (weights or {}).get(run, 1)) for run in runs]
    whole = sum(weight)
    dealt = [0] * len(runs)
    given = 0
    for host, count in slots.items():
        able = [i for i, run in enumerate(runs) if usable is None or usable(run, host)]
        for _ in range(count if able else 0):
            given += 1
            # How far each run is below its due, times `whole` (integers: no rounding ties)
            behind = {i: weight[i] * given - dealt[i] * whole for i in able}
            chosen = max(able, key=behind.__getitem__)  # the first of the furthest behind
            dealt[chosen] += 1
            shares[runs[chosen]][host] += 1
    return shares
