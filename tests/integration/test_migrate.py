"""`flashtx migrate` against a real Postgres: the sample legacy schema (small size) lives in
its own schema ``legacy_test_<random>``; the merchants it makes have unique ids, and every
assertion about flashtx's tables is scoped to them."""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest

from flashtx.adapters.legacy.mapping import Mapping, parse_mapping
from flashtx.adapters.legacy.sample import SIZES, create_sample, export_csv, sample_mapping
from flashtx.adapters.legacy.sync import SyncOptions, SyncReport, run_sync
from flashtx.adapters.postgres import migrate
from tests.integration.retrying import fresh_database

pytestmark = pytest.mark.slow


@dataclass
class Legacy:
    dsn: str
    schema: str
    prefix: str
    mapping: Mapping
    connection: asyncpg.Connection
    tmp_path: Path

    async def sync(self, **overrides: object) -> SyncReport:
        options = SyncOptions(target_dsn=self.dsn, quiet=True, batch_rows=500,
                              reject_path=self.tmp_path / "rejects.jsonl")
        return await run_sync(self.mapping, replace(options, **overrides))

    def merchant_ids(self) -> list[str]:
        return [f"{self.prefix}-shop-{shop}" for shop in range(1, 4)]


@pytest.fixture
async def legacy(tmp_path: Path) -> AsyncIterator[Legacy]:
    """Legacy tables and the flashtx schema in a database of their own (never the one the
    configured server's engine uses), dropped afterwards."""
    token = secrets.token_hex(4)
    schema, prefix = f"legacy_test_{token}", f"lt{token}"
    async with fresh_database("flashtx_migrate") as dsn:
        connection = await asyncpg.connect(dsn)
        try:
            await migrate(connection)
            await create_sample(connection, schema, SIZES["small"], prefix)
            mapping = parse_mapping(tomllib.loads(sample_mapping(schema)))
            yield Legacy(dsn, schema, prefix, mapping, connection, tmp_path)
        finally:
            await connection.close()


def _assert_reconciled(report: SyncReport) -> None:
    assert report.reconciled, [row for row in report.reconciliation if not row.matches]


async def test_import_then_rerun_changes_nothing(legacy: Legacy) -> None:
    first = await legacy.sync()
    _assert_reconciled(first)
    assert first.merchant_ids == legacy.merchant_ids()
    assert first.counts("orders").inserted == first.counts("orders").accepted > 1500
    assert first.counts("stock").inserted == first.counts("skus").accepted
    rejects = [json.loads(line) for line in (legacy.tmp_path / "rejects.jsonl").open()]
    assert len(rejects) == first.rejected > 0
    reasons = {entry["entity"]: entry["reason"] for entry in rejects}
    assert "must be 1..64" in reasons["skus"] and "status 'weird'" in str(
        [entry["reason"] for entry in rejects if entry["entity"] == "orders"])
    again = await legacy.sync()
    _assert_reconciled(again)
    assert again.written == 0
    verify = await legacy.sync(verify_only=True)
    _assert_reconciled(verify)
    assert verify.written == 0


async def test_imported_rows_follow_flashtx_conventions(legacy: Legacy) -> None:
    _assert_reconciled(await legacy.sync())
    order = await legacy.connection.fetchrow(
        "SELECT o.*, t.status, t.event, t.sequence FROM flashtx.orders o"
        " JOIN flashtx.order_transitions t USING (order_id)"
        " WHERE o.idempotency_key = $1 AND o.merchant_id LIKE $2",
        f"legacy:{await _order_in_state(legacy, 'new')}", f"{legacy.prefix}-%")
    assert order["order_id"].startswith(f"{order['slot']:04x}lg")
    assert (order["sequence"], order["status"], order["event"]) == (1, 1, "imported")
    # its key reserved as the shards' own orders' are (a new order with it is refused)
    assert await legacy.connection.fetchval(
        "SELECT order_id FROM flashtx.order_keys WHERE merchant_id = $1"
        " AND idempotency_key = $2", order["merchant_id"], order["idempotency_key"]
    ) == order["order_id"]
    # the sample's shops have a 15-minute window or none (then the 900 s default)
    assert order["payment_deadline_ms"] == order["created_at_ms"] + 900_000
    # on-hand = legacy available (summed over warehouses) + units held by imported orders
    product = await legacy.connection.fetchval(
        f'SELECT product_id FROM "{legacy.schema}".order_items i'
        f' JOIN "{legacy.schema}".orders o ON o.id = i.order_id'
        " WHERE o.state = 'new' LIMIT 1")
    sku_id = f"SKU-{product:06d}"
    available = await legacy.connection.fetchval(
        f'SELECT sum(qty) FROM "{legacy.schema}".inventory WHERE product_id = $1', product)
    held = await legacy.connection.fetchval(
        f'SELECT coalesce(sum(i.qty), 0) FROM "{legacy.schema}".order_items i'
        f' JOIN "{legacy.schema}".orders o ON o.id = i.order_id'
        " WHERE i.product_id = $1 AND o.state IN ('new', 'paid', 'shipped')", product)
    on_hand = await legacy.connection.fetchval(
        "SELECT sum(delta) FROM flashtx.stock_adjustments WHERE merchant_id LIKE $1"
        " AND sku_id = $2", f"{legacy.prefix}-%", sku_id)
    assert on_hand == available + held


