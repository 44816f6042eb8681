"""A small Python client: one channel, a stub per service, the key in metadata.

    async with Client("127.0.0.1:50051", api_key) as client:
        order = await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(...))

    # TLS (the server's certificate checked against `root_certificates`), and mTLS
    # (this client's certificate too, for gateways started with tls_client_ca_file):
    Client(address, api_key, tls=True, root_certificates=ca_pem,
           certificate_chain=cert_pem, private_key=key_pem)

With ``retries=True``, calls that are safe to repeat (everything an idempotency key or
the call's own meaning makes idempotent: see ``RETRIED``) are retried by gRPC itself on
UNAVAILABLE and RESOURCE_EXHAUSTED, waiting as long as the server asks (its RetryInfo is
also sent as ``grpc-retry-pushback-ms``). Off by default: a load generator or a test
wants to see every refusal.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from flashtx.protos.flashtx.v1 import (
    campaign_pb2_grpc,
    cart_pb2_grpc,
    event_pb2_grpc,
    merchant_pb2_grpc,
    order_pb2_grpc,
    stock_pb2_grpc,
)

__all__ = ["RETRIED", "Client", "service_config"]

# Methods a retry cannot apply twice: idempotency keys (orders, checkouts), absolute
# values (UpsertSkus, UpdateMerchant), state transitions that answer "already done"
# (pay, cancel, fulfil, revoke, end) and reads. Not here: AddItem, AdjustStock,
# CreateMerchant and CreateApiKey, which are safe to retry only with a request_id (retry
# them yourself with the same id: docs/api.md), and CreateCampaign.
RETRIED: dict[str, tuple[str, ...]] = {
    "flashtx.v1.OrderService": ("PlaceOrder", "PlaceOrders", "PlaceOrderColumns", "GetOrder",
                                "ListOrders", "PayOrder", "CancelOrder", "FulfillOrder"),
    "flashtx.v1.StockService": ("UpsertSkus", "GetStock", "GetStockLevels"),
    "flashtx.v1.CartService": ("GetCart", "ClearCart", "RemoveItem", "UpdateQuantity",
                               "Checkout"),
    "flashtx.v1.MerchantService": ("GetMerchant", "UpdateMerchant", "RevokeApiKey"),
    "flashtx.v1.CampaignService": ("GetCampaign", "ListCampaigns", "EndCampaign"),
}


def service_config(max_attempts: int = 5) -> str:
    """The gRPC service config of ``RETRIED``: exponential backoff from 50 ms to 2 s on
    UNAVAILABLE and RESOURCE_EXHAUSTED (server pushback overrides the backoff)."""
    names = [{"service": service, "method": method}
             for service, methods in RETRIED.items() for method in methods]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": {
        "maxAttempts": max_attempts, "initialBackoff": "0.05s", "maxBackoff": "2s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE",
                                                         "RESOURCE_EXHAUSTED"]}}]})


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
    def __init__(self, address: str, api_key: str, *, tls: bool = False,
                 root_certificates: bytes | None = None,
                 certificate_chain: bytes | None = None, private_key: bytes | None = None,
                 retries: bool = False, **channel_options: Any) -> None:
        self.token = api_key
        options = list(channel_options.items())
        if retries:
            options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config())]
        if tls or root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key,
                                                       certificate_chain)
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=options)
        metadata = (("authorization", f"Bearer {api_key}"),)
        self.merchants = _Authorized(merchant_pb2_grpc.MerchantServiceStub(self.channel), metadata)
        self.stock = _Authorized(stock_pb2_grpc.StockServiceStub(self.channel), metadata)
        self.orders = _Authorized(order_pb2_grpc.OrderServiceStub(self.channel), metadata)
        self.carts = _Authorized(cart_pb2_grpc.CartServiceStub(self.channel), metadata)
        self.campaigns = _Authorized(campaign_pb2_grpc.CampaignServiceStub(self.channel),
                                     metadata)
        self.events = _Authorized(event_pb2_grpc.EventServiceStub(self.channel), metadata)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
