"""`flashtx demo`: a flash sale on a local deployment, through the real gRPC port, then
a campaign: carts filled before it opens, a checkout storm the second it starts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import grpc
from rich.console import Console
from rich.table import Table

from flashtx.app import LocalEngine, new_operator_key
from flashtx_client import Client, FlashtxError
from flashtx_client.v1 import (
    campaign_pb2,
    cart_pb2,
    common_pb2,
    merchant_pb2,
    order_pb2,
    stock_pb2,
)

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
        campaign = asyncio.run(_campaign_sale(engine, str(summary["admin_key"]), buyers,
                                              units))
        engine.check_invariants()
    _print_campaign(campaign)
    ok = summary["oversold"] == 0 and summary["accepted"] == summary["durable"] == units
    ok = ok and campaign["oversold"] == 0 and campaign["accepted"] == campaign["sold"] == units
    return 0 if ok else 1


async def _flash_sale(engine: LocalEngine, buyers: int, units: int) -> dict[str, object]:
    assert engine.operator_key is not None  # run_demo chose it
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
            "orders_per_s": buyers / elapsed_s, "elapsed_s": elapsed_s,
            "admin_key": created.admin_key_secret}


async def _campaign_sale(engine: LocalEngine, admin_key: str, buyers: int,
                         units: int) -> dict[str, object]:
    """A campaign over a new SKU, its allotment split into 2 stock buckets: every buyer
    fills a cart before the start, then all check out at once when it opens."""
    gate = asyncio.Semaphore(IN_FLIGHT_MAX)
    async with Client(engine.address, admin_key) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
            sku_id="drop-y", name="Sneaker drop Y", price_minor=19_900, on_hand=2 * units)]))
        starts_at_ms = int(time.time() * 1000) + 3_000
        await shop.campaigns.CreateCampaign(campaign_pb2.CreateCampaignRequest(
            campaign_id="launch", name="Launch", starts_at_ms=starts_at_ms,
            ends_at_ms=starts_at_ms + 600_000, buckets=2, skus=[campaign_pb2.CampaignSku(
                sku_id="drop-y", sale_price_minor=9_900, allotment=units, per_buyer_limit=1)]))
        # Right after the campaign is created, well before its start: refused.
        early = await _retrying(gate, shop.orders.PlaceOrder, order_pb2.PlaceOrderRequest(
            idempotency_key="too-early", buyer_id="early-bird", campaign_id="launch",
            lines=[order_pb2.OrderLine(sku_id="drop-y", quantity=1)]))
        console.print(f"campaign: {units} of drop-y at 99.00 in 2 stock buckets, opening in"
                      f" 3 s; {buyers} buyers fill their carts first")
        filled = Counter(await asyncio.gather(*(
            _retrying(gate, shop.carts.AddItem, cart_pb2.AddItemRequest(
                buyer_id=f"fan-{n}", campaign_id="launch", sku_id="drop-y", quantity=1))
            for n in range(buyers))))
        await asyncio.sleep(max(0.0, starts_at_ms / 1000 - time.time()))
        started = time.perf_counter()
        outcomes = Counter(await asyncio.gather(*(
            _retrying(gate, shop.carts.Checkout, cart_pb2.CheckoutRequest(
                buyer_id=f"fan-{n}", campaign_id="launch", idempotency_key=f"launch-{n}"))
            for n in range(buyers))))
        elapsed_s = time.perf_counter() - started
        state = (await shop.campaigns.GetCampaign(campaign_pb2.GetCampaignRequest(
            campaign_id="launch"))).campaign.skus[0]
    return {"buyers": buyers, "units": units, "carts": filled["OK"], "early": early,
            "accepted": outcomes["OK"], "sold_out": outcomes["OUT_OF_STOCK"],
            "other": sum(v for k, v in outcomes.items() if k not in ("OK", "OUT_OF_STOCK")),
            "sold": state.reserved + state.sold, "available": state.available,
            "oversold": max(0, state.reserved + state.sold - state.units),
            "checkouts_per_s": buyers / elapsed_s}


async def _retrying(gate: asyncio.Semaphore, call: object, request: object) -> str:
    """OK, or the refusal's reason; retries what the engine says to retry."""
    for _ in range(100):
        try:
            async with gate:
                await call(request)  # type: ignore[operator]
            return "OK"
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.RESOURCE_EXHAUSTED):
                return _reason(error)
            await asyncio.sleep(0.05)
    return "GAVE_UP"


def _reason(error: grpc.aio.AioRpcError) -> str:
    refused = error if isinstance(error, FlashtxError) else FlashtxError(error)
    return refused.reason or str(refused.code().name)


async def _buy(shop: Client, buyer: int, gate: asyncio.Semaphore) -> str:
    request = order_pb2.PlaceOrderRequest(
        idempotency_key=f"checkout-{buyer}", buyer_id=f"buyer-{buyer}",
        lines=[order_pb2.OrderLine(sku_id="console-x", quantity=1)])
    try:
        async with gate:
            response = await shop.orders.PlaceOrder(request)
    except grpc.aio.AioRpcError as error:
        name: str = error.code().name
        return name
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


def _print_campaign(summary: dict[str, object]) -> None:
    table = Table(title="campaign summary (carts, then a checkout storm)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [("carts filled before the start", summary["carts"]),
            ("an order before the start", summary["early"]),
            ("units in the campaign", summary["units"]),
            ("checkouts accepted", summary["accepted"]),
            ("refused: sold out (every bucket empty)", summary["sold_out"]),
            ("refused: other", summary["other"]),
            ("campaign units reserved + sold / available",
             f"{summary['sold']} / {summary['available']}"),
            ("oversold units", summary["oversold"]),
            ("checkouts/s (one client process)", f"{summary['checkouts_per_s']:,.0f}")]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
