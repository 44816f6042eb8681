"""Events: the transactional outbox, the relay to Redis Streams and WatchEvents, on the
real Postgres, Redis and gRPC port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import pytest

from flashtx_client import Client
from flashtx_client.v1 import (
    common_pb2,
    event_pb2,
    event_pb2_grpc,
    merchant_pb2,
    order_pb2,
    stock_pb2,
)
from tests.integration.conftest import add_skus
from tests.integration.retrying import materialized, until_answered

pytestmark = pytest.mark.cluster


def order(key: str, quantity: int = 1) -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(idempotency_key=key, buyer_id=f"buyer-{key}",
                                       lines=[order_pb2.OrderLine(sku_id="s", quantity=quantity)])


async def saas_client(engine, shop: Client) -> Client:
    key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_SAAS], label="crm"))
    return Client(engine.address, key.secret)


async def watch(engine, token: str, cursor: str, count: int, types=()) -> list[Any]:
    """Reads `count` events from `cursor`; returns (event, cursor) pairs. Waits up to
    60 s: the relay reads rows of transactions older than every running one on the
    server, and a scenario of another lane that blackholes Postgres mid-transaction
    holds that horizon back until the server drops its session (about 30 s)."""
    async with grpc.aio.insecure_channel(engine.address) as channel:
        stub = event_pb2_grpc.EventServiceStub(channel)
        call = stub.WatchEvents(event_pb2.WatchEventsRequest(cursor=cursor, types=list(types)),
                                metadata=(("authorization", f"Bearer {token}"),), timeout=60)
        seen = []
        async for response in call:
            seen.append((response.event, response.cursor))
            if len(seen) == count:
                call.cancel()
                break
        return seen


async def outbox_of(dsn: str, merchant_id: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        await materialized(connection)
        return list(await connection.fetch(
            "SELECT event_id, event_type, order_id, sequence FROM flashtx.outbox"
            " WHERE merchant_id = $1 ORDER BY outbox_id", merchant_id))
    finally:
        await connection.close()


async def merchant_of(shop: Client) -> str:
    response = await shop.merchants.GetMerchant(merchant_pb2.GetMerchantRequest())
    return response.merchant.merchant_id


async def test_one_outbox_event_per_committed_change_none_for_refusals(
        engine, shop: Client, database_dsn: str) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=2))
    first = (await shop.orders.PlaceOrder(order("a"))).order
    second = (await shop.orders.PlaceOrder(order("b"))).order
    await shop.orders.PlaceOrder(order("a"))  # a replay changes nothing
    with pytest.raises(grpc.aio.AioRpcError):
        await shop.orders.PlaceOrder(order("c"))  # sold out: refused, no event
    await shop.orders.PayOrder(order_pb2.PayOrderRequest(order_id=first.order_id))
    await shop.orders.FulfillOrder(order_pb2.FulfillOrderRequest(order_id=first.order_id))
    await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=second.order_id))
    await shop.stock.AdjustStock(stock_pb2.AdjustStockRequest(sku_id="s", delta=3,
                                                              reason="restock"))
    merchant_id = await merchant_of(shop)
    deadline = time.monotonic() + 60
    while True:  # the sold-out event is written off the order path
        rows = await outbox_of(database_dsn, merchant_id)
        if any(r["event_type"] == "stock.sold_out" for r in rows):
            break
        assert time.monotonic() < deadline, "no stock.sold_out event"
        await asyncio.sleep(0.1)
    per_order: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        if row["order_id"]:
            per_order.setdefault(row["order_id"], []).append((row["sequence"],
                                                               row["event_type"]))
    assert per_order == {
        first.order_id: [(1, "order.reserved"), (2, "order.paid"), (3, "order.fulfilled")],
        second.order_id: [(1, "order.reserved"), (2, "order.cancelled")]}
    # The upsert and the restock adjusted stock; the second order took the last unit.
    stock_events = sorted(r["event_type"] for r in rows if not r["order_id"])
    assert stock_events == ["stock.adjusted", "stock.adjusted", "stock.sold_out"]
    assert len({r["event_id"] for r in rows}) == len(rows)


async def test_watch_events_in_order_and_resume_after_disconnect(engine, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=100))
    placed = [(await shop.orders.PlaceOrder(order(f"k{i}"))).order for i in range(6)]
    for o in placed[:3]:
        await shop.orders.PayOrder(order_pb2.PayOrderRequest(order_id=o.order_id))
    async with await saas_client(engine, shop) as saas:
        token = saas.token
    # 1 stock event + 6 placements + 3 payments, read in two sessions.
    first = await watch(engine, token, "0", 4)
    rest = await watch(engine, token, first[-1][1], 6)
    events = [e for e, _ in first + rest]
    assert len({e.event_id for e in events}) == 10
    assert events[0].type == "stock.adjusted"
    for o in placed[:3]:
        mine = [e for e in events if e.order_id == o.order_id]
        assert [(e.sequence, e.type) for e in mine] == [(1, "order.reserved"), (2, "order.paid")]
        assert mine[1].order.status == order_pb2.ORDER_STATUS_PAID
    only_paid = await watch(engine, token, "0", 3, types=["order.paid"])
    assert [e.type for e, _ in only_paid] == ["order.paid"] * 3


async def test_watch_events_refuses_bad_input_and_other_scopes(engine, shop: Client) -> None:
    async with await saas_client(engine, shop) as saas:
        token = saas.token
    for request, code in [
            (event_pb2.WatchEventsRequest(types=["order.nope"]), grpc.StatusCode.INVALID_ARGUMENT),
            (event_pb2.WatchEventsRequest(cursor="drop table"), grpc.StatusCode.INVALID_ARGUMENT)]:
        async with grpc.aio.insecure_channel(engine.address) as channel:
            call = event_pb2_grpc.EventServiceStub(channel).WatchEvents(
                request, metadata=(("authorization", f"Bearer {token}"),))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            assert caught.value.code() == code
    channel_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_CHANNEL]))
    async with grpc.aio.insecure_channel(engine.address) as channel:
        call = event_pb2_grpc.EventServiceStub(channel).WatchEvents(
            event_pb2.WatchEventsRequest(), metadata=(("authorization",
                                                       f"Bearer {channel_key.secret}"),))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_redis_outage_does_not_stop_orders_and_events_catch_up(
        engine, shop: Client, redis_link) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=1000))
    async with await saas_client(engine, shop) as saas:
        token = saas.token
    redis_link.cut()
    try:
        # Every order is answered while Redis is still away (the link comes back only
        # after this gather): orders do not wait for events. A client retries what the
        # engine refuses as overloaded, with the same key.
        answered = await asyncio.gather(*(until_answered(
            lambda i=i: shop.orders.PlaceOrder(order(f"r{i}"))) for i in range(200)))
        assert [outcome for outcome, _ in answered] == ["OK"] * 200
        placed = [response for _, response in answered]
    finally:
        redis_link.restore()
    events = await watch(engine, token, "0", 201)
    order_ids = {e.order_id for e, _ in events if e.type == "order.reserved"}
    assert order_ids == {p.order.order_id for p in placed}
