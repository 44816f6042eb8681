"""Order shard snapshots: a shard recovered from its snapshot and the orders changed after
it holds exactly what a shard recovered from the whole ledger holds."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import ray

from flashtx.bench.recovery import drop_snapshots as drop_order_snapshots
from flashtx.engine.orders import OrderStatus
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus, restarted_order_shards
from tests.integration.retrying import one_unit

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_recovery_from_a_snapshot_equals_recovery_from_the_ledger(
        engine, shop: Client, database_dsn: str) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="snap", name="Snap", price_minor=250,
                                       on_hand=10_000))
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    shards = engine.topology.orders.handles
    orders = shop.orders

    async def place(prefix: str, count: int) -> list[str]:
        placed = await asyncio.gather(*(orders.PlaceOrder(one_unit(
            f"{prefix}-{n}", f"buyer-{n}", "snap")) for n in range(count)))
        return [p.order.order_id for p in placed]

    before = await place("before", 40)  # on both shards (buyers spread over slots)
    for order_id in before[:10]:
        await orders.PayOrder(order_pb2.PayOrderRequest(order_id=order_id,
                                                        payment_reference=f"p-{order_id}"))
    for order_id in before[10:15]:
        await orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=order_id))
    taken = ray.get([s.snapshot_now.remote() for s in shards])
    assert all(t["written"] >= 1 for t in taken)
    assert sum(t["orders"] for t in taken) >= 35  # this merchant's live orders, at least

    # After the snapshot: new orders, and changes to orders the snapshot holds.
    after = await place("after", 20)
    for order_id in before[15:20] + after[:5]:
        await orders.PayOrder(order_pb2.PayOrderRequest(order_id=order_id))
    for order_id in before[:3]:
        await orders.FulfillOrder(order_pb2.FulfillOrderRequest(order_id=order_id))
    for order_id in before[20:25] + after[5:8] + before[3:5]:  # refunds among them
        await orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=order_id))

    stats = await restarted_order_shards(shards)
    assert [s["recovered_from"] for s in stats] == ["snapshot"] * len(shards)
    assert sum(s["recovered_replayed"] for s in stats) >= 35  # orders changed after it
    from_snapshot = ray.get([s.live_orders.remote(merchant_id) for s in shards])

    await drop_order_snapshots(database_dsn)  # the next recovery reads the ledger
    stats = await restarted_order_shards(shards)
    assert [s["recovered_from"] for s in stats] == ["ledger"] * len(shards)
    from_ledger = ray.get([s.live_orders.remote(merchant_id) for s in shards])

    assert from_snapshot == from_ledger
    live = [row for shard in from_ledger for row in shard if row[0] != "units"]
    # 60 placed, 3 fulfilled, 5 + 5 + 3 + 2 cancelled: 42 live, 15 of them paid.
    assert len(live) == 42
    assert sum(1 for row in live if row[5] == OrderStatus.PAID) == 15
    paid_before = {row[0]: row[16] for row in live if row[0] in before[5:10]}
    assert paid_before == {order_id: f"p-{order_id}" for order_id in before[5:10]}


async def test_a_damaged_snapshot_falls_back_to_the_ledger(
        engine, shop: Client, database_dsn: str) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="dmg", name="Damaged", price_minor=1,
                                       on_hand=1_000))
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    shards = engine.topology.orders.handles
    placed = [(await shop.orders.PlaceOrder(one_unit(f"d-{n}", f"b-{n}", "dmg"))).order
              for n in range(12)]
    ray.get([s.snapshot_now.remote() for s in shards])
    connection = await asyncpg.connect(database_dsn)
    try:  # one byte of every snapshot's body changed
        await connection.execute(
            "UPDATE flashtx.order_snapshots SET body = set_byte(body, 0, get_byte(body, 0) # 1)")
    finally:
        await connection.close()
    stats = await restarted_order_shards(shards)
    assert [s["recovered_from"] for s in stats] == ["ledger"] * len(shards)
    live = [row for shard in ray.get([s.live_orders.remote(merchant_id) for s in shards])
            for row in shard if row[0] != "units"]
    assert sorted(row[0] for row in live) == sorted(o.order_id for o in placed)
    await drop_order_snapshots(database_dsn)  # the shared engine as it was: none
