"""One real local Ray cluster and one flashtx deployment for the whole session; each test
makes its own merchant, so tests do not see each other's data."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from flashtx.app import LocalEngine
from flashtx.client import Client
from protos.flashtx.v1 import merchant_pb2, stock_pb2

_merchants = itertools.count()


@pytest.fixture(scope="session")
def engine() -> Iterator[LocalEngine]:
    with LocalEngine.start(gateways=2, stock_shards=3, order_shards=2,
                           expiry_sweep_interval_ms=50, auth_cache_ttl_ms=1000) as running:
        yield running


@pytest.fixture
async def operator(engine: LocalEngine) -> AsyncIterator[Client]:
    async with Client(engine.address, engine.operator_key) as client:
        yield client


@pytest.fixture
async def shop(engine: LocalEngine, operator: Client) -> AsyncIterator[Client]:
    """An admin client of a fresh merchant."""
    created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=f"shop-{next(_merchants)}", name="Test shop"))
    async with Client(engine.address, created.admin_key_secret) as client:
        yield client


async def add_skus(client: Client, *skus: stock_pb2.Sku) -> None:
    response = await client.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=list(skus)))
    assert all(r.code == 1 for r in response.results), response
