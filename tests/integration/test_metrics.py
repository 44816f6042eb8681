"""Metrics reach Ray's Prometheus endpoint (the one a Prometheus server scrapes and the
Ray dashboard's metrics view reads)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flashtx.app import free_port
from flashtx_client import Client
from flashtx_client.v1 import campaign_pb2, cart_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus

pytestmark = pytest.mark.cluster


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def total(body: str, sample: str, **labels: str) -> float:
    """Sum of the samples named `sample` whose labels include `labels`."""
    return sum(value for family in text_string_to_metric_families(body)
               for name, tags, value, *_ in family.samples
               if name == sample and labels.items() <= tags.items())


# (sample, labels, at least how much this test adds to it)
EXPECTED = [
    ("ray_flashtx_orders_total", {"outcome": "OK"}, 3),
    ("ray_flashtx_orders_total", {"outcome": "OUT_OF_STOCK"}, 2),
    ("ray_flashtx_rpc_latency_seconds_count", {"method": "PlaceOrder"}, 5),
    ("ray_flashtx_rpc_latency_seconds_count", {"method": "AddItem"}, 1),
    ("ray_flashtx_batch_items_count", {"hop": "commit"}, 1),
    ("ray_flashtx_batch_items_count", {"hop": "gateway_to_order_cart"}, 1),
    ("ray_flashtx_commit_seconds_count", {}, 1),
    ("ray_flashtx_units_moved_total", {"why": "campaign"}, 4),
]


async def test_order_metrics_are_exported(engine, shop: Client) -> None:
    """Each counter this test checks rises by at least what the test itself did, so the
    check does not lean on what earlier tests exported."""
    port = engine.config.metrics_export_port
    before = await asyncio.to_thread(scrape, port)
    await add_skus(shop, stock_pb2.Sku(sku_id="m", name="M", price_minor=5, on_hand=3))
    for n in range(5):  # 3 accepted, 2 refused
        with contextlib.suppress(grpc.aio.AioRpcError):  # the refusals are part of it
            await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                idempotency_key=f"k{n}", buyer_id=f"b{n}",
                lines=[order_pb2.OrderLine(sku_id="m", quantity=1)]))
    # A campaign moves units into its buckets; a cart is held.
    await add_skus(shop, stock_pb2.Sku(sku_id="c", name="C", price_minor=5, on_hand=10))
    now_ms = int(time.time() * 1000)
    await shop.campaigns.CreateCampaign(campaign_pb2.CreateCampaignRequest(
        campaign_id="metrics", starts_at_ms=now_ms, ends_at_ms=now_ms + 600_000, buckets=2,
        skus=[campaign_pb2.CampaignSku(sku_id="c", sale_price_minor=1, allotment=4)]))
    await shop.carts.AddItem(cart_pb2.AddItemRequest(buyer_id="b", sku_id="m", quantity=1))
    # Ray's metrics agent exports every few seconds; on a loaded machine (a core busy,
    # the other lanes' deployments) it has taken over a minute.
    deadline = time.monotonic() + 120
    while True:
        body = await asyncio.to_thread(scrape, port)
        short = [(sample, labels, total(body, sample, **labels) - total(before, sample, **labels))
                 for sample, labels, rise in EXPECTED
                 if total(body, sample, **labels) - total(before, sample, **labels) < rise]
        if not short and "ray_flashtx_actors" in body and "ray_flashtx_carts{" in body and (
                'ray_flashtx_actor_start_time_seconds{' in body and 'kind="OrderShard"' in body):
            break
        assert time.monotonic() < deadline, f"never exported: {short}" + str(
            [line[:200] for line in body.splitlines() if "start_time" in line][:6])
        await asyncio.sleep(0.5)


async def test_status_shows_the_live_deployment(engine, shop: Client) -> None:
    from rich.console import Console

    from flashtx.status import collect, render

    snapshot = await asyncio.to_thread(collect, 0.2)
    console = Console(width=160, record=True)
    console.print(render(snapshot))
    screen = console.export_text()
    for name in ("gateway-0", "gateway-1", "stock-0", "stock-1", "order-1", "relay"):
        assert name in screen
    assert "nodes alive" in screen
    # Every actor answered (connectors of earlier tests may show their own failures).
    assert "ActorError" not in screen and "TimeoutError" not in screen


async def test_a_real_prometheus_scrapes_the_engine(engine, shop: Client, tmp_path) -> None:
    if shutil.which("prometheus") is None:
        # CI installs it (.ci/run) and requires it; elsewhere the test may be skipped.
        assert not os.environ.get("FLASHTX_TEST_REQUIRE_PROMETHEUS"), "prometheus missing"
        pytest.skip("no prometheus binary here (apt-get install prometheus)")
    await add_skus(shop, stock_pb2.Sku(sku_id="p", name="P", price_minor=5, on_hand=3))
    await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
        idempotency_key="prom", buyer_id="b", lines=[order_pb2.OrderLine(sku_id="p",
                                                                          quantity=1)]))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: ray\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{engine.config.metrics_export_port}']}}]\n")
    server = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = (f"http://127.0.0.1:{port}/api/v1/query?query="
                 "sum(ray_flashtx_orders_total)")
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = json.loads(await asyncio.to_thread(
                    lambda: urllib.request.urlopen(query, timeout=2).read()))
                if answer["data"]["result"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus never saw flashtx's metrics"
            await asyncio.sleep(1)
        assert float(answer["data"]["result"][0]["value"][1]) >= 1
    finally:
        server.terminate()
        server.wait(timeout=10)
