"""The Python client against a tiny in-process gRPC server: its retry policy repeats an
idempotent call refused with UNAVAILABLE (waiting as the server's pushback asks), never
a call that is not safe to repeat; TLS channels verify the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from flashtx.adapters.grpc_errors import to_status
from flashtx.client import RETRIED, Client
from flashtx.engine.errors import Overloaded
from flashtx.protos.flashtx.v1 import cart_pb2, order_pb2


class _FlakyOrders(grpc.GenericRpcHandler):
    """Refuses the first `failures` calls of each method (RESOURCE_EXHAUSTED with a
    pushback, as the gateway does), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

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
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # adds again: not retried
            await client.carts.AddItem(cart_pb2.AddItemRequest(buyer_id="b", sku_id="s",
                                                               quantity=1))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert handler.calls["AddItem"] == 1
    assert "AddItem" not in RETRIED["flashtx.v1.CartService"]


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
