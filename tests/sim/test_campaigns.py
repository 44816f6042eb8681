"""Campaign moves and the merchant shard on the simulator's wiring (real shard classes,
virtual time, a database that fails on purpose). Each test failed before its fix; the
random runs found both (seeds 139 and 110 of ``python -m flashtx.sim --steps 60``)."""

from __future__ import annotations

import asyncio
import dataclasses

from actors.merchant_shard import MerchantShard
from actors.stock_shard import StockShard
from engine.messages import Shares, SkuBatch, SkuKeys
from engine.sharding import RoutingTable
from flashtx.sim.run import sim_config
from flashtx.sim.world import Faults, Lost, SimPeer, World, run_in

MERCHANT = "campaign-shop"


async def _move_whose_answer_is_lost(world: World) -> tuple[int, int, int, int]:
    config = sim_config(stock_shards=1, order_shards=1)
    table = RoutingTable.uniform(config.slots_total, 1)
    world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), []))
    stock = SimPeer("stock-0")
    await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 5, 0)]))
    # The move commits; its answer is lost on the way back from the database.
    world.faults = dataclasses.replace(Faults.none(), store_ambiguous=1.0)
    try:
        moved = await stock.transfer_out(MERCHANT, "a", 3, Shares(["a~sale"], [3]),
                                         SkuBatch.of([(MERCHANT, "a~sale", "A", 50, 0, 0)]))
    except Exception:  # the old ordering: "failed", and the units put back
        moved = 0
    world.faults = Faults.none()
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return moved, level.on_hand, world.store.on_hand(MERCHANT, "a"), \
        world.store.on_hand(MERCHANT, "a~sale")


def test_a_move_whose_commit_answer_was_lost_is_not_counted_twice() -> None:
    world = World(3, Faults.none())
    moved, in_memory, durable, bucket = run_in(world, lambda: _move_whose_answer_is_lost(world))
    # The shard asks the database whether the move was written, and it was: 3 units left
    # the SKU. Before, it put them back in memory (5 on hand, 2 in Postgres): 3 phantom
    # units on sale.
    assert (moved, in_memory, durable, bucket) == (3, 2, 2, 3)


async def _restart_while_the_database_fails(world: World) -> str:
    config = sim_config(stock_shards=1, order_shards=1)
    world.add("merchant-0", lambda: MerchantShard(0, config, range(config.slots_total), []))
    merchant = SimPeer("merchant-0")
    await merchant.create(MERCHANT, "Shop", 0)
    world.faults = dataclasses.replace(Faults.none(), store_fail=1.0, restart_ms=(10, 10))
    world.crash("merchant-0")
    await asyncio.sleep(1)  # it restarts, and every read it makes fails for a while
    world.faults = Faults.none()
    for _ in range(100):
        try:
            view = await merchant.get(MERCHANT)
            return str(view.merchant["name"])
        except Lost:
            await asyncio.sleep(0.1)
        except Exception as error:  # before: its start had failed for good
            return type(error).__name__
    return "no answer"


def test_a_merchant_shard_started_while_the_database_fails_serves_once_it_is_back() -> None:
    world = World(5, Faults.none())
    assert run_in(world, lambda: _restart_while_the_database_fails(world)) == "Shop"
