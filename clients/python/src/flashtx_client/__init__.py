"""flashtx-client: the typed Python client of the flashtx API. One channel, a typed
async stub per service (``flashtx_client.v1.*_pb2_grpc``, with ``*.pyi`` types), the key in
metadata. No engine and no Ray: grpcio, protobuf and grpcio-status.

    from flashtx_client import Client, FlashtxError
    from flashtx_client.v1 import order_pb2

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
wants to see every refusal. A request with a ``request_id`` field left empty gets one
(random) before it is sent, so that every retry of it, by gRPC or by the caller with the
same message, is applied once.

A refused call raises ``FlashtxError`` (a ``grpc.aio.AioRpcError``) with the ErrorInfo
``reason`` (``OUT_OF_STOCK``, ``IDEMPOTENCY_CONFLICT``, …), its ``metadata`` and the
RetryInfo delay read from the trailers:

    try:
        await client.orders.PlaceOrder(request)
    except FlashtxError as error:
        if error.reason == "OUT_OF_STOCK": ...

Every unary call has a deadline (``deadline_s``: ``DEADLINE_S``, 30 s, unless the client
or the call says otherwise); the channel sends keepalive pings during calls, so a
connection whose peer vanished fails its calls instead of waiting.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from flashtx_client.v1 import (
    campaign_pb2_grpc,
    cart_pb2_grpc,
    event_pb2_grpc,
    merchant_pb2_grpc,
    order_pb2_grpc,
    stock_pb2_grpc,
)

__all__ = ["DEADLINE_S", "RETRIED", "Client", "FlashtxError", "service_config"]

DEADLINE_S = 30.0
# Pings during calls; the gateways accept one every 20 s (their keepalive settings).
KEEPALIVE = (("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000))
STREAMS = frozenset({"WatchEvents"})  # no deadline of the client's own: they last

# Methods a retry cannot apply twice: idempotency keys (orders, checkouts), absolute
# values (UpsertSkus, UpdateMerchant), state transitions that answer "already done"
# (pay, cancel, fulfil, revoke, end), reads, and the calls a request_id makes safe to
# repeat (AddItem, AdjustStock, CreateMerchant, CreateApiKey: the client fills one in
# when the caller left it empty). Not here: CreateCampaign.
RETRIED: dict[str, tuple[str, ...]] = {
    "flashtx.v1.OrderService": ("PlaceOrder", "PlaceOrders", "PlaceOrderColumns", "GetOrder",
                                "ListOrders", "PayOrder", "CancelOrder", "FulfillOrder"),
    "flashtx.v1.StockService": ("UpsertSkus", "GetStock", "GetStockLevels", "AdjustStock"),
    "flashtx.v1.CartService": ("GetCart", "ClearCart", "RemoveItem", "UpdateQuantity",
                               "Checkout", "AddItem"),
    "flashtx.v1.MerchantService": ("GetMerchant", "UpdateMerchant", "RevokeApiKey",
                                   "CreateMerchant", "CreateApiKey"),
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


class FlashtxError(grpc.aio.AioRpcError):
    """A call the engine refused: the gRPC status (``code()``, ``details()``), and from
    the ``google.rpc.Status`` in the trailers its ErrorInfo ``reason`` and ``metadata``
    and its RetryInfo delay (``retry_after_ms``; None when it names none)."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.code(), error.initial_metadata(), error.trailing_metadata(),
                         error.details(), error.debug_error_string())
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.retry_after_ms: int | None = None
        for key, value in error.trailing_metadata() or ():
            if key != "grpc-status-details-bin" or not isinstance(value, bytes):
                continue
            for detail in status_pb2.Status.FromString(value).details:
                info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    self.reason, self.metadata = info.reason, dict(info.metadata)
                elif detail.Unpack(retry):
                    self.retry_after_ms = retry.retry_delay.ToMilliseconds()

    def as_dict(self) -> dict[str, Any]:
        """The refusal as JSON-ready data (what the admin CLI prints)."""
        found: dict[str, Any] = {"status": self.code().name, "message": self.details()}
        if self.reason:
            found.update(reason=self.reason, metadata=self.metadata)
        return found


