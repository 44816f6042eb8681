"""Node loss on a multi-node Ray cluster on one machine (ray.cluster_utils.Cluster): the
node that holds shards is removed mid-sale; Ray restarts them on the surviving node, they
rebuild from Postgres, and clients retrying with their idempotency keys finish the sale.

Run by tests/integration/test_node_loss.py in its own process (it needs its own Ray
cluster): python -m tests.integration.node_loss DSN REPORT_FILE
"""

from __future__ import annotations

import asyncio
import json
import sys

import asyncpg
import ray
from ray.cluster_utils import Cluster

from flashtx.app import LocalEngine, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.retrying import Channels, buy, materialized, one_unit

UNITS, BUYERS = 1_000, 2_000
def node_of(actor_name: str) -> str:
    from ray.util.state import list_actors

    [actor] = list_actors(filters=[("name", "=", actor_name), ("state", "=", "ALIVE")])
    return str(actor["node_id"])


async def sale(engine: LocalEngine, cluster: Cluster, nodes: list) -> dict[str, object]:
    async with Client(engine.address, engine.operator_key or "") as operator:
        created = await operator.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id="node-shop"))
    token = created.admin_key_secret
    async with Client(engine.address, token) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="drop", name="Drop", price_minor=1, on_hand=UNITS)]))
    acked: dict[str, str] = {}
    gate = asyncio.Semaphore(200)
    channels = Channels(engine.address, token)

    async def gated(buyer: int) -> str:
        async with gate:
            return await buy(engine.address, token,
                             one_unit(f"node-{buyer}", f"buyer-{buyer}", "drop"), acked,
                             channels)

    running = asyncio.gather(*(gated(b) for b in range(BUYERS)))
    while len(acked) < UNITS // 3:
        await asyncio.sleep(0.05)
    victim_id = node_of("order-0")
    victim = next(n for n in nodes if n.node_id == victim_id)
    moved = [a for a in ("stock-0", "stock-1", "order-0", "order-1") if node_of(a) == victim_id]
    cluster.remove_node(victim)
    outcomes = await running
    await channels.close()
    async with Client(engine.address, token) as shop:
        level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id="drop", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
    return {"outcomes": sorted(set(outcomes)), "ok": outcomes.count("OK"), "acked": acked,
            "moved": moved, "now_on": {a: node_of(a) != victim_id for a in moved},
            "reserved": level.reserved, "available": level.available}


async def stored_orders(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn)
    try:
        await materialized(connection)
        return {r["idempotency_key"]: r["order_id"] for r in await connection.fetch(
            "SELECT idempotency_key, order_id FROM flashtx.orders")}
    finally:
        await connection.close()


def main(dsn: str, report_file: str) -> int:
    # With the dashboard: the state API (list_actors) asks it where an actor runs.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, resources={"flashtx": 100}) for _ in range(2)]
    cluster.wait_for_nodes()
    engine = LocalEngine.start(ray_address=cluster.address, postgres_dsn=dsn, redis_url="none",
                               operator_key=new_operator_key(), actor_resource="flashtx")
    try:
        result = asyncio.run(sale(engine, cluster, nodes))
        engine.check_invariants()
    finally:
        engine.stop()
        ray.shutdown()
        cluster.shutdown()
    stored = asyncio.run(stored_orders(dsn))
    acked = result.pop("acked")
    report = {**result, "acked": len(acked), "stored": len(stored),
              "acked_all_stored": all(stored.get(k) == v for k, v in acked.items())}
    with open(report_file, "w") as file:
        json.dump(report, file)
    ok = (report["ok"] == report["acked"] == report["stored"] == UNITS
          and report["acked_all_stored"] and report["moved"] and all(report["now_on"].values())
          and report["reserved"] == UNITS and report["available"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
