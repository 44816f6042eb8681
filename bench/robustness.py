"""Overload and a greedy SaaS reader, measured in one run on a local engine:

1. capacity: closed-loop unary PlaceOrder throughput;
2. overload: an open loop at twice that rate; accepted orders' latency (from the intended
   send time), how the excess was refused, and the engine's memory before and after;
3. fairness: order latency alone, then beside a SaaS client (its own key, with the
   read scope) hammering strong stock reads. The reader behaves as a gRPC client with a
   retry policy does: on RESOURCE_EXHAUSTED it waits the RetryInfo hint, doubling the
   wait on each refusal in a row (up to 1 s).

    python -m bench.robustness --seconds 8 --key-reads-per-s 2000
    flashtx bench --scenario overload --duration 8 [--engine-config key_reads_per_s=2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import grpc
import psutil
from google.rpc import error_details_pb2, status_pb2

from flashtx.app import LocalEngine, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2


def engine_rss_mb() -> float:
    total = 0
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "ray::" in cmdline or "Gateway" in cmdline or "Shard" in cmdline:
            total += process.info["memory_info"].rss
    return round(total / 2**20, 1)


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    if not latencies_ms:
        return {}
    ordered = sorted(latencies_ms)
    return {"p50_ms": round(ordered[len(ordered) // 2], 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)}


def order(tag: str, n: int) -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(idempotency_key=f"{tag}-{n}", buyer_id=f"{tag}-{n}",
                                       lines=[order_pb2.OrderLine(sku_id="s", quantity=1)])


async def closed_loop(shop: Client, tag: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    refused = 0
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        nonlocal refused
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                await shop.orders.PlaceOrder(order(tag, next(counter)))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
                await asyncio.sleep(0.05)
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"orders_per_s": round(len(latencies) / seconds), "refused": refused,
            **percentiles(latencies)}


async def open_loop(shop: Client, rate: float, seconds: float) -> dict:
    accepted: list[float] = []
    outcomes: Counter[str] = Counter()
    refused_ms: list[float] = []

    async def one(n: int, intended: float) -> None:
        try:
            await shop.orders.PlaceOrder(order("over", n), timeout=10)
            outcomes["OK"] += 1
            accepted.append((time.perf_counter() - intended) * 1000)
        except grpc.aio.AioRpcError as error:
            outcomes[error.code().name] += 1
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused_ms.append((time.perf_counter() - intended) * 1000)
                if has_retry_info(error):
                    outcomes["RESOURCE_EXHAUSTED with RetryInfo"] += 1

    tasks, start = [], time.perf_counter()
    for n in range(int(rate * seconds)):
        intended = start + n / rate
        await asyncio.sleep(max(0.0, intended - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one(n, intended)))
    await asyncio.gather(*tasks)
    return {"offered_per_s": round(rate), "outcomes": dict(outcomes),
            "accepted_per_s": round(outcomes["OK"] / seconds), "accepted": percentiles(accepted),
            "refused": percentiles(refused_ms)}


async def greedy_reader(engine: LocalEngine, token: str, stop: asyncio.Event) -> int:
    reads = 0
    async with Client(engine.address, token) as saas:
        async def worker() -> None:
            nonlocal reads
            backoff_s = 0.0
            while not stop.is_set():
                try:
                    await saas.stock.GetStockLevels(stock_pb2.GetStockLevelsRequest(
                        sku_ids=["s"] * 100, consistency=common_pb2.READ_CONSISTENCY_STRONG))
                    reads += 1
                    backoff_s = 0.0
                except grpc.aio.AioRpcError as error:  # refused: retries after the hint
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    backoff_s = min(1.0, max(retry_hint_s(error), 2 * backoff_s))
                    await asyncio.sleep(backoff_s)

        await asyncio.gather(*(worker() for _ in range(64)))
    return reads


def _retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw:
        for detail in status_pb2.Status.FromString(raw).details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info
    return None


def has_retry_info(error: grpc.aio.AioRpcError) -> bool:
    return _retry_info(error) is not None


def retry_hint_s(error: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay of a refusal (50 ms when it carries none)."""
    info = _retry_info(error)
    return 0.05 if info is None else info.retry_delay.ToMilliseconds() / 1000


async def run(engine: LocalEngine, seconds: float) -> dict:
    async with Client(engine.address, engine.operator_key or "") as operator:
        created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest())
    async with Client(engine.address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="s", name="S", price_minor=1, on_hand=10**9)]))
        await closed_loop(shop, "warm", 2, 64)
        capacity = await closed_loop(shop, "cap", seconds, 64)
        rss_before = engine_rss_mb()
        overload = await open_loop(shop, 2 * capacity["orders_per_s"], seconds)
        rss_after = engine_rss_mb()
        alone = await closed_loop(shop, "alone", seconds, 32)
        reader_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
            scopes=[common_pb2.SCOPE_SAAS], label="greedy reader"))
        stop = asyncio.Event()
        reader = asyncio.ensure_future(greedy_reader(engine, reader_key.secret, stop))
        await asyncio.sleep(1)
        beside = await closed_loop(shop, "beside", seconds, 32)
        stop.set()
        reads = await reader
    return {"key_reads_per_s": engine.config.key_reads_per_s,
            "capacity": capacity, "overload_2x": overload,
            "engine_rss_mb": {"before": rss_before, "after": rss_after},
            "orders_alone": alone, "orders_beside_greedy_reader": beside,
            "greedy_reads": reads}


def measure(seconds: float, key_reads_per_s: float = 2000.0, **overrides: object) -> dict:
    """Starts a local engine (config `overrides`), runs the three checks, stops it."""
    engine = LocalEngine.start(operator_key=new_operator_key(),
                               key_reads_per_s=key_reads_per_s,
                               key_reads_burst=key_reads_per_s, **overrides)
    try:
        return asyncio.run(run(engine, seconds))
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--key-reads-per-s", type=float, default=2000.0,
                        help="the engine's per-key read rate (SKUs read per second)")
    options = parser.parse_args()
    print(json.dumps(measure(options.seconds, options.key_reads_per_s), indent=2))


if __name__ == "__main__":
    main()
