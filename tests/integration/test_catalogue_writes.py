"""Catalogue writes are durable before they are applied: a write that failed half-way is
retried to the right result, never reported as done when it was not, and AdjustStock
with a request_id is applied once however often it is retried."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.conftest import add_skus

pytestmark = pytest.mark.cluster

STRONG = common_pb2.READ_CONSISTENCY_STRONG


async def durable_on_hand(dsn: str, merchant_id: str, sku_id: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(
            "SELECT coalesce(sum(delta), 0) FROM flashtx.stock_adjustments"
            " WHERE merchant_id = $1 AND sku_id = $2", merchant_id, sku_id))
    finally:
        await connection.close()


async def on_hand(shop: Client, sku_id: str) -> int:
    return (await shop.stock.GetStock(stock_pb2.GetStockRequest(
        sku_id=sku_id, consistency=STRONG))).level.on_hand


async def merchant_of(shop: Client) -> str:
    return (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id


async def test_a_failed_catalogue_write_is_retried_to_the_right_result(
        engine, shop: Client, postgres_link, database_dsn: str) -> None:
    merchant_id = await merchant_of(shop)
    sku = stock_pb2.Sku(sku_id="w", name="W", price_minor=1, on_hand=10)
    await add_skus(shop, sku)
    more = stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(sku_id="w", name="W",
                                                           price_minor=1, on_hand=50)])
    postgres_link.cut()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await shop.stock.UpsertSkus(more, timeout=60)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await on_hand(shop, "w") == 10  # not applied: it is not durable
    finally:
        postgres_link.restore()
    response = await shop.stock.UpsertSkus(more, timeout=60)  # the client's retry
    assert response.results[0].level.on_hand == 50
    assert await durable_on_hand(database_dsn, merchant_id, "w") == 50 == await on_hand(shop, "w")


async def test_adjust_stock_with_a_request_id_is_applied_once(
        engine, shop: Client, postgres_link, database_dsn: str) -> None:
    merchant_id = await merchant_of(shop)
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=1, on_hand=10))
    restock = stock_pb2.AdjustStockRequest(sku_id="a", delta=5, reason="restock",
                                           request_id="restock-1")
    postgres_link.cut()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await shop.stock.AdjustStock(restock, timeout=60)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        postgres_link.restore()
    first = await shop.stock.AdjustStock(restock, timeout=60)
    again = await shop.stock.AdjustStock(restock, timeout=60)
    assert (first.replayed, again.replayed) == (False, True)
    assert first.level.on_hand == again.level.on_hand == 15
    assert await durable_on_hand(database_dsn, merchant_id, "a") == 15 == await on_hand(shop, "a")
    # The same id for another change is refused and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await shop.stock.AdjustStock(stock_pb2.AdjustStockRequest(
            sku_id="a", delta=7, reason="restock", request_id="restock-1"))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # A decrease leaves the sellable units before it is written, and is applied once too.
    take = stock_pb2.AdjustStockRequest(sku_id="a", delta=-4, reason="damaged",
                                        request_id="damaged-1")
    assert not (await shop.stock.AdjustStock(take)).replayed
    assert (await shop.stock.AdjustStock(take)).replayed
    assert await durable_on_hand(database_dsn, merchant_id, "a") == 11 == await on_hand(shop, "a")
