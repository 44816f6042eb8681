"""The Python client against a tiny in-process gRPC server: its retry policy repeats an
idempotent call refused with UNAVAILABLE (waiting as the server's pushback asks), never
a call that is not safe to repeat; TLS channels verify the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from flashtx.adapters.grpc_errors import to_status
from flashtx.engine.errors import Overloaded
from flashtx_client import DEADLINE_S, RETRIED, Client, FlashtxError
from flashtx_client.v1 import campaign_pb2, cart_pb2, order_pb2


class _FlakyOrders(grpc.GenericRpcHandler):
    """Refuses the first `failures` calls of each method (RESOURCE_EXHAUSTED with a
    pushback, as the gateway does), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.request_ids: list[str] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method.rsplit("/", 1)[-1]

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls[method] = self.calls.get(method, 0) + 1
            if self.calls[method] <= self.failures:
                status = to_status(Overloaded("busy", retry_after_ms=10))
                await context.abort(status.code, status.details, status.trailing_metadata)
            if method == "PlaceOrder":
                return order_pb2.PlaceOrderResponse(
                    order=order_pb2.Order(order_id="o1")).SerializeToString()
            if method == "AddItem":
                self.request_ids.append(cart_pb2.AddItemRequest.FromString(request).request_id)
            return cart_pb2.AddItemResponse().SerializeToString()

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, _FlakyOrders]]:
    handler = _FlakyOrders(failures=2)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", handler
    await server.stop(None)


async def test_idempotent_calls_are_retried_others_are_not(flaky) -> None:
    address, handler = flaky
    async with Client(address, "key", retries=True) as client:
        placed = await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="k", buyer_id="b"))
        assert placed.order.order_id == "o1" and handler.calls["PlaceOrder"] == 3
        # An add is safe to repeat with its request_id: the client fills one in, and
        # every attempt carries the same (the server applies it once).
        await client.carts.AddItem(cart_pb2.AddItemRequest(buyer_id="b", sku_id="s",
                                                           quantity=1))
        assert handler.calls["AddItem"] == 3
        assert len(set(handler.request_ids)) == 1 and handler.request_ids[0]
        # A call that no key or id makes safe to repeat is not retried.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.campaigns.CreateCampaign(campaign_pb2.CreateCampaignRequest())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert handler.calls["CreateCampaign"] == 1
    assert "CreateCampaign" not in RETRIED["flashtx.v1.CampaignService"]


async def test_without_retries_every_refusal_is_seen(flaky) -> None:
    address, handler = flaky
    async with Client(address, "key") as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(idempotency_key="k"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(caught.value.trailing_metadata())["grpc-retry-pushback-ms"] == "10"
    assert handler.calls["PlaceOrder"] == 1


async def test_a_tls_channel_refuses_a_server_it_cannot_verify(flaky) -> None:
    address, _ = flaky  # a plaintext server: the TLS handshake cannot succeed
    async with Client(address, "key", tls=True) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.orders.GetOrder(order_pb2.GetOrderRequest(order_id="o1"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_refusal_is_a_flashtx_error_with_its_reason_and_delay(flaky) -> None:
    address, _ = flaky
    async with Client(address, "key") as client:
        with pytest.raises(FlashtxError) as caught:
            await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(idempotency_key="k"))
    refused = caught.value
    assert isinstance(refused, grpc.aio.AioRpcError)  # callers catching that still do
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "OVERLOADED" and refused.retry_after_ms == 10
    assert refused.as_dict()["reason"] == "OVERLOADED"


class _Silent(grpc.GenericRpcHandler):
    """A server that takes every call and never answers."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await asyncio.Event().wait()
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)


async def test_a_call_to_a_server_that_never_answers_ends_by_the_default_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No deadline named by the client or the call: the default one ends it (made short
    here: the client reads ``DEADLINE_S`` when it is made)."""
    import flashtx_client

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Silent(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert 0 < DEADLINE_S < 120  # every unary call has one unless the caller says
        monkeypatch.setattr(flashtx_client, "DEADLINE_S", 0.5)
        async with Client(f"127.0.0.1:{port}", "key") as client:
            with pytest.raises(FlashtxError) as caught:
                await client.orders.GetOrder(order_pb2.GetOrderRequest(order_id="o1"))
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop(None)
