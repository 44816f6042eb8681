"""Campaign moves and the merchant shard on the simulator's wiring (real shard classes,
virtual time, a database that fails on purpose). Each test failed before its fix; the
random runs found each (docs/simulator.md: seeds 139 and 110 of the first runs with
campaigns, then 17473 and 4768 of the long run)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools

from flashtx.actors.merchant_shard import MerchantShard
from flashtx.actors.order_shard import OrderShard
from flashtx.actors.resharding import spread
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.errors import DomainError, ResultCode
from flashtx.engine.messages import (
    CampaignSkus,
    Expected,
    HoldBatch,
    PlaceBatch,
    Shares,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.orders import OrderStatus
from flashtx.engine.sharding import RoutingTable, slot_of
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


async def _campaign_while_resharding(world: World) -> tuple[str, int, int]:
    """Units of SKU "a" are held by an order; a reshard adds a third stock shard and is
    paused before its rebuild (the new shard counts "a"'s on-hand but none of its
    holds); a campaign over "a" is created meanwhile."""
    config = sim_config(stock_shards=2, order_shards=1)
    table = RoutingTable.uniform(config.slots_total, 2)
    order_table = RoutingTable.uniform(config.slots_total, 1)
    stock = [world.add(f"stock-{i}", functools.partial(
        StockShard, i, config, table.slots_of(i), ["order-0"])) for i in range(2)]
    order = world.add("order-0", functools.partial(OrderShard, 0, config, table,
                                                   order_table))
    merchant = world.add("merchant-0", functools.partial(
        MerchantShard, 0, config, range(config.slots_total), ["order-0"]))
    await merchant.create(MERCHANT, "Shop", 0)
    new_table = spread(table, 3)
    sku = next(f"a{n}" for n in range(1000)  # a SKU that moves to the new shard
               if new_table.shard_of_slot[slot_of(MERCHANT, f"a{n}", 64)] == 2)
    owner = stock[table.shard_of_slot[slot_of(MERCHANT, sku, 64)]]
    await owner.upsert(SkuBatch.of([(MERCHANT, sku, "A", 100, 4, 0)]))
    slot = slot_of(MERCHANT, "b1", 64)
    [(code, _)] = await order.place(PlaceBatch.of([(MERCHANT, "k1", "b1", ((sku, 3),), 900,
                                                    slot, 0, "key", "", "USD")]))
    assert code is ResultCode.OK
    added = world.add("stock-2", functools.partial(StockShard, 2, config,
                                                   new_table.slots_of(2), ["order-0"]))
    # The reshard's first steps: the unsettled table saved, the order shard routes by it.
    await order.save_stock_routing(new_table)
    await order.reroute_stock([*stock, added], new_table)
    outcome = "created"
    try:
        await merchant.create_campaign(MERCHANT, "sale", "Sale", 1_800_000_000_000,
                                       1_800_000_600_000, 1, CampaignSkus.of([(sku, 50, 0, 0)]))
    except DomainError as error:
        outcome = error.code.name
    store = world.store
    held = sum(q for order_id, lines in store.lines.items() for _, s, q, _, _ in lines
               if s == sku and store.status(order_id) == OrderStatus.RESERVED)
    return outcome, held, store.on_hand(MERCHANT, sku)


def test_no_units_move_while_the_stock_shards_are_resharded() -> None:
    world = World(11, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    outcome, held, on_hand = run_in(world, lambda: _campaign_while_resharding(world))
    # Before: the campaign was created mid-reshard, reading levels from and moving units
    # on shards that had not taken the holds over yet (in the random runs this oversold:
    # seeds 17473, 8921, 12002, 13259, 18701). Now no unit moves until the table settles.
    assert (outcome, held, on_hand) == ("UNAVAILABLE", 3, 4)


async def _deposit_after_an_unknown_upsert(world: World) -> tuple[bool, int, int]:
    config = sim_config(stock_shards=1, order_shards=1)
    table = RoutingTable.uniform(config.slots_total, 1)
    world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), []))
    stock = SimPeer("stock-0")
    await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 10, 0)]))
    await stock.transfer_out(MERCHANT, "a", 3, Shares(["a~c1~0"], [3]),
                             SkuBatch.of([(MERCHANT, "a~c1~0", "A", 50, 0, 0)]))
    await stock.deposit(MERCHANT, "a~c1~0", "A", 50, 3, await stock.instance())
    # A unit moves back from the bucket: durable (Postgres: a = 8), not yet deposited.
    instance = await stock.instance(Expected(MERCHANT, "a", 1))
    await stock.transfer_out(MERCHANT, "a~c1~0", 1, Shares(["a"], [1]), None, None, True)
    # The operator sets a's on-hand to 6; the write commits, its answer is lost.
    world.faults = dataclasses.replace(Faults.none(), store_ambiguous=1.0)
    with contextlib.suppress(DomainError):
        await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 6, 0)]))
    world.faults = Faults.none()
    deposited = await stock.deposit(MERCHANT, "a", "A", 100, 1, instance)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return deposited, level.on_hand, world.store.on_hand(MERCHANT, "a")


def test_a_move_does_not_land_on_a_count_a_lost_write_may_have_set() -> None:
    world = World(13, Faults.none())
    deposited, in_memory, durable = run_in(world,
                                           lambda: _deposit_after_an_unknown_upsert(world))
    # Postgres' on-hand is 6 (the target already counts the moved unit). Before, the
    # deposit added it again: 7 in memory, 6 in Postgres. Now a catalogue write of
    # unknown outcome makes pending moves wait for the next reload.
    assert (deposited, in_memory, durable) == (False, 6, 6)


async def _upsert_beside_a_move_and_a_hold(world: World) -> tuple[int, int]:
    config = sim_config(stock_shards=1, order_shards=1)
    table = RoutingTable.uniform(config.slots_total, 1)
    world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), []))
    stock = SimPeer("stock-0")
    await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 10, 0)]))
    await stock.transfer_out(MERCHANT, "a", 3, Shares(["a~c1~0"], [3]),
                             SkuBatch.of([(MERCHANT, "a~c1~0", "A", 50, 0, 0)]))
    await stock.deposit(MERCHANT, "a~c1~0", "A", 50, 3, await stock.instance())
    await stock.hold(HoldBatch.of([("h1", MERCHANT, "b1", "a", 5, 10**13)], 0))
    # A unit moves back from the bucket: durable (Postgres: a = 8), not yet deposited.
    instance = await stock.instance(Expected(MERCHANT, "a", 1))
    await stock.transfer_out(MERCHANT, "a~c1~0", 1, Shares(["a"], [1]), None, None, True)
    # The operator sets a to 6 (a slow write); meanwhile a cart holds the last free unit.
    world.faults = dataclasses.replace(Faults.none(), store_delay_ms=(50, 50))
    upsert = asyncio.ensure_future(stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 6, 0)])))
    await asyncio.sleep(0.01)
    await stock.hold(HoldBatch.of([("h2", MERCHANT, "b2", "a", 1, 10**13)], 0))
    await upsert
    world.faults = Faults.none()
    await stock.deposit(MERCHANT, "a", "A", 100, 1, instance)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return level.on_hand, world.store.on_hand(MERCHANT, "a")


def test_a_set_on_hand_takes_its_target_and_a_pending_move_is_not_added_on_top() -> None:
    world = World(17, Faults.none())
    in_memory, durable = run_in(world, lambda: _upsert_beside_a_move_and_a_hold(world))
    # Before: memory took Postgres' delta (which counted the moved unit), fell below its
    # holds, was floored to them (6), and the deposit added the unit again: 7 of 6.
    assert (in_memory, durable) == (6, 6)
