"""Dealing hosts' slots among the runs sharing a cluster (anet/core/shares.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from anet.core.shares import deal


def test_one_run_gets_every_slot():
    assert deal({"a": 4, "b": 1}, ["r1"]) == {"r1": {"a": 4, "b": 1}}


def test_two_runs_split_each_host_and_the_odd_slots_alternate_across_hosts():
    assert deal({"a": 3, "b": 3}, ["r1", "r2"]) == {"r1": {"a": 2, "b": 1}, "r2": {"a": 1, "b": 2}}


def test_more_runs_than_slots_leaves_the_latest_without_until_one_ends():
    assert deal({"a": 1, "b": 1}, [1, 2, 3]) == {
        1: {"a": 1, "b": 0},
        2: {"a": 0, "b": 1},
        3: {"a": 0, "b": 0},
    }


def test_no_runs_no_shares():
    assert deal({"a": 4}, []) == {}


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 64), max_size=12),
    st.integers(1, 9),
)
def test_every_slot_is_dealt_once_and_runs_are_within_one_slot_of_each_other(slots, n):
    shares = deal(slots, list(range(n)))
    for host, count in slots.items():
        per_host = [shares[run][host] for run in range(n)]
        assert sum(per_host) == count  # every slot dealt, none twice
        assert max(per_host) - min(per_host) <= 1
    totals = [sum(shares[run].values()) for run in range(n)]
    assert max(totals) - min(totals) <= 1


def test_a_run_of_priority_2_gets_twice_the_slots_of_one_of_priority_1():
    shares = deal({"a": 4, "b": 2}, ["low", "high"], {"high": 2, "low": 1})
    assert sum(shares["high"].values()) == 4 and sum(shares["low"].values()) == 2


def test_equal_weights_deal_as_no_weights():
    slots = {"a": 3, "b": 5, "c": 1}
    assert deal(slots, [1, 2, 3], {1: 4, 2: 4, 3: 4}) == deal(slots, [1, 2, 3])


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 64), max_size=12),
    st.lists(st.integers(1, 10), min_size=1, max_size=6),
)
def test_each_run_gets_its_weights_part_of_the_slots_within_one(slots, weights):
    runs = list(range(len(weights)))
    shares = deal(slots, runs, dict(zip(runs, weights, strict=True)))
    total = sum(slots.values())
    for host, count in slots.items():
        assert sum(shares[run][host] for run in runs) == count  # every slot dealt, none twice
    for run, weight in zip(runs, weights, strict=True):
        due = total * weight / sum(weights)
        assert abs(sum(shares[run].values()) - due) < 1, (run, shares)


def test_a_run_that_cannot_use_a_host_yet_gets_none_of_it_and_the_others_get_it_all():
    """A pool's run whose deps are not on host a yet (deps/runtree.py): a's slots go to the
    run that can use it; no slot of a host no run can use is dealt."""
    shares = deal(
        {"a": 4, "b": 2, "c": 2},
        ["new", "old"],
        usable=lambda run, host: run == "old" or host == "b",
    )
    assert shares == {"new": {"a": 0, "b": 2, "c": 0}, "old": {"a": 4, "b": 0, "c": 2}}
    nobody = deal({"a": 3}, ["r1", "r2"], usable=lambda run, host: False)
    assert nobody == {"r1": {"a": 0}, "r2": {"a": 0}}
