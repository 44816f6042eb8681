"""A clock that steps back, on the simulator's wiring (real shard classes, the in-memory
database, virtual time): the stock shard freed a hold at its expiry and sold its unit
again before the order shard had expired the order; then the clock stepped back and both
shards restarted. The lapsed hold must not come back over the sale."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from flashtx.actors.batch_journal import BatchTables
from flashtx.engine.errors import DomainError, ResultCode
from flashtx.engine.messages import ActionBatch, PlaceBatch, SkuKeys
from flashtx.engine.sharding import slot_of
from flashtx.sim.world import Faults, SimPeer, World, run_in
from tests.sim.conftest import two_order_shards

MERCHANT = "clock-shop"


async def _step_back_after_a_resale(world: World) -> dict[str, Any]:
    shards = await two_order_shards(world, MERCHANT, {"a": 1})
    config, stock = shards.config, shards.stock

    def placement(shard: int, key: str) -> tuple[Any, ...]:
        buyer = shards.buyers_on(MERCHANT, shard)[0]
        return (MERCHANT, key, buyer, (("a", 1),), 2,
                slot_of(MERCHANT, buyer, config.slots_total), 0, "key", "", "USD")

    [(code, first)] = await SimPeer("order-0").place(PlaceBatch.of([placement(0, "k1")]))
    assert code == ResultCode.OK
    # Order shard 0 can commit nothing from now on: its expiry of the first order never
    # becomes durable, so it never releases the hold; the stock shard frees it itself.
    store, gate = world.store, asyncio.Event()
    append = store.append_journal

    async def held_back(*args: Any, **kwargs: Any) -> None:
        _, tables = BatchTables.decode(args[5])
        if any(row[0] == first.order_id for row in tables.transitions):  # its expiry
            await gate.wait()
        await append(*args, **kwargs)

    store.append_journal = held_back  # type: ignore[method-assign]
    world.step_clock(2_000 + config.reservation_grace_ms + 1_000)  # past deadline + grace
    await asyncio.sleep(0.3)  # the stock shard's sweep frees the hold
    [(code, second)] = await SimPeer("order-1").place(PlaceBatch.of([placement(1, "k2")]))
    resold = code == ResultCode.OK
    world.step_clock(0)  # back: the first order looks within its deadline again
    for name in ("order-0", "stock-0"):
        world.crash(name)
    for name in ("stock-0", "order-0"):
        world.start(name)
    starts = [world.instance(name)._ready for name in ("stock-0", "order-0", "order-1")]
    await asyncio.wait(starts, timeout=5)
    started = all(task.done() and task.exception() is None for task in starts)
    paid = {}
    for shard, order in (("order-0", first), ("order-1", second)):
        [answer] = await SimPeer(shard).act(ActionBatch.of([("pay", MERCHANT, order.order_id,
                                                              "p", "")]))
        paid[order.idempotency_key] = not isinstance(answer, DomainError)
    [level] = await stock.levels(SkuKeys([MERCHANT], ["a"]))
    return {"resold": resold, "started": started, "paid": paid,
            "held_or_sold": level.reserved + level.sold, "on_hand": level.on_hand,
            "holds_without_units": (await stock.stats())["holds_without_units"]}


def test_a_hold_freed_at_its_expiry_does_not_come_back_when_the_clock_steps_back() -> None:
    world = World(17, dataclasses.replace(Faults.none(), restart_ms=(10**9, 10**9)))
    found = run_in(world, lambda: _step_back_after_a_resale(world), timeout_s=600)
    assert found["resold"]  # the unit freed at the hold's expiry went to the second order
    assert found["started"], "a shard could not start after the clock stepped back"
    assert found["paid"] == {"k1": False, "k2": True}
    assert found["held_or_sold"] <= found["on_hand"] == 1
    assert found["holds_without_units"] == 1
