"""Traces: one PlaceOrders call, made with a client's `traceparent`, shows up as the
gateway's call span (in the client's trace), the gateway's batch linked to it, the order
shard's placing and the stock shard's reserve as children of that batch, and the journal's
commit linked to the placing. Read from each engine process's in-memory exporter
(`trace_exporter = "memory"`), in a deployment of its own (tracing is set per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, run_on_a_new_database

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

_ENGINE = f"""
import asyncio, json, sys
import ray
from flashtx.app import LocalEngine
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2

engine = LocalEngine.start(postgres_dsn=sys.argv[1], redis_url="none",
                           trace_exporter="memory", stock_shards=1, order_shards=1)

async def main():
    async with Client(engine.address, engine.operator_key) as operator:
        created = await operator.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id="traced", name="Traced"))
    async with Client(engine.address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[
            stock_pb2.Sku(sku_id="s", name="S", price_minor=1, on_hand=10)]))
        placed = await shop.orders.PlaceOrders(order_pb2.PlaceOrdersRequest(orders=[
            order_pb2.PlaceOrderRequest(idempotency_key=f"k{{n}}", buyer_id=f"b{{n}}",
                                        lines=[order_pb2.OrderLine(sku_id="s", quantity=1)])
            for n in range(3)]), metadata=(("traceparent", "00-{TRACE_ID}-{CLIENT_SPAN}-01"),))
        assert all(r.order.order_id for r in placed.results), placed

asyncio.run(main())
topology = engine.topology
spans = {{"gateway": ray.get(topology.gateways[0].spans.remote()),
         "order": ray.get(topology.orders.handles[0].spans.remote()),
         "stock": ray.get(topology.stock.handles[0].spans.remote())}}
print("SPANS " + json.dumps(spans), flush=True)
engine.stop()
"""


def test_a_place_orders_call_is_traced_across_the_hops_to_its_commit(tmp_path: Path) -> None:
    def run(dsn: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _ENGINE, dsn], cwd=REPO_ROOT,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(tmp_path)},
            capture_output=True, text=True, timeout=240)

    done = run_on_a_new_database("traces", run)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spans = json.loads(next(line.split(" ", 1)[1] for line in done.stdout.splitlines()
                            if line.startswith("SPANS ")))
    gateway, order, stock = spans["gateway"], spans["order"], spans["stock"]

    # The call's span continues the client's trace.
    (call,) = [s for s in gateway if s["name"].endswith("OrderService/PlaceOrders")]
    assert (call["trace_id"], call["parent_id"]) == (TRACE_ID, CLIENT_SPAN)
    # The batch that carried its orders to the order shard links to it.
    (batch,) = [s for s in gateway if s["name"] == "gateway.batch"
                and [call["trace_id"], call["span_id"]] in s["links"]]
    assert batch["attributes"]["items"] == 3
    # The order shard's placing is the batch's child, the stock shard's reserve its child.
    (placing,) = [s for s in order if s["name"] == "order_shard.place"
                  and s["parent_id"] == batch["span_id"]]
    assert placing["trace_id"] == batch["trace_id"] and placing["attributes"]["orders"] == 3
    (reserve,) = [s for s in stock if s["name"] == "stock_shard.reserve"
                  and s["parent_id"] == placing["span_id"]]
    assert reserve["trace_id"] == batch["trace_id"] and reserve["attributes"]["orders"] == 3
    # The commit that made the orders durable links to the placing.
    commits = [s for s in order if s["name"] == "journal.commit"
               and [placing["trace_id"], placing["span_id"]] in s["links"]]
    assert len(commits) == 1 and commits[0]["attributes"]["entries"] >= 3
