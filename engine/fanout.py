"""Fan-out and fan-in by position: a call's items grouped by the shard each goes to, and
the shards' answers put back in the caller's order. Pure; the gateway's batch calls and
the catalogue writes use it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from flashtx.engine.errors import invariant

__all__ = ["by_shard", "merged"]

T = TypeVar("T")


def by_shard(shards: Iterable[int]) -> dict[int, list[int]]:
    """The positions of the items per shard (`shards`: each item's, in order): each list
    ascending, the shards in the order they first appear."""
    groups: dict[int, list[int]] = {}
    for position, shard in enumerate(shards):
        groups.setdefault(shard, []).append(position)
    return groups


def merged(count: int, answers: Iterable[tuple[Sequence[int], Sequence[T]]]) -> list[T]:
    """`count` answers in the caller's order, from (positions, answers) per group: one
    answer per position, every position answered exactly once."""
    results: list[T | None] = [None] * count
    answered = 0
    for positions, values in answers:
        for position, value in zip(positions, values, strict=True):
            invariant(results[position] is None, f"position {position} answered twice")
            results[position] = value
            answered += 1
    invariant(answered == count, f"{count - answered} of {count} positions not answered")
    return results  # type: ignore[return-value]
