"""Every mutating RPC, retried after its answer was lost, is applied exactly once.

The answer is lost on purpose by a client interceptor: the call reaches the engine and is
served, then the client is told UNAVAILABLE, as after a connection reset; the client
retries the very same request (same request id or idempotency key) as the docs tell
clients to. Afterwards the merchant's state shows each change once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest

from flashtx_client.v1 import (
    campaign_pb2,
    campaign_pb2_grpc,
    cart_pb2,
    cart_pb2_grpc,
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    stock_pb2,
    stock_pb2_grpc,
)
from tests.integration.conftest import unique_merchant_id
from tests.integration.retrying import eventually

pytestmark = [pytest.mark.cluster]

T = TypeVar("T")
OK, REPLAYED = common_pb2.RESULT_CODE_OK, common_pb2.RESULT_CODE_REPLAYED


class LoseFirstAnswers(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The first answer to each distinct request is served, then lost (UNAVAILABLE)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, bytes]] = set()
        self.lost = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        key = (method, request.SerializeToString(deterministic=True))
        if key in self.seen or not _mutating(method):
            return call
        await call  # served by the engine...
        self.seen.add(key)
        self.lost += 1  # ...and its answer lost
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                   grpc.aio.Metadata(), details="test: the answer was lost")


def _mutating(method: str) -> bool:
    return not method.rsplit("/", 1)[-1].startswith(("Get", "List", "Watch"))


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """As a client does: the same request again after UNAVAILABLE."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_every_mutating_rpc_retried_after_a_lost_answer_is_applied_once(engine) -> None:
    lossy = LoseFirstAnswers()
    async with grpc.aio.insecure_channel(engine.address, interceptors=[lossy]) as channel:
        merchants = merchant_pb2_grpc.MerchantServiceStub(channel)
        stock = stock_pb2_grpc.StockServiceStub(channel)
        orders = order_pb2_grpc.OrderServiceStub(channel)
        carts = cart_pb2_grpc.CartServiceStub(channel)
        campaigns = campaign_pb2_grpc.CampaignServiceStub(channel)
        operator = (("authorization", f"Bearer {engine.operator_key}"),)
        merchant_id = unique_merchant_id("retry")

        created = await retried(lambda: merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id=merchant_id, name="Retry shop",
                                               payment_window_s=600, request_id="create-1"),
            metadata=operator))
        assert created.replayed and created.merchant.merchant_id == merchant_id
        admin = (("authorization", f"Bearer {created.admin_key_secret}"),)

        async def call(method: Callable[..., Any], request: Any) -> Any:
            return await retried(lambda: method(request, metadata=admin))

        async def level(sku_id: str) -> Any:
            return (await stock.GetStock(stock_pb2.GetStockRequest(
                sku_id=sku_id, consistency=common_pb2.READ_CONSISTENCY_STRONG),
                metadata=admin)).level

        # Merchant and keys.
        await call(merchants.UpdateMerchant, merchant_pb2.UpdateMerchantRequest(
            cart_hold_s=30, update_mask={"paths": ["cart_hold_s"]}))
        key = await call(merchants.CreateApiKey, merchant_pb2.CreateApiKeyRequest(
            scopes=[common_pb2.SCOPE_CHANNEL], label="pos", request_id="key-1"))
        revoked = await call(merchants.RevokeApiKey,
                             merchant_pb2.RevokeApiKeyRequest(key_id=key.api_key.key_id))
        assert revoked.api_key.revoked
        view = await merchants.GetMerchant(merchant_pb2.GetMerchantRequest(), metadata=admin)
        assert view.merchant.cart_hold_s == 30
        assert sorted(k.label for k in view.api_keys) == ["admin", "pos"]  # one key each

        # Stock.
        upserted = await call(stock.UpsertSkus, stock_pb2.UpsertSkusRequest(skus=[
            stock_pb2.Sku(sku_id=s, name=s, price_minor=100, on_hand=10) for s in "abc"]))
        assert [r.code for r in upserted.results] == [OK] * 3
        adjusted = await call(stock.AdjustStock, stock_pb2.AdjustStockRequest(
            sku_id="a", delta=5, reason="restock", request_id="restock-1"))
        assert adjusted.replayed and (await level("a")).on_hand == 15

        # Orders.
        def line(sku_id: str, quantity: int = 1) -> order_pb2.OrderLine:
            return order_pb2.OrderLine(sku_id=sku_id, quantity=quantity)

        one = await call(orders.PlaceOrder, order_pb2.PlaceOrderRequest(
            idempotency_key="k1", buyer_id="b1", lines=[line("a", 2)]))
        assert one.replayed
        batch = await call(orders.PlaceOrders, order_pb2.PlaceOrdersRequest(orders=[
            order_pb2.PlaceOrderRequest(idempotency_key="k2", buyer_id="b2", lines=[line("a")]),
            order_pb2.PlaceOrderRequest(idempotency_key="k3", buyer_id="b3",
                                        lines=[line("b")])]))
        assert [r.code for r in batch.results] == [REPLAYED, REPLAYED]
        columns = await call(orders.PlaceOrderColumns, order_pb2.PlaceOrderColumnsRequest(
            idempotency_keys=["k4"], buyer_ids=["b4"], line_counts=[1], sku_ids=["a"],
            quantities=[1]))
        assert list(columns.codes) == [REPLAYED]
        assert ((await level("a")).reserved, (await level("b")).reserved) == (4, 1)
        paid = await call(orders.PayOrder, order_pb2.PayOrderRequest(
            order_id=one.order.order_id, payment_reference="pay-1"))
        assert paid.order.status == order_pb2.ORDER_STATUS_PAID and paid.order.sequence == 2
        assert paid.order.payment_reference == "pay-1"
        with pytest.raises(grpc.aio.AioRpcError) as second:  # another payment, not a retry
            await orders.PayOrder(order_pb2.PayOrderRequest(
                order_id=one.order.order_id, payment_reference="pay-2"), metadata=admin)
        assert second.value.code() == grpc.StatusCode.ALREADY_EXISTS
        fulfilled = await call(orders.FulfillOrder,
                               order_pb2.FulfillOrderRequest(order_id=one.order.order_id))
        assert fulfilled.order.sequence == 3
        cancelled = await call(orders.CancelOrder, order_pb2.CancelOrderRequest(
            order_id=batch.results[0].order.order_id, reason="changed mind"))
        assert cancelled.order.status == order_pb2.ORDER_STATUS_CANCELLED
        assert cancelled.order.sequence == 2
        a = await level("a")
        assert (a.on_hand, a.reserved, a.sold) == (15, 1, 2)  # k4 held, k1 sold, k2 back

        # Carts (this merchant's lines hold stock for 30 s).
        def cart_item(request: type, sku_id: str = "", **fields: Any) -> Any:
            return request(buyer_id="c1", sku_id=sku_id, **fields) if sku_id else request(
                buyer_id="c1", **fields)

        added = await call(carts.AddItem, cart_item(cart_pb2.AddItemRequest, "c", quantity=1,
                                                    request_id="add-1"))
        assert added.replayed and [(x.sku_id, x.quantity) for x in added.cart.lines] == [
            ("c", 1)]
        await call(carts.AddItem, cart_item(cart_pb2.AddItemRequest, "b", quantity=1,
                                            request_id="add-2"))
        await call(carts.UpdateQuantity, cart_item(cart_pb2.UpdateQuantityRequest, "c",
                                                   quantity=3))
        await call(carts.RemoveItem, cart_item(cart_pb2.RemoveItemRequest, "b"))
        cart = (await carts.GetCart(cart_pb2.GetCartRequest(buyer_id="c1"),
                                    metadata=admin)).cart
        assert [(x.sku_id, x.quantity) for x in cart.lines] == [("c", 3)]
        assert ((await level("b")).reserved, (await level("c")).reserved) == (1, 3)
        checkout = await call(carts.Checkout, cart_pb2.CheckoutRequest(buyer_id="c1",
                                                                       idempotency_key="k5"))
        assert checkout.replayed
        await call(carts.AddItem, cart_pb2.AddItemRequest(buyer_id="c2", sku_id="c",
                                                          quantity=2, request_id="add-3"))
        cleared = await call(carts.ClearCart, cart_pb2.ClearCartRequest(buyer_id="c2"))
        assert not cleared.cart.lines
        async def given_back() -> None:  # the cleared cart's holds go once it is durable
            assert (await level("c")).reserved == 3  # the checkout's order alone

        await eventually(given_back)

        # Campaigns.
        start_ms = int(time.time() * 1000) + 3_600_000
        made = await call(campaigns.CreateCampaign, campaign_pb2.CreateCampaignRequest(
            campaign_id="sale-1", name="Sale", starts_at_ms=start_ms,
            ends_at_ms=start_ms + 60_000, skus=[campaign_pb2.CampaignSku(
                sku_id="b", sale_price_minor=50, allotment=4)]))
        assert made.campaign.campaign_id == "sale-1"
        ended = await call(campaigns.EndCampaign,
                           campaign_pb2.EndCampaignRequest(campaign_id="sale-1"))
        assert ended.campaign.campaign_id == "sale-1"
        listed = await campaigns.ListCampaigns(campaign_pb2.ListCampaignsRequest(),
                                               metadata=admin)
        assert [x.campaign_id for x in listed.campaigns] == ["sale-1"]

        # Every mutating RPC of the contract had its first answer lost above.
        mutating = {f"/{service.full_name}/{method.name}"
                    for module in (merchant_pb2, stock_pb2, order_pb2, cart_pb2, campaign_pb2)
                    for service in module.DESCRIPTOR.services_by_name.values()
                    for method in service.methods if _mutating(method.name)}
        assert {method for method, _ in lossy.seen} == mutating
