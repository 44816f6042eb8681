"""Tenancy, scopes, keys, health checking and reflection on the real port."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus, unique_merchant_id

pytestmark = pytest.mark.cluster


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_merchants_cannot_reach_each_other(engine, operator, shop: Client) -> None:
    other_created = await operator.merchants.CreateMerchant(
        merchant_pb2.CreateMerchantRequest(merchant_id=unique_merchant_id("rival"), name="Rival"))
    await add_skus(shop, stock_pb2.Sku(sku_id="mine", name="Mine", price_minor=5, on_hand=5))
    placed = await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
        idempotency_key="k", buyer_id="b", lines=[order_pb2.OrderLine(sku_id="mine",
                                                                       quantity=1)]))
    order_id = placed.order.order_id
    async with Client(engine.address, other_created.admin_key_secret) as rival:
        not_found = grpc.StatusCode.NOT_FOUND
        assert await code_of(rival.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id="mine"))) == not_found
        assert await code_of(rival.stock.AdjustStock(stock_pb2.AdjustStockRequest(
            sku_id="mine", delta=5))) == not_found
        assert await code_of(rival.orders.GetOrder(order_pb2.GetOrderRequest(
            order_id=order_id))) == not_found
        assert await code_of(rival.orders.CancelOrder(order_pb2.CancelOrderRequest(
            order_id=order_id))) == not_found
        assert await code_of(rival.orders.PayOrder(order_pb2.PayOrderRequest(
            order_id=order_id))) == not_found
        assert await code_of(rival.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="x", buyer_id="b",
            lines=[order_pb2.OrderLine(sku_id="mine", quantity=1)]))) == not_found
        listed = await rival.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id="b"))
        assert list(listed.orders) == []
    level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
        sku_id="mine", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
    assert (level.on_hand, level.reserved) == (5, 1)


async def test_scopes_and_keys(engine, shop: Client) -> None:
    channel_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_CHANNEL], label="pos"))
    saas_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_SAAS], label="erp"))
    denied = grpc.StatusCode.PERMISSION_DENIED
    upsert = stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(sku_id="s", name="S",
                                                             on_hand=1)])
    async with Client(engine.address, channel_key.secret) as channel, \
            Client(engine.address, saas_key.secret) as saas:
        assert await code_of(channel.stock.UpsertSkus(upsert)) == denied
        assert await code_of(channel.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
            scopes=[common_pb2.SCOPE_ADMIN]))) == denied
        assert await code_of(channel.orders.PayOrder(order_pb2.PayOrderRequest(
            order_id="0000aa"))) == denied
        assert await code_of(saas.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="k", buyer_id="b",
            lines=[order_pb2.OrderLine(sku_id="s", quantity=1)]))) == denied
        assert await code_of(saas.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id="s"))) == grpc.StatusCode.NOT_FOUND  # allowed, just unknown
        assert await code_of(channel.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(name="x"))) == denied
        await shop.merchants.RevokeApiKey(merchant_pb2.RevokeApiKeyRequest(
            key_id=channel_key.api_key.key_id))
    # Revocation reaches every gateway within auth_cache_ttl_ms (1 s in these tests).
    await asyncio.sleep(engine.config.auth_cache_ttl_ms / 1000)
    for _ in range(4):  # fresh connections land on either gateway
        async with Client(engine.address, channel_key.secret) as revoked:
            assert await code_of(revoked.stock.GetStock(stock_pb2.GetStockRequest(
                sku_id="s"))) == grpc.StatusCode.UNAUTHENTICATED
    keys = (await shop.merchants.GetMerchant(merchant_pb2.GetMerchantRequest())).api_keys
    assert {k.key_id: k.revoked for k in keys}[channel_key.api_key.key_id]


async def test_missing_or_bad_keys_are_unauthenticated(engine) -> None:
    async with grpc.aio.insecure_channel(engine.address) as channel:
        from flashtx_client.v1 import stock_pb2_grpc

        stub = stock_pb2_grpc.StockServiceStub(channel)
        request = stock_pb2.GetStockRequest(sku_id="s")
        for metadata in [(), (("authorization", "Bearer nope"),),
                         (("authorization", "Basic abc"),),
                         (("authorization", "Bearer ftx1.ghost.key.secret"),)]:
            assert await code_of(stub.GetStock(request, metadata=metadata)) == (
                grpc.StatusCode.UNAUTHENTICATED)


async def test_health_and_reflection(engine) -> None:
    async with grpc.aio.insecure_channel(engine.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="flashtx.v1.OrderService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            list_services="")]))
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
            break
    assert {"flashtx.v1.MerchantService", "flashtx.v1.StockService",
            "flashtx.v1.OrderService", "grpc.health.v1.Health"} <= names


async def test_a_channel_key_sees_only_its_own_orders(engine, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="c", name="C", price_minor=5, on_hand=10))
    keys = [await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_CHANNEL], label=f"pos-{n}")) for n in range(2)]
    async with Client(engine.address, keys[0].secret) as pos_a, \
            Client(engine.address, keys[1].secret) as pos_b:
        mine = (await pos_a.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="till-1", buyer_id="walk-in",
            lines=[order_pb2.OrderLine(sku_id="c", quantity=1)]))).order
        get = order_pb2.GetOrderRequest(order_id=mine.order_id)
        assert (await pos_a.orders.GetOrder(get)).order.order_id == mine.order_id
        assert await code_of(pos_b.orders.GetOrder(get)) == grpc.StatusCode.NOT_FOUND
        assert await code_of(pos_b.orders.CancelOrder(order_pb2.CancelOrderRequest(
            order_id=mine.order_id))) == grpc.StatusCode.NOT_FOUND
        listing = order_pb2.ListOrdersRequest(buyer_id="walk-in")
        assert [o.order_id for o in (await pos_b.orders.ListOrders(listing)).orders] == []
        assert [o.order_id for o in (await pos_a.orders.ListOrders(listing)).orders] == [
            mine.order_id]
    # The merchant's admin key sees every order.
    assert (await shop.orders.GetOrder(get)).order.order_id == mine.order_id


async def test_update_merchant_changes_only_the_fields_in_its_mask(shop: Client) -> None:
    from google.protobuf import field_mask_pb2

    def update(mask: list[str] | None, **fields: int) -> merchant_pb2.UpdateMerchantRequest:
        request = merchant_pb2.UpdateMerchantRequest(**fields)
        if mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=mask))
        return request

    both = await shop.merchants.UpdateMerchant(update(None, payment_window_s=600,
                                                      cart_hold_s=30))
    assert (both.merchant.payment_window_s, both.merchant.cart_hold_s) == (600, 30)
    # An older client that knows one field sends a mask: the other keeps its value.
    one = await shop.merchants.UpdateMerchant(update(["payment_window_s"],
                                                     payment_window_s=300))
    assert (one.merchant.payment_window_s, one.merchant.cart_hold_s) == (300, 30)
    other = await shop.merchants.UpdateMerchant(update(["cart_hold_s"], cart_hold_s=0))
    assert (other.merchant.payment_window_s, other.merchant.cart_hold_s) == (300, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.merchants.UpdateMerchant(update(["name"], payment_window_s=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = await shop.merchants.GetMerchant(merchant_pb2.GetMerchantRequest())
    assert (got.merchant.payment_window_s, got.merchant.cart_hold_s) == (300, 0)


async def test_a_retried_create_api_key_makes_one_key(shop: Client) -> None:
    request = merchant_pb2.CreateApiKeyRequest(scopes=[common_pb2.SCOPE_CHANNEL],
                                               label="pos-7", request_id="key-pos-7")
    first = await shop.merchants.CreateApiKey(request)
    again = await shop.merchants.CreateApiKey(request)  # the first answer was "lost"
    assert again.api_key.key_id == first.api_key.key_id
    keys = (await shop.merchants.GetMerchant(merchant_pb2.GetMerchantRequest())).api_keys
    assert [k.key_id for k in keys].count(first.api_key.key_id) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
            scopes=[common_pb2.SCOPE_SAAS], label="pos-7", request_id="key-pos-7"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
