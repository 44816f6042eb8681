"""The client host's load: a flash sale whose buyers retry with their idempotency keys.

    python -m tests.netns.load CONFIG_JSON REPORT_JSON     (run inside the client host)

A merchant and one SKU (`units` units, one per buyer); buyers start at `rate` per
second, at least `buyers` of them and on until the runner writes `release_file` (its last
fault lifted: the sale meets every fault however slow the machine), `max_buyers` at most;
each placing one unit and retrying what a client retries (UNAVAILABLE,
RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, CANCELLED, and UNAUTHENTICATED while a restarted
gateway cannot check keys yet) with a capped backoff, alternating between the gateways,
until it has an answer or `give_up_s` passed. Every attempt is recorded (wall time, ms,
code): the scenario runner splits them into before, during and after its fault.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.UNAUTHENTICATED}
FAST_RECONNECT = {"grpc.initial_reconnect_backoff_ms": 100,
                  "grpc.min_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 1000}


async def _answered(call: Any, give_up_s: float) -> Any:
    deadline = time.monotonic() + give_up_s
    delay_s = 0.1
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)


async def run(config: dict[str, Any]) -> dict[str, Any]:
    gateways: list[str] = config["gateways"]
    give_up_s = float(config["give_up_s"])
    async with Client(gateways[0], config["operator_key"], **FAST_RECONNECT) as operator:
        created = await _answered(lambda: operator.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id=config["merchant_id"],
                                               name="netns shop", request_id="netns-shop"),
            timeout=10), 120)
    token = created.admin_key_secret
    clients = [Client(address, token, **FAST_RECONNECT) for address in gateways]
    await _answered(lambda: clients[0].stock.UpsertSkus(stock_pb2.UpsertSkusRequest(
        skus=[stock_pb2.Sku(sku_id="drop", name="Drop", price_minor=100,
                            on_hand=config["units"], per_buyer_limit=1)]), timeout=10), 120)
    attempts: list[tuple[float, float, str]] = []
    acked: dict[str, str] = {}
    outcomes: dict[str, int] = {}

    async def buyer(n: int) -> None:
        key, turn = f"k-{n}", n
        request = order_pb2.PlaceOrderRequest(
            idempotency_key=key, buyer_id=f"buyer-{n}",
            lines=[order_pb2.OrderLine(sku_id="drop", quantity=1)])
        deadline = time.monotonic() + give_up_s
        delay_s = 0.1
        while True:
            client = clients[turn % len(clients)]
            turn += 1
            started = time.time()
            try:
                answer = await client.orders.PlaceOrder(request, timeout=3)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                answer, code = None, error.code().name
            attempts.append((started, (time.time() - started) * 1000, code))
            if answer is not None:
                acked[key] = answer.order.order_id
            retry = code in {c.name for c in RETRYABLE}
            if not retry or time.monotonic() > deadline:
                outcomes[code] = outcomes.get(code, 0) + 1
                return
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)

    started = time.time()
    tasks = []
    release = Path(config["release_file"])
    n = 0
    while n < config["max_buyers"] and (n < config["buyers"] or not release.exists()):
        tasks.append(asyncio.create_task(buyer(n)))
        n += 1
        await asyncio.sleep(1 / config["rate"])
    await asyncio.gather(*tasks)
    for client in clients:
        await client.close()
    return {"merchant_id": created.merchant.merchant_id, "token": token,
            "started_at": started, "ended_at": time.time(), "acked": acked,
            "outcomes": outcomes, "attempts": attempts, "buyers": n}


def main(config_file: str, report_file: str) -> int:
    with open(config_file) as file:
        config = json.load(file)
    report = asyncio.run(run(config))
    with open(report_file, "w") as file:
        json.dump(report, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
