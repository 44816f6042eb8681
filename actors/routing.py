"""The one place that turns keys into actor handles and makes Ray calls to shards.

Logic around it (batching, splitting, merging) is tested without Ray by handing it
objects with the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray

from engine.sharding import RoutingTable, sku_slot, slot_of

NAMESPACE = "flashtx"


class ShardGroup:
    """Shards of one kind (stock or order) and the table that routes slots to them.
    `by_sku`: keys are SKUs (stock), whose slots are remembered (engine.sharding.sku_slot)."""

    def __init__(self, handles: Sequence[Any], table: RoutingTable, slots_total: int,
                 by_sku: bool = False) -> None:
        self.handles = list(handles)
        self.table = table
        self.slots_total = slots_total
        self.by_sku = by_sku

    def slot(self, merchant_id: str, key: str) -> int:
        return (sku_slot if self.by_sku else slot_of)(merchant_id, key, self.slots_total)

    def shard_of(self, merchant_id: str, key: str) -> int:
        return self.table.shard_of_slot[self.slot(merchant_id, key)]

    def shard_of_slot(self, slot: int) -> int:
        return self.table.shard_of_slot[slot]

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        return await getattr(self.handles[shard], method).remote(*args)

    def update(self, handles: Sequence[Any], table: RoutingTable) -> None:
        if table.version >= self.table.version:
            self.handles, self.table = list(handles), table


async def find_actors(names: Sequence[str], timeout_s: float = 60.0) -> list[Any]:
    """Handles of named actors, waiting for those not created yet (start-up order)."""
    found: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    for name in names:
        while True:
            try:
                found.append(ray.get_actor(name, namespace=NAMESPACE))
                break
            except ValueError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
    return found
