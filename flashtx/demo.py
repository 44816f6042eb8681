"""`flashtx demo`: a flash sale on a local deployment, through the real gRPC port."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import grpc
from rich.console import Console
from rich.table import Table

from flashtx.app import LocalEngine, new_operator_key
from flashtx.client import Client
from protos.flashtx.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2

console = Console()
IN_FLIGHT_MAX = 800


def run_demo(buyers: int, units: int) -> int:
    console.print("[bold]flashtx demo[/]: starting a local Ray cluster and the engine...")
    # The demo chooses its operator key, so it runs again on the same data directory.
    with LocalEngine.start(operator_key=new_operator_key()) as engine:
        console.print(f"engine serving on {engine.address}")
        summary = asyncio.run(_flash_sale(engine, buyers, units))
        engine.check_invariants()
    _print(summary)
    ok = summary["oversold"] == 0 and summary["accepted"] == summary["durable"] == units
    return 0 if ok else 1


async def _flash_sale(engine: LocalEngine, buyers: int, units: int) -> dict[str, object]:
    async with Client(engine.address, engine.operator_key) as operator:
        created = await operator.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id=f"demo-{int(time.time())}",
                                               name="Demo Shop"))
    async with Client(engine.address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="console-x", name="Game console X", price_minor=49_900, on_hand=units,
            per_buyer_limit=1)]))
        console.print(f"flash sale: {units} units of console-x, {buyers} buyers at once")
        # A grpc.aio server (grpcio 1.85) resets streams past ~1,000 calls in flight, so
        # the buyers arrive through a gate of IN_FLIGHT_MAX concurrent calls.
        gate = asyncio.Semaphore(IN_FLIGHT_MAX)
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(_buy(shop, n, gate) for n in range(buyers)))
        elapsed_s = time.perf_counter() - started
        retries = await asyncio.gather(*(_buy(shop, n, gate) for n in range(0, buyers, 10)))
        level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id="console-x", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
    counts = Counter(outcomes)
    durable = await _orders_in_postgres(engine.config.postgres_dsn, created.merchant.merchant_id)
    return {"buyers": buyers, "units": units, "accepted": counts["accepted"],
            "sold_out": counts["FAILED_PRECONDITION"],
            "other": sum(v for k, v in counts.items()
                         if k not in ("accepted", "FAILED_PRECONDITION")),
            "retries_replayed": Counter(retries)["replayed"],
            "durable": durable, "reserved": level.reserved, "available": level.available,
            "oversold": max(0, level.reserved + level.sold - level.on_hand),
            "orders_per_s": buyers / elapsed_s, "elapsed_s": elapsed_s}


async def _buy(shop: Client, buyer: int, gate: asyncio.Semaphore) -> str:
    request = order_pb2.PlaceOrderRequest(
        idempotency_key=f"checkout-{buyer}", buyer_id=f"buyer-{buyer}",
        lines=[order_pb2.OrderLine(sku_id="console-x", quantity=1)])
    try:
        async with gate:
            response = await shop.orders.PlaceOrder(request)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "replayed" if response.replayed else "accepted"


async def _orders_in_postgres(dsn: str, merchant_id: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM flashtx.orders WHERE merchant_id = $1", merchant_id)
    finally:
        await connection.close()
    return int(count)


def _print(summary: dict[str, object]) -> None:
    table = Table(title="flash sale summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [("buyers", summary["buyers"]), ("units on sale", summary["units"]),
            ("orders accepted", summary["accepted"]),
            ("refused: sold out (FAILED_PRECONDITION)", summary["sold_out"]),
            ("refused: other", summary["other"]),
            ("retries answered with the original order", summary["retries_replayed"]),
            ("orders committed in Postgres", summary["durable"]),
            ("units reserved / available", f"{summary['reserved']} / {summary['available']}"),
            ("oversold units", summary["oversold"]),
            ("orders/s (unary, one client process)", f"{summary['orders_per_s']:,.0f}")]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