async def _refused_as_flashtx_error(call: Any) -> Any:
    try:
        return await call
    except FlashtxError:
        raise
    except grpc.aio.AioRpcError as error:
        raise FlashtxError(error) from None


def _with_request_id(request: Any) -> None:
    """A request with an empty ``request_id`` field gets a random one: its retries (the
    same message) are then applied once."""
    if "request_id" in type(request).DESCRIPTOR.fields_by_name and not request.request_id:
        request.request_id = f"c-{secrets.token_hex(12)}"


class _Authorized:
    """A stub whose every call carries the key and a deadline, and raises FlashtxError.
    (A client interceptor would do the same, but grpc.aio turns some failed intercepted
    calls into CANCELLED.)"""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...],
                 deadline_s: float | None) -> None:
        self._stub = stub
        self._metadata = metadata
        self._deadline_s = deadline_s

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        metadata, deadline_s = self._metadata, self._deadline_s
        if method in STREAMS:
            def stream(request: Any, **kwargs: Any) -> Any:
                kwargs["metadata"] = (*metadata, *kwargs.get("metadata", ()))
                return call(request, **kwargs)

            return stream

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs["metadata"] = (*metadata, *kwargs.get("metadata", ()))
            if deadline_s is not None:
                kwargs.setdefault("timeout", deadline_s)
            _with_request_id(request)
            return _refused_as_flashtx_error(call(request, **kwargs))

        return invoke


_DEFAULT: Any = object()  # "the module's DEADLINE_S as it is when the client is made"


class Client:
    """The API's services as typed async stubs: ``merchants``, ``stock``, ``orders``,
    ``carts``, ``campaigns``, ``events``."""

    def __init__(self, address: str, api_key: str, *, tls: bool = False,
                 root_certificates: bytes | None = None,
                 certificate_chain: bytes | None = None, private_key: bytes | None = None,
                 retries: bool = False, deadline_s: float | None = _DEFAULT,
                 **channel_options: Any) -> None:
        """`deadline_s`: of every unary call that passes no `timeout` (default:
        ``DEADLINE_S``; None: none); `channel_options`: gRPC channel arguments (keepalive
        ones replace the defaults)."""
        if deadline_s is _DEFAULT:
            deadline_s = DEADLINE_S
        self.token = api_key
        options = [*((k, v) for k, v in KEEPALIVE if k not in channel_options),
                   *channel_options.items()]
        if retries:
            options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config())]
        if tls or root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key,
                                                       certificate_chain)
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=options)
        metadata = (("authorization", f"Bearer {api_key}"),)
        channel = self.channel
        # Each stub wrapped (key, deadline, request id, FlashtxError) and typed as the
        # generated async stub: requests and answers are checked by mypy.
        self.merchants = cast("merchant_pb2_grpc.MerchantServiceAsyncStub", _Authorized(
            merchant_pb2_grpc.MerchantServiceStub(channel), metadata, deadline_s))
        self.stock = cast("stock_pb2_grpc.StockServiceAsyncStub", _Authorized(
            stock_pb2_grpc.StockServiceStub(channel), metadata, deadline_s))
        self.orders = cast("order_pb2_grpc.OrderServiceAsyncStub", _Authorized(
            order_pb2_grpc.OrderServiceStub(channel), metadata, deadline_s))
        self.carts = cast("cart_pb2_grpc.CartServiceAsyncStub", _Authorized(
            cart_pb2_grpc.CartServiceStub(channel), metadata, deadline_s))
        self.campaigns = cast("campaign_pb2_grpc.CampaignServiceAsyncStub", _Authorized(
            campaign_pb2_grpc.CampaignServiceStub(channel), metadata, deadline_s))
        self.events = cast("event_pb2_grpc.EventServiceAsyncStub", _Authorized(
            event_pb2_grpc.EventServiceStub(channel), metadata, deadline_s))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
