"""Live resharding: stock goes from 2 to 4 shards while a flash sale runs; callers that
hit the move get UNAVAILABLE, their retries succeed, and every invariant holds. A gateway
that died before the move does not stop it half-way."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import ray

from flashtx.app import free_port
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.conftest import add_skus
from tests.integration.retrying import materialized, one_unit, until_answered

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SKUS, UNITS_PER_SKU, BUYERS = 20, 100, 3_000


async def test_two_to_four_stock_shards_mid_sale(engine, shop: Client, database_dsn) -> None:
    assert len(engine.topology.stock.handles) == 2
    await add_skus(shop, *[stock_pb2.Sku(sku_id=f"r{n}", name="R", price_minor=1,
                                         on_hand=UNITS_PER_SKU) for n in range(SKUS)])
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    acked: dict[str, str] = {}
    gate = asyncio.Semaphore(200)

    async def buyer(n: int) -> str:
        request = one_unit(f"reshard-{n}", f"buyer-{n}", f"r{n % SKUS}")

        async def attempt():
            async with gate:
                return await shop.orders.PlaceOrder(request, timeout=10)

        outcome, response = await until_answered(attempt)
        if response is not None:
            acked[request.idempotency_key] = response.order.order_id
        return outcome

    # A gateway that died (it stays in the topology's list until someone looks).
    dead = engine.topology.add_gateway(80, port=free_port())
    await dead.ready.remote()
    ray.kill(dead, no_restart=True)
    sale = asyncio.gather(*(buyer(n) for n in range(BUYERS)))
    while len(acked) < 500:
        await asyncio.sleep(0.02)
    table = await asyncio.to_thread(engine.topology.reshard_stock, 4)
    outcomes = await sale
    assert dead not in engine.topology.gateways
    assert table.shards == 4 and len(engine.topology.stock.handles) == 4
    assert set(outcomes) <= {"OK", "FAILED_PRECONDITION"}, set(outcomes)
    assert outcomes.count("OK") == len(acked) == SKUS * UNITS_PER_SKU  # sold out, no more

    levels = (await shop.stock.GetStockLevels(stock_pb2.GetStockLevelsRequest(
        sku_ids=[f"r{n}" for n in range(SKUS)],
        consistency=common_pb2.READ_CONSISTENCY_STRONG))).levels
    assert [(lv.reserved, lv.available) for lv in levels] == [(UNITS_PER_SKU, 0)] * SKUS
    stats = await asyncio.gather(*(s.stats.remote() for s in engine.topology.stock.handles))
    assert all(s["skus"] > 0 for s in stats)  # every shard, old and new, holds SKUs now
    connection = await asyncpg.connect(database_dsn)
    try:
        await materialized(connection)
        stored = {r["idempotency_key"]: r["order_id"] for r in await connection.fetch(
            "SELECT idempotency_key, order_id FROM flashtx.orders WHERE merchant_id = $1",
            merchant_id)}
    finally:
        await connection.close()
    assert stored == acked  # every acknowledged order once, nothing else
    await asyncio.to_thread(engine.check_invariants)

