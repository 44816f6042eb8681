"""Routing: which shard owns a key, and the peers (actors.ports) to reach each shard.

Logic around it (batching, splitting, merging) is tested without Ray by handing it peers
of the in-process implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from flashtx.actors.ports import NAMESPACE as NAMESPACE  # where operators' tools look it up
from flashtx.actors.ports import handle_of
from flashtx.engine.sharding import RoutingTable, sku_slot, slot_of

P = TypeVar("P")


class ShardGroup(Generic[P]):
    """Shards of one kind (stock, order or merchant) and the table that routes slots to
    them. `by_sku`: keys are SKUs (stock), whose slots are remembered
    (engine.sharding.sku_slot)."""

    def __init__(self, peers: Sequence[P], table: RoutingTable, slots_total: int,
                 by_sku: bool = False) -> None:
        self.peers = list(peers)
        self.table = table
        self.slots_total = slots_total
        self.by_sku = by_sku

    def slot(self, merchant_id: str, key: str) -> int:
        return (sku_slot if self.by_sku else slot_of)(merchant_id, key, self.slots_total)

    def shard_of(self, merchant_id: str, key: str) -> int:
        return self.table.shard_of_slot[self.slot(merchant_id, key)]

    def shard_of_slot(self, slot: int) -> int:
        return self.table.shard_of_slot[slot]

    def peer(self, shard: int) -> P:
        return self.peers[shard]

    def of(self, merchant_id: str, key: str) -> P:
        """The peer of the shard that owns `key`."""
        return self.peers[self.table.shard_of_slot[self.slot(merchant_id, key)]]

    def __len__(self) -> int:
        return len(self.peers)

    @property
    def handles(self) -> list[Any]:
        """The Ray actors behind the peers (to kill them, or in tests)."""
        return [handle_of(peer) for peer in self.peers]

    def update(self, peers: Sequence[P], table: RoutingTable) -> None:
        if table.version >= self.table.version:
            self.peers, self.table = list(peers), table
