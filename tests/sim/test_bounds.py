"""Bounded queues of the order shard, on the simulator's wiring (real shard classes,
virtual time): stock releases waiting for an unreachable stock shard stop at
`releases_due_max`, and what would add more waits (UNAVAILABLE) instead of growing it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from flashtx.actors.order_shard import OrderShard
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.config import Config
from flashtx.engine.errors import DomainError, ResultCode
from flashtx.engine.messages import (
    ActionBatch,
    CartBatch,
    CheckoutBatch,
    PlaceBatch,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.sim.run import sim_config
from flashtx.sim.world import Faults, Lost, SimPeer, World, run_in
from tests.sim.conftest import two_order_shards

MERCHANT = "bounds-shop"


async def _one_of_each(world: World, on_hand: int,
                       **config_changes: Any) -> tuple[Config, SimPeer, SimPeer]:
    """One stock shard and one order shard, and SKU "a" with `on_hand` units."""
    config = sim_config(stock_shards=1, order_shards=1, **config_changes)
    table = RoutingTable.uniform(config.slots_total, 1)
    world.add("stock-0", lambda: StockShard(0, config, table.slots_of(0), ["order-0"]))
    world.add("order-0", lambda: OrderShard(0, config, table, table))
    stock, order = SimPeer("stock-0"), SimPeer("order-0")
    await stock.upsert(SkuBatch.of([(MERCHANT, "a", "A", 100, on_hand, 0)]))
    return config, stock, order


async def _releases_wait_at_their_bound(world: World) -> list[str]:
    config, stock, order = await _one_of_each(world, 10, releases_due_max=2)
    placed = await order.place(PlaceBatch.of([
        (MERCHANT, f"k{n}", f"b{n}", (("a", 1),), 900,
         slot_of(MERCHANT, f"b{n}", config.slots_total), 0, "key", "", "USD") for n in range(4)]))
    assert [code for code, _ in placed] == [ResultCode.OK] * 4
    order_ids = [snapshot.order_id for _, snapshot in placed]
    world.crash("stock-0")  # and it stays down (restart_ms is far away)
    seen = []
    for order_id in order_ids:
        [answer] = await order.act(ActionBatch.of([("cancel", MERCHANT, order_id, "", "")]))
        seen.append(answer.code.name if isinstance(answer, DomainError) else "OK")
    stats = await order.stats()
    assert stats["releases_due"] == 2  # bounded: the later cancels did not add theirs
    world.start("stock-0")  # back: it takes the order shard's state over, queue emptied
    for _ in range(200):
        if (await order.stats())["releases_due"] == 0:
            break
        await asyncio.sleep(0.05)
    [answer] = await order.act(ActionBatch.of([("cancel", MERCHANT, order_ids[3], "", "")]))
    seen.append(answer.code.name if isinstance(answer, DomainError) else "OK")
    return seen


def test_stock_releases_waiting_for_an_unreachable_shard_are_bounded() -> None:
    world = World(7, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    seen = run_in(world, lambda: _releases_wait_at_their_bound(world), timeout_s=600)
    # Two cancels queue their release; the next ones wait; once the stock shard is back
    # (and has taken the state over) a cancel goes through again.
    assert seen == ["OK", "OK", "UNAVAILABLE", "UNAVAILABLE", "OK"]


async def _cart_shrink_then_crash(world: World) -> tuple[int, int, int]:
    shards = await two_order_shards(world, MERCHANT, {"a": 2})
    config, stock = shards.config, shards.stock
    holder, other = shards.buyers_on(MERCHANT, 0)[0], shards.buyers_on(MERCHANT, 1)[0]
    cart = SimPeer("order-0").cart
    await cart(CartBatch.of([("add", MERCHANT, holder, "", "a", 2, 600, "")]))  # holds both units
    await asyncio.sleep(1)  # the cart with its hold is durable
    await cart(CartBatch.of([("set", MERCHANT, holder, "", "a", 0, 600, "")]))  # gives them back
    world.crash("order-0")  # right after the answer
    slot = slot_of(MERCHANT, other, config.slots_total)
    [(code, _)] = await SimPeer("order-1").place(
        PlaceBatch.of([(MERCHANT, "k-other", other, (("a", 2),), 900, slot, 0, "key", "", "USD")]))
    world.start("order-0")  # recovers from the database and hands its holds over
    await asyncio.sleep(2)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return int(code), level.reserved + level.sold, level.on_hand


def test_a_cart_gives_units_back_only_once_its_new_state_is_durable() -> None:
    """A line made smaller frees its units after the cart's new state is committed: a
    crash right after the answer must not bring the old hold back over a sale."""
    world = World(11, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    code, taken, on_hand = run_in(world, lambda: _cart_shrink_then_crash(world),
                                  timeout_s=600)
    assert code == ResultCode.OK  # the other buyer got the freed units
    assert taken <= on_hand, f"oversold: {taken} units held or sold of {on_hand}"


async def _checkout_then_crash(world: World) -> tuple[int, int, int, int]:
    config, stock, order = await _one_of_each(world, 2, commit_delay_ms_max=50.0)
    await order.cart(CartBatch.of([("add", MERCHANT, "b", "", "a", 2, 600, "")]))  # holds both
    await asyncio.sleep(1)  # the cart with its hold is durable
    slot = slot_of(MERCHANT, "b", config.slots_total)
    [(code, _)] = await order.checkout(CheckoutBatch.of([(MERCHANT, "b", "", "k", 900, slot,
                                                          0, "key", "USD")]))
    world.crash("order-0")  # right after the answer: anything written behind is lost
    world.start("order-0")  # recovers and hands its holds over
    await asyncio.sleep(1)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return int(code), level.reserved, level.sold, level.on_hand


def test_a_checkout_and_its_emptied_cart_commit_together() -> None:
    """The order a checkout places and the cart it empties are one commit: a crash after
    the answer must not bring back a cart still holding the units its order holds."""
    world = World(13, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    code, reserved, sold, on_hand = run_in(world, lambda: _checkout_then_crash(world),
                                           timeout_s=600)
    assert code == ResultCode.OK
    assert (reserved, sold, on_hand) == (2, 0, 2), "the units are held once, by the order"


async def _clear_then_hold_again(world: World) -> tuple[int, int, int]:
    config, stock, order = await _one_of_each(world, 2)
    await order.cart(CartBatch.of([("add", MERCHANT, "b", "", "a", 1, 600, "")]))
    await asyncio.sleep(1)
    # Cleared (its hold's release waits for the clear to be durable), then the same line
    # holds again at once: the late release must not free the new hold.
    await order.cart(CartBatch.of([("clear", MERCHANT, "b", "", "", 0, 600, ""),
                                   ("add", MERCHANT, "b", "", "a", 1, 600, "")]))
    await asyncio.sleep(1)
    slot = slot_of(MERCHANT, "o", config.slots_total)
    [(code, _)] = await order.place(PlaceBatch.of([(MERCHANT, "k", "o", (("a", 2),), 900,
                                                    slot, 0, "key", "", "USD")]))
    world.crash("stock-0")
    world.start("stock-0")  # takes the order shard's holds over
    await asyncio.sleep(1)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return int(code), level.reserved + level.sold, level.on_hand


def test_a_late_release_of_a_cleared_line_never_frees_its_next_hold() -> None:
    world = World(17, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    code, taken, on_hand = run_in(world, lambda: _clear_then_hold_again(world),
                                  timeout_s=600)
    assert code == ResultCode.OUT_OF_STOCK  # the cart's new hold keeps one of the two
    assert taken <= on_hand, f"oversold: {taken} units held or sold of {on_hand}"


async def _checkout_answer_lost(world: World) -> tuple[int, int, int]:
    config, stock, order = await _one_of_each(world, 2)
    await order.cart(CartBatch.of([("add", MERCHANT, "b", "", "a", 2, 600, "")]))
    await asyncio.sleep(1)
    calm = world.faults
    world.faults = dataclasses.replace(calm, reply_lost=1.0)  # every answer is lost
    slot = slot_of(MERCHANT, "b", config.slots_total)
    with contextlib.suppress(Lost):  # the reserve ran; the order shard gives up on it
        await order.checkout(CheckoutBatch.of([(MERCHANT, "b", "", "k", 900, slot, 0, "key",
                                                "USD")]))
    await asyncio.sleep(0.5)
    world.faults = calm
    other = slot_of(MERCHANT, "o", config.slots_total)
    [(code, _)] = await order.place(PlaceBatch.of([(MERCHANT, "k2", "o", (("a", 2),), 900,
                                                    other, 0, "key", "", "USD")]))
    world.crash("stock-0")
    world.start("stock-0")  # takes the order shard's holds over: the cart's, held
    await asyncio.sleep(1)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return int(code), level.reserved + level.sold, level.on_hand


def test_a_checkout_given_up_gives_the_carts_holds_back() -> None:
    """A checkout's reserve took over the cart's holds, but its answer was lost: the
    order shard abandons the order, and the holds go back to the cart it still has."""
    world = World(19, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    code, taken, on_hand = run_in(world, lambda: _checkout_answer_lost(world),
                                  timeout_s=600)
    assert code == ResultCode.OUT_OF_STOCK  # the cart still holds both units
    assert taken <= on_hand, f"oversold: {taken} units held or sold of {on_hand}"


async def _clear_while_the_sweeper_waits(world: World) -> tuple[int, int, int]:
    shards = await two_order_shards(world, MERCHANT, {"a": 2, "z": 9},
                                    expiry_sweep_interval_ms=20)
    config, stock = shards.config, shards.stock

    def buyers_on(shard: int) -> list[str]:
        return shards.buyers_on(MERCHANT, shard)

    first, holder = buyers_on(0)[:2]
    other = buyers_on(1)[0]
    order0 = SimPeer("order-0")
    await order0.cart(CartBatch.of([("add", MERCHANT, first, "", "z", 1, 600, ""),
                                    ("add", MERCHANT, holder, "", "a", 2, 600, "")]))
    await asyncio.sleep(1)  # both carts and their holds are durable
    await order0.cart(CartBatch.of([("clear", MERCHANT, first, "", "", 0, 600, "")]))
    await asyncio.sleep(0.05)  # the sweeper waits for that clear's (slow) commit
    await order0.cart(CartBatch.of([("clear", MERCHANT, holder, "", "", 0, 600, "")]))
    await asyncio.sleep(0.1)  # the first clear is durable; the second is not yet
    slot = slot_of(MERCHANT, other, config.slots_total)
    [(code, _)] = await SimPeer("order-1").place(
        PlaceBatch.of([(MERCHANT, "k", other, (("a", 2),), 900, slot, 0, "key", "", "USD")]))
    world.crash("order-0")  # before the second clear commits: its cart comes back
    world.start("order-0")
    await asyncio.sleep(2)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return int(code), level.reserved + level.sold, level.on_hand


def test_a_release_queued_while_the_sweeper_waits_waits_for_its_own_commit() -> None:
    """The sweeper sends queued releases once what frees them is durable: one queued
    while it waited for the journal (a cart cleared meanwhile) waits for the next round."""
    faults = dataclasses.replace(Faults.none(), store_delay_ms=(100, 100),
                                 restart_ms=(10**9, 10**9))
    world = World(31, faults)
    code, taken, on_hand = run_in(world, lambda: _clear_while_the_sweeper_waits(world),
                                  timeout_s=600)
    assert taken <= on_hand, f"oversold: {taken} units held or sold of {on_hand}"
    assert code == ResultCode.OUT_OF_STOCK  # the cleared cart's hold was not yet freed
