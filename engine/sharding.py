"""Keys hash to a fixed number of slots; slots map to shard actors through a versioned
routing table, so shards can be added and slots moved without changing any key."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from flashtx.engine.errors import invariant

__all__ = ["RoutingTable", "sku_slot", "slot_of"]


def slot_of(merchant_id: str, key: str, slots_total: int) -> int:
    """Stable across processes and versions (crc32, not Python's salted hash)."""
    return zlib.crc32(f"{merchant_id}\x1f{key}".encode()) % slots_total


# The slot of a SKU, remembered: the hot path routes every order line by its SKU, and a
# sale's orders name few SKUs. Bounded (least recently used out).
sku_slot = lru_cache(maxsize=1 << 16)(slot_of)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    version: int
    shard_of_slot: tuple[int, ...]
    # False: a reshard to this table has not completed (actors.resharding); an order shard
    # that starts with it waits (stock-changing work answers UNAVAILABLE) until it has.
    settled: bool = True

    @classmethod
    def uniform(cls, slots_total: int, shards: int) -> RoutingTable:
        invariant(1 <= shards <= slots_total, "need 1..slots_total shards")
        return cls(1, tuple(slot % shards for slot in range(slots_total)))

    @property
    def shards(self) -> int:
        return max(self.shard_of_slot) + 1

    def shard_for(self, slot: int) -> int:
        return self.shard_of_slot[slot]

    def move(self, slots: Iterable[int], to_shard: int) -> RoutingTable:
        table = list(self.shard_of_slot)
        for slot in slots:
            table[slot] = to_shard
        return RoutingTable(self.version + 1, tuple(table))

    def slots_of(self, shard: int) -> list[int]:
        return [slot for slot, owner in enumerate(self.shard_of_slot) if owner == shard]
