"""Expiry heaps whose memory follows live items, not operations.

A heap of (expires at, id) entries with lazy deletion (an entry whose item changed or
left stays until it surfaces) grows with every change: a cart updated in a loop, an
order placed and cancelled with a week-long payment window. ``ExpiryHeap`` rebuilds
itself from its live entries once stale ones outnumber them (past a floor): memory is
bounded by about twice the live items, and a rebuild costs O(n) once per n pushes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ExpiryHeap"]

K = TypeVar("K", bound=Hashable)

# Entries kept before a heap looks at its stale ones at all (small heaps never rebuild).
COMPACT_FLOOR = 1024


class ExpiryHeap(Generic[K]):
    def __init__(self, live: Callable[[int, K], bool], live_count: Callable[[], int],
                 floor: int = COMPACT_FLOOR) -> None:
        """`live(expires_at_ms, key)`: is this entry still the item's expiry;
        `live_count()`: how many items may have a live entry (an upper bound)."""
        self._entries: list[tuple[int, K]] = []
        self._live = live
        self._live_count = live_count
        self._floor = floor
        self.compactions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, expires_at_ms: int, key: K) -> None:
        heapq.heappush(self._entries, (expires_at_ms, key))
        if len(self._entries) > 2 * self._live_count() + self._floor:
            self.compact()

    def compact(self) -> None:
        """Keeps one entry per live item: the one that is its expiry now."""
        seen: set[K] = set()
        kept: list[tuple[int, K]] = []
        for expires_at_ms, key in self._entries:
            if key not in seen and self._live(expires_at_ms, key):
                seen.add(key)
                kept.append((expires_at_ms, key))
        heapq.heapify(kept)
        self._entries = kept
        self.compactions += 1

    def due(self, now_ms: int) -> bool:
        """Is the earliest entry's time at or before `now_ms`?"""
        return bool(self._entries) and self._entries[0][0] <= now_ms

    def pop(self) -> tuple[int, K]:
        return heapq.heappop(self._entries)
