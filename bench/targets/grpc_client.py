"""gRPC client for the engine and, with the same code path, for the bare echo server.

The echo server answers each request with its own bytes, so the client builds, sends and
parses the same messages for both: the difference in throughput is the engine's work.
"""

from __future__ import annotations

import itertools
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from flashtx.bench.scenarios import OrderSpec
from flashtx.bench.targets.base import Outcome, report_first_error
from flashtx_client.v1 import (
    common_pb2,
    order_pb2,
    order_pb2_grpc,
    stock_pb2,
    stock_pb2_grpc,
)

RESULT_CODES = {
    common_pb2.RESULT_CODE_OK: "ok",
    common_pb2.RESULT_CODE_REPLAYED: "replayed",
    common_pb2.RESULT_CODE_OUT_OF_STOCK: "out_of_stock",
    common_pb2.RESULT_CODE_LIMIT_EXCEEDED: "limit_exceeded",
    common_pb2.RESULT_CODE_IDEMPOTENCY_CONFLICT: "conflict",
    common_pb2.RESULT_CODE_INVALID_ARGUMENT: "invalid",
    common_pb2.RESULT_CODE_NOT_FOUND: "not_found",
    common_pb2.RESULT_CODE_OVERLOADED: "overloaded",
    common_pb2.RESULT_CODE_UNAVAILABLE: "unavailable",
    common_pb2.RESULT_CODE_FAILED_PRECONDITION: "failed_precondition",
}
STATUS_CODES = {
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
}
REASONS = {
    "OUT_OF_STOCK": "out_of_stock",
    "LIMIT_EXCEEDED": "limit_exceeded",
    "CAMPAIGN_NOT_ACTIVE": "campaign_not_active",
}
CHANNEL_OPTIONS = [
    # Without a local pool, channels to one address share one subchannel (one TCP stream).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
ORDER_SERVICE = "/flashtx.v1.OrderService/"


def build_columns(orders: list[OrderSpec],
                  campaign_id: str = "") -> order_pb2.PlaceOrderColumnsRequest:
    request = order_pb2.PlaceOrderColumnsRequest(
        idempotency_keys=[o.idempotency_key for o in orders],
        buyer_ids=[o.buyer_id for o in orders],
        line_counts=[len(o.lines) for o in orders],
        sku_ids=[sku for o in orders for sku, _ in o.lines],
        quantities=[qty for o in orders for _, qty in o.lines],
    )
    if campaign_id:
        request.campaign_ids.extend([campaign_id] * len(orders))
    return request


def build_request(order: OrderSpec, campaign_id: str = "") -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        idempotency_key=order.idempotency_key,
        buyer_id=order.buyer_id,
        lines=[order_pb2.OrderLine(sku_id=sku, quantity=qty) for sku, qty in order.lines],
        campaign_id=campaign_id,
    )


def error_code(error: grpc.aio.AioRpcError) -> str:
    """One outcome code for a failed call; FAILED_PRECONDITION is told apart by ErrorInfo."""
    code = error.code()
    if code != grpc.StatusCode.FAILED_PRECONDITION:
        if code not in STATUS_CODES:
            report_first_error("grpc", error)
        return STATUS_CODES.get(code, "error")
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return REASONS.get(info.reason, "failed_precondition")
    return "failed_precondition"


