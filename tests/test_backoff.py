"""Backoff is pure: a seeded random source pins every delay."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from anet.core.backoff import Backoff


class Highest(random.Random):
    """Always draws the top of the range, to see the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_ceilings_double_from_one_second_and_stop_at_sixty():
    backoff = Backoff(rng=Highest())
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_reset_starts_over():
    backoff = Backoff(rng=Highest())
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1


@given(st.integers(0, 2**32), st.integers(1, 200))
def test_full_jitter_stays_within_zero_and_the_ceiling(seed, tries):
    backoff = Backoff(rng=random.Random(seed))
    for _ in range(tries):
        ceiling = backoff.ceiling()
        assert 0 <= backoff.next_delay() <= ceiling <= 60


def test_delays_are_spread_not_in_lockstep():
    """Ten hosts failing together must not all retry at the same instant."""
    draws = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(10)]
    assert len({round(d, 3) for d in draws}) == 10
    assert max(draws) - min(draws) > 0.3
