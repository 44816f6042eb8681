"""Bounded history on the simulator's wiring (real shard classes, the in-memory database,
virtual time): finished orders leave the order shard's memory, their keys stay for the
idempotency window and are looked up in the database after it, and a shard that recovers
(live orders only) rebuilds exactly the state it had."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

from flashtx.actors.order_shard import OrderShard
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.errors import DomainError, ResultCode
from flashtx.engine.messages import ActionBatch, PageRequest, PlaceBatch, SkuBatch, SkuKeys
from flashtx.engine.orders import OrderSnapshot
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.sim.run import sim_config
from flashtx.sim.world import Faults, SimPeer, World, run_in

MERCHANT = "history-shop"
BUYER = "b1"  # one buyer: every order on one shard, and one long ListOrders
NEVER = (10**9, 10**9)
ORDERS = 40


def _world(seed: int) -> World:
    return World(seed, dataclasses.replace(Faults.none(), restart_ms=(5, 5)))


def _placement(n: int, lines: tuple[tuple[str, int], ...] = (("a", 1),)) -> tuple[Any, ...]:
    return (MERCHANT, f"k{n}", BUYER, lines, 900, slot_of(MERCHANT, BUYER, 64), 0, "key", "",
            "USD")


async def _act(order: SimPeer, op: str, target: str, argument: Any = "") -> Any:
    [answer] = await order.act(ActionBatch.of([(op, MERCHANT, target, argument, "")]))
    return answer


def _handover_totals(world: World) -> tuple[Counter[str], Counter[str]]:
    """Units the order shard would hand the stock shard: held and sold, per SKU."""
    shard = world.instance("order-0")
    holds, sales = shard._state.stock_state(0, lambda merchant, key: 0,
                                            shard._journal.not_materialized, 0, 0)
    held: Counter[str] = Counter()
    for lines in holds.lines:
        for sku_id, quantity in lines:
            held[sku_id] += quantity
    sold: Counter[str] = Counter()
    for sku_id, units in zip(sales.sku_ids, sales.quantities, strict=True):
        sold[sku_id] += units
    return held, sold


def test_more_orders_than_the_shard_holds_and_every_key_answers_for_good() -> None:
    """orders_per_shard_max is 5; 40 orders go through one shard over time, each paid and
    fulfilled or cancelled: every one is placed (finished ones left memory), and afterwards
    every key replays its own order, whether still retained in memory or looked up in the
    database past the window; reads and the buyer's list answer from the database."""
    world = _world(41)
    config = sim_config(stock_shards=1, order_shards=1, orders_per_shard_max=5,
                        finished_order_linger_s=0.1, idempotency_window_s=2)
    table = RoutingTable.uniform(config.slots_total, 1)

    async def scenario() -> dict[str, Any]:
        world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), ["order-0"]))
        world.add("order-0", lambda: OrderShard(0, config, table, table))
        stock, order = SimPeer("stock-0"), SimPeer("order-0")
        await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 1000, 0)]))
        placed: dict[str, str] = {}
        codes: Counter[str] = Counter()
        for n in range(ORDERS):
            [(code, snapshot)] = await order.place(PlaceBatch.of([_placement(n)]))
            codes[ResultCode(code).name] += 1
            placed[f"k{n}"] = snapshot.order_id
            await _act(order, "pay", snapshot.order_id, f"p{n}")
            await _act(order, "fulfil" if n % 4 else "cancel", snapshot.order_id)
            await asyncio.sleep(0.25)  # the sweep lets finished orders go
        stats = await order.stats()
        replays = {}
        for n in range(ORDERS):  # oldest first: looked up in the database, then retained
            [(code, snapshot)] = await order.place(PlaceBatch.of([_placement(n)]))
            replays[f"k{n}"] = (ResultCode(code).name, snapshot.order_id)
        [(conflict, _)] = await order.place(PlaceBatch.of([_placement(0, (("a", 2),))]))
        [(fresh, _)] = await order.place(PlaceBatch.of([_placement(ORDERS)]))
        first = await _act(order, "get", placed["k0"])
        refused = await _act(order, "pay", placed["k1"], "p1")  # fulfilled long ago
        listed: list[str] = []
        before = None
        while True:
            page, before = await _act(order, "list", BUYER, PageRequest(before, 7))
            listed.extend(o.order_id for o in page)
            if before is None:
                break
        [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
        return {"codes": codes, "stats": stats, "placed": placed, "replays": replays,
                "conflict": conflict, "fresh": fresh, "first": first, "refused": refused,
                "listed": listed, "level": level}

    found = run_in(world, scenario, timeout_s=600)
    assert found["codes"] == {"OK": ORDERS}  # never "order shard is full"
    assert found["stats"]["orders"] <= 5 and found["stats"]["orders_evicted"] >= ORDERS - 5
    assert found["replays"] == {key: ("REPLAYED", order_id)
                                for key, order_id in found["placed"].items()}
    assert found["conflict"] == ResultCode.IDEMPOTENCY_CONFLICT
    assert found["fresh"] == ResultCode.OK
    first = found["first"]
    assert isinstance(first, OrderSnapshot) and first.status == 4  # cancelled (refunded)
    assert first.payment_reference == "p0" and first.refunded
    assert isinstance(found["refused"], DomainError)
    assert found["refused"].code == ResultCode.FAILED_PRECONDITION
    assert sorted(found["listed"]) == sorted([*found["placed"].values(), found["listed"][0]])
    assert len(set(found["listed"])) == ORDERS + 1  # each once, the fresh one first
    fulfilled = sum(1 for n in range(ORDERS) if n % 4)
    assert (found["level"].sold, found["level"].reserved) == (fulfilled, 1)
    assert found["level"].available == 1000 - fulfilled - 1


def test_recovery_of_live_orders_alone_rebuilds_the_state_eviction_left() -> None:
    """The order and stock shards crash after orders finished and left memory: the order
    shard recovers from the database (live orders, fulfilled units, keys in the window)
    and hands the stock shard exactly what it handed before; levels are unchanged."""
    world = _world(43)
    config = sim_config(stock_shards=1, order_shards=1, finished_order_linger_s=0.1,
                        idempotency_window_s=3600)
    table = RoutingTable.uniform(config.slots_total, 1)

    async def scenario() -> tuple[Any, ...]:
        world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), ["order-0"]))
        world.add("order-0", lambda: OrderShard(0, config, table, table))
        stock, order = SimPeer("stock-0"), SimPeer("order-0")
        await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, 100, 0),
                                        (MERCHANT, "b", "B", 100, 100, 0)]))
        for n in range(24):
            lines = (("a", 1), ("b", 2)) if n % 2 else (("a", 3),)
            [(_, snapshot)] = await order.place(PlaceBatch.of([_placement(n, lines)]))
            if n % 3:
                await _act(order, "pay", snapshot.order_id, f"p{n}")
            if n % 3 == 1:
                await _act(order, "fulfil" if n % 2 else "cancel", snapshot.order_id)
            if n % 5 == 0:
                await _act(order, "cancel", snapshot.order_id)
        await asyncio.sleep(0.5)  # finished orders leave memory
        before = (await order.stats(), _handover_totals(world),
                  await stock.levels(SkuKeys([MERCHANT] * 2, ["a", "b"])))
        world.crash("order-0")
        world.crash("stock-0")
        await asyncio.sleep(0.1)  # both back (restart_ms), recovered from the database
        after_levels = await stock.levels(SkuKeys([MERCHANT] * 2, ["a", "b"]))
        replays: Counter[str] = Counter()
        for n in range(24):
            lines = (("a", 1), ("b", 2)) if n % 2 else (("a", 3),)
            [(code, _)] = await order.place(PlaceBatch.of([_placement(n, lines)]))
            replays[ResultCode(code).name] += 1
        after = (await order.stats(), _handover_totals(world), after_levels, None, replays)
        return before, after

    before, after = run_in(world, scenario, timeout_s=600)
    assert before[0]["orders_evicted"] > 0
    assert after[0]["orders"] == before[0]["orders"]  # the live ones
    assert after[4] == {"REPLAYED": 24}  # every key answers its order, from the database
    assert after[1] == before[1]  # held and sold units, per SKU, handed over alike
    strip = [level._replace(as_of_ms=0) for level in before[2]]
    assert [level._replace(as_of_ms=0) for level in after[2]] == strip