class GrpcClient:
    def __init__(self, kind: str, info: dict[str, Any]) -> None:
        self.name = kind
        self.checks_replay = kind == "engine"
        self._info = info
        # Engine orders name the run's campaign when there is one (flash-sale --buckets).
        self._campaign_id = str(info.get("campaign_id", "")) if kind == "engine" else ""
        self._metadata = (("authorization", f"Bearer {info['api_key']}"),)
        self._timeout_s = float(info.get("rpc_timeout_s", 30.0))
        self._columns = bool(info.get("columns", False))
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: itertools.cycle[Any] = itertools.cycle([None])

    async def open(self) -> None:
        count = int(self._info.get("channels", 4))
        self._channels = [
            grpc.aio.insecure_channel(self._info["address"], options=CHANNEL_OPTIONS)
            for _ in range(count)
        ]
        self._stubs = itertools.cycle([self._stubs_for(channel) for channel in self._channels])

    def _stubs_for(self, channel: grpc.aio.Channel) -> dict[str, Any]:
        if self.name == "echo":
            return {
                "place_one": channel.unary_unary(
                    ORDER_SERVICE + "PlaceOrder",
                    request_serializer=order_pb2.PlaceOrderRequest.SerializeToString,
                    response_deserializer=order_pb2.PlaceOrderRequest.FromString,
                ),
                "place_many": channel.unary_unary(
                    ORDER_SERVICE + "PlaceOrders",
                    request_serializer=order_pb2.PlaceOrdersRequest.SerializeToString,
                    response_deserializer=order_pb2.PlaceOrdersRequest.FromString,
                ),
                "place_columns": channel.unary_unary(
                    ORDER_SERVICE + "PlaceOrderColumns",
                    request_serializer=order_pb2.PlaceOrderColumnsRequest.SerializeToString,
                    response_deserializer=order_pb2.PlaceOrderColumnsRequest.FromString,
                ),
                "get_stock": channel.unary_unary(
                    "/flashtx.v1.StockService/GetStock",
                    request_serializer=stock_pb2.GetStockRequest.SerializeToString,
                    response_deserializer=stock_pb2.GetStockRequest.FromString,
                ),
            }
        orders = order_pb2_grpc.OrderServiceStub(channel)
        stock = stock_pb2_grpc.StockServiceStub(channel)
        return {
            "place_one": orders.PlaceOrder,
            "place_many": orders.PlaceOrders,
            "place_columns": orders.PlaceOrderColumns,
            "get_stock": stock.GetStock,
            "pay": orders.PayOrder,
            "cancel": orders.CancelOrder,
        }

    async def place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]:
        stubs = next(self._stubs)
        try:
            if batch and self._columns:
                response = await stubs["place_columns"](
                    build_columns(orders, self._campaign_id), metadata=self._metadata,
                    timeout=self._timeout_s)
                return self._column_outcomes(orders, response)
            if batch:
                request = order_pb2.PlaceOrdersRequest(
                    orders=[build_request(o, self._campaign_id) for o in orders]
                )
                response = await stubs["place_many"](
                    request, metadata=self._metadata, timeout=self._timeout_s
                )
                return self._batch_outcomes(orders, response)
            return [await self._place_one(stubs, order) for order in orders]
        except grpc.aio.AioRpcError as error:
            return [(error_code(error), "")] * len(orders)

    async def _place_one(self, stubs: dict[str, Any], order: OrderSpec) -> Outcome:
        try:
            response = await stubs["place_one"](
                build_request(order, self._campaign_id),
                metadata=self._metadata,
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            return (error_code(error), "")
        if self.name == "echo":
            return ("ok", response.idempotency_key)
        return ("replayed" if response.replayed else "ok", response.order.order_id)

    def _batch_outcomes(self, orders: list[OrderSpec], response: Any) -> list[Outcome]:
        if self.name == "echo":
            return [("ok", item.idempotency_key) for item in response.orders]
        results = list(response.results)
        if len(results) != len(orders):
            return [("error", "")] * len(orders)
        return [(RESULT_CODES.get(r.code, "error"), r.order.order_id) for r in results]

    def _column_outcomes(self, orders: list[OrderSpec], response: Any) -> list[Outcome]:
        if self.name == "echo":
            return [("ok", key) for key in response.idempotency_keys]
        codes, order_ids = list(response.codes), list(response.order_ids)
        if len(codes) != len(orders) or len(order_ids) != len(orders):
            return [("error", "")] * len(orders)
        return [(RESULT_CODES.get(code, "error"), order_id)
                for code, order_id in zip(codes, order_ids, strict=True)]

    async def read(self, sku_id: str) -> str:
        request = stock_pb2.GetStockRequest(
            sku_id=sku_id, consistency=common_pb2.READ_CONSISTENCY_SNAPSHOT
        )
        return await self._call("get_stock", request)

    async def pay(self, order_ref: str) -> str:
        if self.name == "echo":
            return "ok"
        return await self._call("pay", order_pb2.PayOrderRequest(order_id=order_ref))

    async def cancel(self, order_ref: str, order: OrderSpec) -> str:
        if self.name == "echo":
            return "ok"
        request = order_pb2.CancelOrderRequest(order_id=order_ref, reason="bench")
        return await self._call("cancel", request)

    async def _call(self, method: str, request: Any) -> str:
        stubs = next(self._stubs)
        try:
            await stubs[method](request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            return error_code(error)
        return "ok"

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
