"""Grouping a call's items by shard and merging the shards' answers back (engine.fanout),
and the bounded per-name rate limits (engine.ratelimit.RateLimits)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashtx.engine.errors import InvariantViolation
from flashtx.engine.fanout import by_shard, merged
from flashtx.engine.ratelimit import RateLimits


@given(st.lists(st.integers(0, 7), max_size=200))
def test_grouped_answers_come_back_in_the_callers_order(shards: list[int]) -> None:
    groups = by_shard(shards)
    assert sorted(p for positions in groups.values() for p in positions) == list(
        range(len(shards)))
    assert all(shards[p] == shard for shard, positions in groups.items() for p in positions)
    assert all(positions == sorted(positions) for positions in groups.values())
    # Each shard answers its items in the order it got them; the merge restores the call's.
    answers = [(positions, [f"{shard}:{p}" for p in positions])
               for shard, positions in groups.items()]
    assert merged(len(shards), answers) == [f"{shard}:{p}" for p, shard in enumerate(shards)]


def test_a_position_answered_twice_or_never_is_a_bug_not_an_answer() -> None:
    with pytest.raises(InvariantViolation):
        merged(2, [([0], ["a"]), ([0], ["b"])])
    with pytest.raises(InvariantViolation):
        merged(3, [([0, 2], ["a", "c"])])
    with pytest.raises(ValueError):  # a shard that answered fewer items than it got
        merged(2, [([0, 1], ["a"])])


def test_rate_limits_are_per_name_and_bounded() -> None:
    limits = RateLimits(rate_per_s=10, burst=2, names_max=3)
    assert limits.take("k1", 2, now_ms=0) == 0
    assert limits.take("k1", 1, now_ms=0) == 101  # 1 token at 10/s: 100 ms, rounded up
    assert limits.take("k2", 2, now_ms=0) == 0  # another name: its own bucket
    assert limits.take("k1", 1, now_ms=101) == 0  # refilled
    for name in ("k3", "k4", "k5"):
        limits.take(name, 1, now_ms=100)
    assert len(limits) == 3  # the oldest names forgotten
    assert limits.take("k1", 2, now_ms=100) == 0  # forgotten: starts full again
