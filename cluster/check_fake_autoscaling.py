"""A documented check on Ray's fake multi-node provider (one machine): rising load makes
the controller add gateways, whose CPUs make Ray's autoscaler add worker nodes; falling
load drains gateways and the idle nodes go away. Prints a timeline as JSON.

    python cluster/check_fake_autoscaling.py

It starts its own Ray head (on a free port, never 6379) and stops it at the end. Run it
with no other `ray start` cluster on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import ray

from flashtx.app import LocalEngine, free_port, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2

HERE = Path(__file__).resolve().parent


def start_head(ip: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    config = (HERE / "local-fake-multinode.yaml").read_text()
    config = config.replace('gcs_address: "127.0.0.1:6389"', f'gcs_address: "{ip}:{port}"')
    config = config.replace("idle_timeout_minutes: 1", "idle_timeout_minutes: 0.25")
    (folder / "cluster.yaml").write_text(config)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_AUTH_MODE": "disabled",  # the driver below connects without a token
           "RAY_worker_niceness": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
         "--num-cpus=0", "--block", f"--autoscaling-config={folder / 'cluster.yaml'}"],
        env=env, stdout=(folder / "head.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)


def workers() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)


async def drive(engine: LocalEngine, timeline: list[dict[str, object]]) -> None:
    async with Client(engine.address, engine.operator_key or "") as operator:
        created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest())
    token = created.admin_key_secret
    async with Client(engine.address, token) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="s", name="S", price_minor=1, on_hand=10**9)]))
    stop = asyncio.Event()
    failures: dict[str, int] = {}

    async def client(worker: int) -> None:
        n = 0
        while not stop.is_set():
            async with Client(engine.address, token) as shop:
                for _ in range(20):
                    n += 1
                    try:
                        await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                            idempotency_key=f"k{worker}-{n}", buyer_id=f"b{worker}",
                            lines=[order_pb2.OrderLine(sku_id="s", quantity=1)]), timeout=5)
                    except grpc.aio.AioRpcError as error:
                        failures[error.code().name] = failures.get(error.code().name, 0) + 1

    started = time.monotonic()

    async def sample(phase: str) -> None:
        stats = await engine.topology.controller.stats.remote()
        timeline.append({"t_s": round(time.monotonic() - started, 1), "phase": phase,
                         "gateways": len(stats["gateways"]), "worker_nodes": workers()})

    load = asyncio.gather(*(client(w) for w in range(16)))
    for _ in range(40):
        await sample("load")
        await asyncio.sleep(1)
    stop.set()
    await load
    timeline.append({"failures": failures})
    for _ in range(150):
        await sample("quiet")
        if timeline[-1]["gateways"] == 1 and timeline[-1]["worker_nodes"] == 1:
            break
        await asyncio.sleep(1)


def main() -> int:
    port = free_port()
    ip = ray.util.get_node_ip_address()
    with tempfile.TemporaryDirectory() as folder:
        head = start_head(ip, port, Path(folder))
        timeline: list[dict[str, object]] = []
        try:
            time.sleep(10)
            engine = LocalEngine.start(
                ray_address=f"{ip}:{port}", postgres_dsn="none", redis_url="none",
                operator_key=new_operator_key(), autoscale=True, gateway_cpus=1.0,
                gateways=1, gateways_min=1, gateways_max=3,
                autoscale_requests_per_s_per_gateway=100, autoscale_interval_s=1.0,
                autoscale_scale_in_after=3)
            try:
                asyncio.run(drive(engine, timeline))
            finally:
                engine.stop()
                ray.shutdown()
        finally:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
            if head.returncode is None or timeline == []:
                print((Path(folder) / "head.log").read_text()[-3000:], file=sys.stderr)
    print(json.dumps(timeline))
    failures = next(r["failures"] for r in timeline if "failures" in r)
    rows = [r for r in timeline if "gateways" in r]
    ok = (max(r["gateways"] for r in rows) == 3 and max(r["worker_nodes"] for r in rows) >= 3
          and rows[-1]["gateways"] == 1 and rows[-1]["worker_nodes"] == 1
          and set(failures) <= {"UNAVAILABLE", "CANCELLED"})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
