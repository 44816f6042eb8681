"""The one place that turns keys into actor handles and makes Ray calls to shards.

Logic around it (batching, splitting, merging) is tested without Ray by handing it
objects with the same methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.sharding import RoutingTable, slot_of


class ShardGroup:
    """Shards of one kind (stock or order) and the table that routes slots to them."""

    def __init__(self, handles: Sequence[Any], table: RoutingTable, slots_total: int) -> None:
        self.handles = list(handles)
        self.table = table
        self.slots_total = slots_total

    def slot(self, merchant_id: str, key: str) -> int:
        return slot_of(merchant_id, key, self.slots_total)

    def shard_of(self, merchant_id: str, key: str) -> int:
        return self.table.shard_of_slot[slot_of(merchant_id, key, self.slots_total)]

    def shard_of_slot(self, slot: int) -> int:
        return self.table.shard_of_slot[slot]

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        return await getattr(self.handles[shard], method).remote(*args)

    def update(self, handles: Sequence[Any], table: RoutingTable) -> None:
        if table.version >= self.table.version:
            self.handles, self.table = list(handles), table
