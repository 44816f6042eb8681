"""A small Python client: one channel, a stub per service, the key in metadata.

    async with Client("127.0.0.1:50051", api_key) as client:
        order = await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(...))
"""

from __future__ import annotations

from typing import Any

import grpc

from protos.flashtx.v1 import (
    campaign_pb2_grpc,
    cart_pb2_grpc,
    merchant_pb2_grpc,
    order_pb2_grpc,
    stock_pb2_grpc,
)

__all__ = ["Client"]


class _Authorized:
    """A stub whose every call carries the key. (A client interceptor would do the same,
    but grpc.aio turns some failed intercepted calls into CANCELLED.)"""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        metadata = self._metadata

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs["metadata"] = (*metadata, *kwargs.get("metadata", ()))
            return call(request, **kwargs)

        return invoke


class Client:
    def __init__(self, address: str, api_key: str, **channel_options: Any) -> None:
        self.token = api_key
        self.channel = grpc.aio.insecure_channel(address, options=list(channel_options.items()))
        metadata = (("authorization", f"Bearer {api_key}"),)
        self.merchants = _Authorized(merchant_pb2_grpc.MerchantServiceStub(self.channel), metadata)
        self.stock = _Authorized(stock_pb2_grpc.StockServiceStub(self.channel), metadata)
        self.orders = _Authorized(order_pb2_grpc.OrderServiceStub(self.channel), metadata)
        self.carts = _Authorized(cart_pb2_grpc.CartServiceStub(self.channel), metadata)
        self.campaigns = _Authorized(campaign_pb2_grpc.CampaignServiceStub(self.channel),
                                     metadata)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
