"""Does a broken integration slow the order path? Order latency with no connector, then
with a webhook connector whose endpoint hangs (every call times out, retries, and
dead-letters), under the same closed-loop unary load, in one run.

    python -m bench.connector_isolation --seconds 8 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

from flashtx.adapters.connectors import ConnectorSpec
from flashtx.app import LocalEngine, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2


async def hanging_endpoint() -> tuple[web.AppRunner, str]:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


async def load(shop: Client, tag: str, seconds: float, concurrency: int) -> dict[str, float]:
    latencies_ms: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            started = time.perf_counter()
            await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                idempotency_key=f"{tag}-{w}-{n}", buyer_id=f"{tag}-{w}",
                lines=[order_pb2.OrderLine(sku_id="s", quantity=1)]))
            latencies_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    latencies_ms.sort()
    return {"orders_per_s": round(len(latencies_ms) / seconds),
            "p50_ms": round(latencies_ms[len(latencies_ms) // 2], 2),
            "p99_ms": round(latencies_ms[int(len(latencies_ms) * 0.99)], 2)}


async def run(engine: LocalEngine, seconds: float, concurrency: int) -> dict[str, object]:
    async with Client(engine.address, engine.operator_key or "") as operator:
        created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest())
    merchant_id = created.merchant.merchant_id
    runner, url = await hanging_endpoint()
    async with Client(engine.address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="s", name="S", price_minor=1, on_hand=10**9)]))
        await load(shop, "warm", 2, concurrency)
        without = await load(shop, "plain", seconds, concurrency)
        spec = ConnectorSpec(name=f"hang-{merchant_id}", kind="webhook", merchant_id=merchant_id,
                             max_attempts=3, backoff_ms_first=50,
                             options={"url": url, "secret": "s", "timeout_s": 1.0})
        connector = engine.topology.add_connector(spec)
        await asyncio.sleep(2)
        hanging = await load(shop, "hang", seconds, concurrency)
        stats = await connector.stats.remote()
    await runner.cleanup()
    return {"without_connector": without, "with_hanging_webhook": hanging,
            "connector": {k: stats[k] for k in ("delivered", "dead_lettered", "failing")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    engine = LocalEngine.start(operator_key=new_operator_key())
    try:
        result = asyncio.run(run(engine, options.seconds, options.concurrency))
    finally:
        engine.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
