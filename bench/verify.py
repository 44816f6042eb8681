"""Checks the engine's invariants after a run, from its public API and the client's ledger.

Each check answers a count that must be 0:

- ``oversold``: units with reserved + sold > on_hand, or available < 0 (strong reads);
- ``lost_acked``: acknowledged orders that GetOrder cannot find, or finds with other lines;
- ``unaccounted_units``: units of acknowledged, uncancelled orders missing from
  reserved + sold (a lost order that the sample of GetOrder calls did not hit);
- ``duplicates``: a retry with the same key that created a new order, or two orders with
  one key in a buyer's ListOrders;
- ``limit_violations``: a buyer holding more live units of a SKU than its limit, as the
  client counted them and as ListOrders shows them;
- ``attempted_mismatch``: attempted - (accepted + rejected) in the measured window.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import grpc

from bench.scenarios import ScenarioParams
from bench.targets.engine_setup import bearer
from protos.flashtx.v1 import common_pb2, order_pb2, order_pb2_grpc, stock_pb2, stock_pb2_grpc

LEVELS_CHUNK_SKUS = 1000
ORDERS_CHECKED_MAX = 2000
BUYERS_CHECKED_MAX = 200
LIST_PAGES_MAX = 20
CONCURRENT_CALLS_MAX = 64
CALL_TIMEOUT_S = 30.0
LIVE_STATUSES = (
    order_pb2.ORDER_STATUS_RESERVED,
    order_pb2.ORDER_STATUS_PAID,
    order_pb2.ORDER_STATUS_FULFILLED,
)


async def verify_engine(
    info: dict[str, Any], params: ScenarioParams, ledger: dict[str, Any], seed: int
) -> dict[str, Any]:
    limits = {s.sku_id: s.per_buyer_limit for s in params.skus() if s.per_buyer_limit}
    metadata = bearer(info["api_key"])
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(info["address"]) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        stock = stock_pb2_grpc.StockServiceStub(channel)
        oversold, unaccounted = await _check_stock(
            stock, metadata, ledger["units_by_sku"], list(limits)
        )
        acked = ledger["acked_kept"]
        sample = rng.sample(acked, min(len(acked), ORDERS_CHECKED_MAX))
        lost = await _check_orders(orders, metadata, sample)
        buyers = sorted({buyer for _, _, buyer, _ in acked})
        buyers = rng.sample(buyers, min(len(buyers), BUYERS_CHECKED_MAX))
        listed_duplicates, listed_violations = await _check_buyers(orders, metadata, buyers, limits)
    client_violations = sum(
        1 for (_, sku_id), units in ledger["buyer_units"].items() if units > limits[sku_id]
    )
    return {
        "invariants": {
            "oversold": oversold,
            "lost_acked": lost,
            "duplicates": ledger["duplicates"] + listed_duplicates,
            "limit_violations": client_violations + listed_violations,
            "unaccounted_units": unaccounted,
        },
        "checked": {
            "orders_looked_up": len(sample),
            "buyers_listed": len(buyers),
            "replay_checks": ledger["replay_checks"],
            "acked_orders": ledger["acked_total"],
        },
    }


async def _check_stock(
    stock: Any, metadata: Any, units_by_sku: dict[str, int], extra_skus: list[str]
) -> tuple[int, int]:
    sku_ids = sorted(set(units_by_sku) | set(extra_skus))
    oversold = unaccounted = 0
    for start in range(0, len(sku_ids), LEVELS_CHUNK_SKUS):
        request = stock_pb2.GetStockLevelsRequest(
            sku_ids=sku_ids[start : start + LEVELS_CHUNK_SKUS],
            consistency=common_pb2.READ_CONSISTENCY_STRONG,
        )
        response = await stock.GetStockLevels(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        for level in response.levels:
            held = level.reserved + level.sold
            oversold += max(0, held - level.on_hand) + max(0, -level.available)
            unaccounted += max(0, units_by_sku.get(level.sku_id, 0) - held)
        unaccounted += sum(units_by_sku.get(sku, 0) for sku in response.missing_sku_ids)
    return oversold, unaccounted


async def _check_orders(orders: Any, metadata: Any, sample: list[Any]) -> int:
    slots = asyncio.Semaphore(CONCURRENT_CALLS_MAX)

    async def is_lost(order_id: str, lines: tuple[tuple[str, int], ...]) -> bool:
        async with slots:
            try:
                response = await orders.GetOrder(
                    order_pb2.GetOrderRequest(order_id=order_id),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return True
                raise
        found = sorted((line.sku_id, line.quantity) for line in response.order.lines)
        return found != sorted(lines)

    checks = [is_lost(order_id, lines) for order_id, _, _, lines in sample]
    return sum(await asyncio.gather(*checks))


async def _check_buyers(
    orders: Any, metadata: Any, buyers: list[str], limits: dict[str, int]
) -> tuple[int, int]:
    duplicates = violations = 0
    for buyer in buyers:
        listed = await _list_orders(orders, metadata, buyer)
        keys = Counter(order.idempotency_key for order in listed)
        duplicates += sum(count - 1 for count in keys.values())
        held: Counter[str] = Counter()
        for order in listed:
            if order.status in LIVE_STATUSES:
                for line in order.lines:
                    held[line.sku_id] += line.quantity
        violations += sum(1 for sku, units in held.items() if sku in limits and units > limits[sku])
    return duplicates, violations


async def _list_orders(orders: Any, metadata: Any, buyer: str) -> list[Any]:
    listed: list[Any] = []
    token = ""
    for _ in range(LIST_PAGES_MAX):
        response = await orders.ListOrders(
            order_pb2.ListOrdersRequest(buyer_id=buyer, page_size=100, page_token=token),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        listed.extend(response.orders)
        token = response.next_page_token
        if not token:
            break
    return listed
