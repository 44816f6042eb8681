"""Checks the engine's invariants after a run, from its public API and the client's ledger.

Each check answers a count that must be 0:

- ``oversold``: units with reserved + sold > on_hand, or available < 0 (strong reads);
  with a campaign (``--buckets``), also units with the campaign's reserved + sold (over
  all buckets, from GetCampaign) > its units or > the allotment asked, and units granted
  beyond the allotment or appearing in the buckets beyond what was moved in;
- ``lost_acked``: acknowledged orders that GetOrder cannot find, or finds with other lines;
- ``unaccounted_units``: units of acknowledged, uncancelled orders missing from
  reserved + sold (a lost order that the sample of GetOrder calls did not hit): the
  SKU's own for plain orders, the campaign's (summed over its buckets) for campaign ones;
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

from flashtx.bench.scenarios import ScenarioParams
from flashtx.bench.targets.engine_setup import bearer
from flashtx_client.v1 import (
    campaign_pb2,
    campaign_pb2_grpc,
    common_pb2,
    order_pb2,
    order_pb2_grpc,
    stock_pb2,
    stock_pb2_grpc,
)

LEVELS_CHUNK_SKUS = 1000
ORDERS_CHECKED_MAX = 2000
BUYERS_CHECKED_MAX = 200
LIST_PAGES_MAX = 20
CONCURRENT_CALLS_MAX = 64
CALL_TIMEOUT_S = 30.0
# A bucket-to-bucket move (the engine's rebalancing) read half-done can show a unit in
# both buckets: such a reading is taken again, this often, this far apart.
CAMPAIGN_READS_MAX = 5
CAMPAIGN_REREAD_S = 0.6
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
        campaign = info.get("campaign")
        campaign_checked: dict[str, Any] = {}
        if campaign is None:
            oversold, unaccounted = await _check_stock(
                stock, metadata, ledger["units_by_sku"], list(limits)
            )
        else:
            # The SKUs' own levels hold nothing sold (all went into the campaign) and must
            # still not be oversold; the campaign's buckets hold what was sold.
            oversold, _ = await _check_stock(stock, metadata, {}, list(campaign["units_by_sku"]))
            states = await campaign_states(channel, metadata, campaign["campaign_id"])
            campaign_oversold, unaccounted, _ = campaign_counts(
                states, campaign["units_by_sku"], ledger["units_by_sku"]
            )
            oversold += campaign_oversold
            campaign_checked = {"campaign": {"id": campaign["campaign_id"], "skus": states}}
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
            **campaign_checked,
        },
    }


async def campaign_states(
    channel: grpc.aio.Channel, metadata: Any, campaign_id: str
) -> dict[str, dict[str, int]]:
    """GetCampaign's per-SKU units, available, reserved and sold (summed over buckets),
    read again while a reading shows more units in the buckets than were moved in."""
    campaigns = campaign_pb2_grpc.CampaignServiceStub(channel)
    states: dict[str, dict[str, int]] = {}
    for _ in range(CAMPAIGN_READS_MAX):
        response = await campaigns.GetCampaign(
            campaign_pb2.GetCampaignRequest(campaign_id=campaign_id),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        states = {
            state.sku.sku_id: {
                "allotment": state.sku.allotment,
                "units": state.units,
                "available": state.available,
                "reserved": state.reserved,
                "sold": state.sold,
            }
            for state in response.campaign.skus
        }
        if not any(_created(state) for state in states.values()):
            break
        await asyncio.sleep(CAMPAIGN_REREAD_S)
    return states


def _created(state: dict[str, int]) -> int:
    """Units in the buckets beyond those moved into them."""
    return max(0, state["available"] + state["reserved"] + state["sold"] - state["units"])


def campaign_counts(
    states: dict[str, dict[str, int]],
    allotments: dict[str, int],
    acked_units: dict[str, int],
) -> tuple[int, int, int]:
    """(oversold, unaccounted, extra) units of a campaign against what was allotted and
    what clients saw acknowledged. oversold: reserved + sold beyond the units moved in or
    the allotment, available < 0, units granted beyond the allotment, units created in
    the buckets; unaccounted: acknowledged units missing from reserved + sold; extra:
    reserved + sold beyond the acknowledged units (meaningful only when every order's
    outcome is known, as in cart-checkout). A campaign SKU missing counts all its units."""
    oversold = unaccounted = extra = 0
    for sku_id, allotment in allotments.items():
        state = states.get(sku_id)
        acked = acked_units.get(sku_id, 0)
        if state is None:
            unaccounted += acked
            continue
        held = state["reserved"] + state["sold"]
        oversold += max(0, held - state["units"]) + max(0, held - allotment)
        oversold += max(0, -state["available"]) + max(0, state["units"] - allotment)
        oversold += _created(state)
        unaccounted += max(0, acked - held)
        extra += max(0, held - acked)
    return oversold, unaccounted, extra


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
