"""Setting up the engine for a run, through its public API only.

Each run gets a fresh merchant (so runs never see each other's stock or orders), with a
payment window far longer than the run so that no order expires while it is verified.
With ``--buckets`` the hot SKUs go on sale in a campaign that takes all their stock.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from flashtx.bench.scenarios import SkuSpec
from flashtx_client.v1 import (
    campaign_pb2,
    campaign_pb2_grpc,
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    stock_pb2,
    stock_pb2_grpc,
)

UPSERT_CHUNK_SKUS = 1000
PAYMENT_WINDOW_S = 3600
CAMPAIGN_LENGTH_S = 3600
SETUP_TIMEOUT_S = 60.0


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def prepare(
    address: str, operator_key: str, run_id: str, skus: list[SkuSpec]
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        merchants = merchant_pb2_grpc.MerchantServiceStub(channel)
        created = await merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(
                merchant_id=f"bench-{run_id}".lower()[:40],
                name=f"flashtx bench {run_id}",
                payment_window_s=PAYMENT_WINDOW_S,
            ),
            metadata=bearer(operator_key),
            timeout=SETUP_TIMEOUT_S,
        )
        api_key = created.admin_key_secret
        stock = stock_pb2_grpc.StockServiceStub(channel)
        for start in range(0, len(skus), UPSERT_CHUNK_SKUS):
            await _upsert(stock, api_key, skus[start : start + UPSERT_CHUNK_SKUS])
    return {"address": address, "api_key": api_key, "merchant_id": created.merchant.merchant_id}


async def _upsert(
    stock: stock_pb2_grpc.StockServiceStub, api_key: str, skus: list[SkuSpec]
) -> None:
    request = stock_pb2.UpsertSkusRequest(
        skus=[
            stock_pb2.Sku(
                sku_id=sku.sku_id,
                name=sku.sku_id,
                price_minor=sku.price_minor,
                on_hand=sku.on_hand,
                per_buyer_limit=sku.per_buyer_limit,
            )
            for sku in skus
        ]
    )
    response = await stock.UpsertSkus(request, metadata=bearer(api_key), timeout=SETUP_TIMEOUT_S)
    failed = [r for r in response.results if r.code != common_pb2.RESULT_CODE_OK]
    if failed:
        raise RuntimeError(f"UpsertSkus failed for {len(failed)} SKUs: {failed[0].message}")


def campaign_id_for(run_id: str) -> str:
    return f"bench-{run_id}"


async def create_campaign(
    info: dict[str, Any],
    campaign_id: str,
    skus: list[SkuSpec],
    buckets: int,
    starts_in_s: float,
) -> dict[str, Any]:
    """A campaign over `skus` whose allotment is all of each SKU's on-hand, at its price
    and per-buyer limit, starting `starts_in_s` from now (negative: already started) and
    ending an hour later. Answers the campaign as created (units per SKU, window)."""
    starts_at_ms = int((time.time() + starts_in_s) * 1000)
    request = campaign_pb2.CreateCampaignRequest(
        campaign_id=campaign_id,
        name=f"flashtx bench {campaign_id}",
        starts_at_ms=starts_at_ms,
        ends_at_ms=starts_at_ms + CAMPAIGN_LENGTH_S * 1000,
        buckets=buckets,
        skus=[
            campaign_pb2.CampaignSku(
                sku_id=sku.sku_id,
                sale_price_minor=sku.price_minor,
                allotment=sku.on_hand,
                per_buyer_limit=sku.per_buyer_limit,
            )
            for sku in skus
        ],
    )
    async with grpc.aio.insecure_channel(info["address"]) as channel:
        campaigns = campaign_pb2_grpc.CampaignServiceStub(channel)
        response = await campaigns.CreateCampaign(
            request, metadata=bearer(info["api_key"]), timeout=SETUP_TIMEOUT_S
        )
    campaign = response.campaign
    granted = {state.sku.sku_id: state.units for state in campaign.skus}
    short = [sku.sku_id for sku in skus if granted.get(sku.sku_id) != sku.on_hand]
    if short:
        raise RuntimeError(f"campaign {campaign_id} did not get all units of {short}")
    return {
        "campaign_id": campaign_id,
        "buckets": campaign.buckets,
        "starts_at_ms": campaign.starts_at_ms,
        "ends_at_ms": campaign.ends_at_ms,
        "units_by_sku": granted,
    }
