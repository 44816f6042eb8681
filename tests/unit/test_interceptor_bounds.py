"""The interceptor's bound on concurrent unary calls, on a real grpc.aio server in this
process (no Ray): past the bound a call is refused at once with RESOURCE_EXHAUSTED and a
RetryInfo hint, and served again once calls finish."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2, status_pb2

from flashtx.adapters.grpc_errors import FlashtxInterceptor
from flashtx.engine.merchants import Principal, Scope
from flashtx_client.v1 import stock_pb2, stock_pb2_grpc


class SlowStock(stock_pb2_grpc.StockServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def GetStock(self, request: object, context: object) -> stock_pb2.GetStockResponse:
        self.waiting += 1
        await self.release.wait()
        return stock_pb2.GetStockResponse(level=stock_pb2.StockLevel(sku_id="s"))


async def authenticate(token: str) -> Principal:
    return Principal("m", "k", frozenset({Scope.CHANNEL}), 900)


async def test_calls_past_the_bound_are_refused_with_a_retry_hint() -> None:
    servicer = SlowStock()
    server = grpc.aio.server(interceptors=[FlashtxInterceptor(authenticate, None, 2, 75)])
    stock_pb2_grpc.add_StockServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    metadata = (("authorization", "Bearer ftx1.m.k.secret"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = stock_pb2_grpc.StockServiceStub(channel)
            request = stock_pb2.GetStockRequest(sku_id="s")
            held = [asyncio.ensure_future(stub.GetStock(request, metadata=metadata))
                    for _ in range(2)]
            while servicer.waiting < 2:
                await asyncio.sleep(0.01)
            try:
                await stub.GetStock(request, metadata=metadata, timeout=5)
                raise AssertionError("the third call was served")
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                details = status_pb2.Status.FromString(
                    dict(error.trailing_metadata())["grpc-status-details-bin"]).details
                retry = error_details_pb2.RetryInfo()
                assert any(d.Unpack(retry) for d in details)
                assert retry.retry_delay.ToMilliseconds() == 75
            servicer.release.set()
            assert all(r.level.sku_id == "s" for r in await asyncio.gather(*held))
            served = await stub.GetStock(request, metadata=metadata, timeout=5)
            assert served.level.sku_id == "s"
    finally:
        await server.stop(None)