async def test_interrupted_run_resumes(legacy: Legacy) -> None:
    class Interrupted(Exception):
        pass

    def interrupt(entity: str, batch: int) -> None:
        if entity == "orders" and batch >= 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        await legacy.sync(on_batch=interrupt)
    partial = await legacy.connection.fetchval(
        "SELECT count(*) FROM flashtx.orders WHERE merchant_id LIKE $1", f"{legacy.prefix}-%")
    assert 0 < partial < 1500
    resumed = await legacy.sync()
    _assert_reconciled(resumed)
    assert resumed.counts("orders").inserted == resumed.counts("orders").accepted - partial


async def test_resync_applies_only_the_differences(legacy: Legacy) -> None:
    _assert_reconciled(await legacy.sync())
    schema, connection = legacy.schema, legacy.connection
    paid = await _order_in_state(legacy, "new")
    removed = await connection.fetchval(
        f"SELECT id FROM \"{schema}\".orders WHERE state = 'new' AND id <> $1 LIMIT 1", paid)
    unused = await connection.fetchval(
        f'SELECT id FROM "{schema}".products p WHERE id % 101 <> 0 AND id NOT IN (2, 4, 5)'
        f' AND NOT EXISTS (SELECT 1 FROM "{schema}".order_items i WHERE i.product_id = p.id)'
        " ORDER BY id LIMIT 1")  # not a product the other changes below touch
    await connection.execute(f"""
        UPDATE "{schema}".orders SET state = 'paid' WHERE id = {paid};
        DELETE FROM "{schema}".order_items WHERE order_id = {removed};
        DELETE FROM "{schema}".orders WHERE id = {removed};
        UPDATE "{schema}".products SET price = price + 1 WHERE id = 2;
        UPDATE "{schema}".inventory SET qty = qty + 7 WHERE product_id = 4;
        DELETE FROM "{schema}".inventory WHERE product_id = {unused};
        DELETE FROM "{schema}".products WHERE id = {unused};
        INSERT INTO "{schema}".orders SELECT 999999, shop_id, customer_id, 'new', now(),
            price * 2 FROM (SELECT shop_id, price FROM "{schema}".products WHERE id = 5) p,
            LATERAL (SELECT id AS customer_id FROM "{schema}".customers
                     WHERE shop_id = p.shop_id AND id % 97 <> 0 LIMIT 1) c;
        INSERT INTO "{schema}".order_items SELECT 999999 * 8 + 1, 999999, 1, 5, 2, price
            FROM "{schema}".products WHERE id = 5;
    """)
    report = await legacy.sync()
    _assert_reconciled(report)
    orders, skus, stock = (report.counts(name) for name in ("orders", "skus", "stock"))
    assert (orders.inserted, orders.updated, orders.removed) == (1, 1, 1)
    assert (skus.inserted, skus.updated) == (0, 1)
    assert stock.removed == 1 and stock.updated >= 2  # SKU 4; SKU 5, which the new order holds
    events = await connection.fetch(
        "SELECT o.idempotency_key, t.sequence, t.status, t.event, t.refunded"
        " FROM flashtx.orders o JOIN flashtx.order_transitions t USING (order_id)"
        " WHERE o.idempotency_key = ANY($1::text[]) AND o.merchant_id LIKE $2 AND t.sequence = 2",
        [f"legacy:{paid}", f"legacy:{removed}"], f"{legacy.prefix}-%")
    assert {(row[0], row[2], row[3]) for row in events} == {
        (f"legacy:{paid}", 2, "legacy-resync"), (f"legacy:{removed}", 4, "legacy-removed")}
    # The removed order is finished: marked, so an order shard's recovery skips it
    # (migration 0012); the paid one is live.
    finished = dict(await connection.fetch(
        "SELECT idempotency_key, finished_at_ms IS NOT NULL FROM flashtx.orders"
        " WHERE idempotency_key = ANY($1::text[]) AND merchant_id LIKE $2",
        [f"legacy:{paid}", f"legacy:{removed}"], f"{legacy.prefix}-%"))
    assert finished == {f"legacy:{paid}": False, f"legacy:{removed}": True}
    assert (await legacy.sync()).written == 0


async def test_csv_export_reconciles_with_the_same_import(legacy: Legacy) -> None:
    _assert_reconciled(await legacy.sync())
    csv_dir = legacy.tmp_path / "csv"
    await export_csv(legacy.connection, legacy.schema, csv_dir)
    report = await legacy.sync(csv_dir=csv_dir, verify_only=True)
    _assert_reconciled(report)
    assert report.counts("orders").accepted > 1500


async def _order_in_state(legacy: Legacy, state: str) -> int:
    return int(await legacy.connection.fetchval(
        f'SELECT id FROM "{legacy.schema}".orders WHERE state = $1 ORDER BY id LIMIT 1',
        state))
