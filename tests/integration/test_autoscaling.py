"""The controller adds gateways when load rises and drains them when it falls, on the
real port, without failing a request beyond retryable codes."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from flashtx_client import Client
from flashtx_client.v1 import order_pb2, stock_pb2
from tests.integration.conftest import add_skus

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# What a client retries with the same idempotency key (docs/errors.md); a call's own
# deadline passing on a loaded machine is one of them, not a scaling failure.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


async def until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.25)


async def test_gateways_follow_the_load(engine, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=1, on_hand=10**9))
    # One request a second is a gateway's worth: any load at all (16 busy clients, on any
    # machine) asks for the maximum, and no load for the minimum. Scale-in waits for four
    # quiet rounds in a row, so a slow gateway start does not read as no load.
    config = engine.config.replace(gateways_min=2, gateways_max=4,
                                   autoscale_requests_per_s_per_gateway=1,
                                   autoscale_inflight_per_gateway=10**6,
                                   autoscale_interval_s=0.5, autoscale_scale_in_after=4)
    controller = engine.topology.start_controller(config)
    failures: list[str] = []
    done = asyncio.Event()

    async def client(worker: int) -> None:
        n = 0
        while not done.is_set():
            async with Client(engine.address, shop.token) as fresh:  # new connections spread
                for _ in range(20):
                    n += 1
                    try:
                        await fresh.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                            idempotency_key=f"scale-{worker}-{n}", buyer_id=f"b{worker}",
                            lines=[order_pb2.OrderLine(sku_id="a", quantity=1)]), timeout=10)
                    except grpc.aio.AioRpcError as error:
                        if error.code() not in RETRYABLE:
                            failures.append(error.code().name)

    async def gateways() -> list[int]:
        return (await controller.stats.remote())["gateways"]

    try:
        load = asyncio.gather(*(client(w) for w in range(16)))
        await until(lambda: _at_least(gateways, 4), timeout_s=180)
        done.set()
        await load
        await until(lambda: _exactly(gateways, 2), timeout_s=180)
        history = (await controller.stats.remote())["history"]
    finally:
        done.set()
        engine.topology.stop_controller()
    assert failures == []
    counts = [count for _, count in history]
    assert max(counts) == 4 and counts[-1] == 2
    assert all(b >= a - 1 for a, b in zip(counts, counts[1:], strict=False))  # in one by one


async def _at_least(gateways, count: int) -> bool:
    return len(await gateways()) >= count


async def _exactly(gateways, count: int) -> bool:
    return len(await gateways()) == count
