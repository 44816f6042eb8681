"""Imported data is live in the actors: after `flashtx migrate` into a running
deployment's database, shards rebuilt from Postgres hold the imported reservations
against stock and serve the imported orders."""

from __future__ import annotations

import asyncio
import secrets
import time
import tomllib

import asyncpg
import pytest
import ray

from flashtx.adapters.legacy.mapping import parse_mapping
from flashtx.adapters.legacy.sample import SIZES, create_sample, sample_mapping
from flashtx.adapters.legacy.sync import SyncOptions, run_sync
from flashtx.engine.messages import ActionBatch, CampaignSkus, SkuKeys
from flashtx.engine.orders import order_slot

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_imported_orders_hold_stock_once_shards_rebuild(engine, database_dsn,
                                                               tmp_path) -> None:
    token = secrets.token_hex(4)
    schema, prefix = f"legacy_live_{token}", f"ll{token}"
    connection = await asyncpg.connect(database_dsn)
    try:
        await create_sample(connection, schema, SIZES["small"], prefix)
        mapping = parse_mapping(tomllib.loads(sample_mapping(schema)))
        report = await run_sync(mapping, SyncOptions(target_dsn=database_dsn, quiet=True,
                                                     reject_path=tmp_path / "rejects.jsonl"))
        assert report.reconciled
        expected = await connection.fetch(
            "SELECT l.merchant_id, l.sku_id, sum(l.quantity) AS held FROM flashtx.order_lines l"
            " JOIN flashtx.order_states s USING (order_id)"
            " WHERE s.status = 1 AND l.merchant_id LIKE $1 GROUP BY 1, 2", f"{prefix}-%")
        an_order = await connection.fetchrow(
            "SELECT order_id, merchant_id FROM flashtx.orders WHERE merchant_id LIKE $1"
            " LIMIT 1", f"{prefix}-%")
    finally:  # the legacy schema stays for the re-sync below (the database goes at the end)
        await connection.close()
    assert expected, "the sample has open orders"

    shards = [*engine.topology.stock.handles, *engine.topology.orders.handles]
    before = [s["instance"] for s in await asyncio.gather(*(s.stats.remote() for s in shards))]
    for shard in shards:  # Ray restarts them; they rebuild from Postgres
        ray.kill(shard, no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # (a kill lands a moment later: wait for the new instances, then ask)
        try:
            now = [s["instance"] for s in await asyncio.gather(*(s.stats.remote()
                                                                 for s in shards))]
            if all(a != b for a, b in zip(now, before, strict=True)):
                await asyncio.gather(*(s.check_invariants.remote() for s in shards))
                break
        except ray.exceptions.RayError:
            pass
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)

    stock = engine.topology.stock
    for row in expected:
        shard = stock.shard_of(row["merchant_id"], row["sku_id"])
        [level] = await stock.peer(shard).levels(SkuKeys([row["merchant_id"]],
                                                         [row["sku_id"]]))
        assert level is not None and level.reserved == row["held"], (row, level)
        assert level.available >= 0
    orders = engine.topology.orders
    shard = orders.shard_of_slot(order_slot(an_order["order_id"]))
    [found] = await orders.peer(shard).act(
        ActionBatch.of([("get", an_order["merchant_id"], an_order["order_id"], None, "")]))
    assert found.order_id == an_order["order_id"]

    # A campaign on an imported SKU moves units into buckets; a re-sync from the
    # unchanged legacy system then changes no stock (bucket units are the SKU's) and
    # still reconciles.
    chosen = None
    for row in expected:
        shard = stock.shard_of(row["merchant_id"], row["sku_id"])
        [level] = await stock.peer(shard).levels(SkuKeys([row["merchant_id"]],
                                                         [row["sku_id"]]))
        if level.available >= 4:
            chosen = (row["merchant_id"], row["sku_id"], level)
            break
    assert chosen is not None, "an imported SKU with units available"
    merchant_id, sku_id, level = chosen
    merchant_shard = engine.topology.merchants.handles[
        engine.topology.merchants.shard_of(merchant_id, "")]
    ray.kill(merchant_shard, no_restart=False)  # it loads the imported merchants
    deadline = time.monotonic() + 60
    while True:
        now_ms = int(time.time() * 1000)
        try:
            await merchant_shard.create_campaign.remote(
                merchant_id, "resync", "Resync", now_ms - 1000, now_ms + 3_600_000, 2,
                CampaignSkus.of([(sku_id, 1, 4, 0)]))
            break
        except ray.exceptions.RayError:  # restarting, or not yet restarted (NOT_FOUND)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
    [moved] = await stock.of(merchant_id, sku_id).levels(SkuKeys([merchant_id], [sku_id]))
    assert moved.on_hand == level.on_hand - 4
    again = await run_sync(mapping, SyncOptions(target_dsn=database_dsn, quiet=True,
                                                reject_path=tmp_path / "rejects2.jsonl"))
    assert again.reconciled
    stock_counts = again.counts("stock")
    assert (stock_counts.inserted, stock_counts.updated, stock_counts.removed) == (0, 0, 0)
