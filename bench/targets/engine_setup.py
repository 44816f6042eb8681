"""Setting up the engine for a run, through its public API only.

Each run gets a fresh merchant (so runs never see each other's stock or orders), with a
payment window far longer than the run so that no order expires while it is verified.
"""

from __future__ import annotations

from typing import Any

import grpc

from bench.scenarios import SkuSpec
from protos.flashtx.v1 import common_pb2, merchant_pb2, merchant_pb2_grpc, stock_pb2, stock_pb2_grpc

UPSERT_CHUNK_SKUS = 1000
PAYMENT_WINDOW_S = 3600
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
