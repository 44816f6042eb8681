"""Metrics reach Ray's Prometheus endpoint (the one a Prometheus server scrapes and the
Ray dashboard's metrics view reads)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request

import grpc
import pytest

from flashtx.client import Client
from protos.flashtx.v1 import order_pb2, stock_pb2
from tests.integration.conftest import add_skus

pytestmark = pytest.mark.cluster


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_order_metrics_are_exported(engine, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="m", name="M", price_minor=5, on_hand=3))
    for n in range(5):  # 3 accepted, 2 refused
        with contextlib.suppress(grpc.aio.AioRpcError):  # the refusals are part of it
            await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                idempotency_key=f"k{n}", buyer_id=f"b{n}",
                lines=[order_pb2.OrderLine(sku_id="m", quantity=1)]))
    wanted = ['ray_flashtx_orders_total', 'outcome="OK"', 'outcome="OUT_OF_STOCK"',
              "ray_flashtx_rpc_latency_seconds_bucket", 'method="PlaceOrder"',
              "ray_flashtx_batch_items_bucket", 'hop="commit"', "ray_flashtx_commit_seconds",
              "ray_flashtx_actors"]
    deadline = time.monotonic() + 60
    while True:
        body = await asyncio.to_thread(scrape, engine.config.metrics_export_port)
        missing = [w for w in wanted if w not in body]
        if not missing:
            break
        assert time.monotonic() < deadline, f"never exported: {missing}"
        await asyncio.sleep(1)


async def test_status_shows_the_live_deployment(engine, shop: Client) -> None:
    from rich.console import Console

    from flashtx.status import collect, render

    snapshot = await asyncio.to_thread(collect, 0.2)
    console = Console(width=160, record=True)
    console.print(render(snapshot))
    screen = console.export_text()
    for name in ("gateway-0", "gateway-1", "stock-0", "stock-2", "order-1", "relay"):
        assert name in screen
    assert "nodes alive" in screen
    # Every actor answered (connectors of earlier tests may show their own failures).
    assert "ActorError" not in screen and "TimeoutError" not in screen
