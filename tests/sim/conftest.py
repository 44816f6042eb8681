"""Unit tests are pure: they must never start Ray (as Ray Serve's unit tests refuse it)."""

from typing import Any, NamedTuple

import pytest

from flashtx.actors.order_shard import OrderShard
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.config import Config
from flashtx.engine.messages import SkuBatch
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.sim.run import sim_config
from flashtx.sim.world import SimPeer, World


@pytest.fixture(autouse=True)
def _refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move the test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)


class TwoOrderShards(NamedTuple):
    """One stock shard and two order shards on the simulator's wiring."""

    config: Config
    order_table: RoutingTable
    stock: SimPeer

    def buyers_on(self, merchant_id: str, shard: int) -> list[str]:
        """Buyers whose orders and carts the order shard `shard` owns."""
        return [f"b{n}" for n in range(1000) if self.order_table.shard_of_slot[
            slot_of(merchant_id, f"b{n}", self.config.slots_total)] == shard]


async def two_order_shards(world: World, merchant_id: str, on_hand: dict[str, int],
                           **config_changes: Any) -> TwoOrderShards:
    """Stock shard "stock-0" with SKUs of `on_hand` units each (sku_id -> units), order
    shards "order-0" and "order-1"."""
    config = sim_config(stock_shards=1, order_shards=2, **config_changes)
    stock_table = RoutingTable.uniform(config.slots_total, 1)
    order_table = RoutingTable.uniform(config.slots_total, 2)
    names = ["order-0", "order-1"]
    world.add("stock-0", lambda: StockShard(0, config, stock_table.slots_of(0), names))
    for i in range(2):
        world.add(f"order-{i}", lambda i=i: OrderShard(i, config, stock_table, order_table))
    stock = SimPeer("stock-0")
    await stock.upsert(SkuBatch.of([(merchant_id, sku_id, sku_id.upper(), 100, units, 0)
                                    for sku_id, units in on_hand.items()]))
    return TwoOrderShards(config, order_table, stock)
