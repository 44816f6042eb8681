"""Every SQL statement the importer runs against flashtx's tables (schema ``flashtx``, as
adapters/migrations creates it). Bulk writes use ``COPY``; reads that a whole run needs
(SKUs, on-hand, held units) are one aggregate each, bounded by the number of SKUs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from flashtx.adapters.postgres import (
    ADJUSTMENT_COLUMNS,
    LINE_COLUMNS,
    ORDER_COLUMNS,
    TRANSITION_COLUMNS,
)

__all__ = ["IMPORTED_EVENTS_SQL", "LATEST_SQL", "copy", "existing_merchants",
           "existing_orders", "existing_skus", "held_units", "lock_migration",
           "on_hand_units", "removed_orders", "upsert_merchants", "update_skus"]

SKU_COLUMNS = ("merchant_id", "sku_id", "slot", "name", "price_minor", "per_buyer_limit",
               "updated_at_ms")
COLUMNS = {"orders": ORDER_COLUMNS, "order_lines": LINE_COLUMNS, "skus": SKU_COLUMNS,
           "order_transitions": TRANSITION_COLUMNS, "stock_adjustments": ADJUSTMENT_COLUMNS}
# Two migrations of the same data at once would both add the same stock difference.
_MIGRATE_LOCK = 0x0F1A5E
# transitions the importer wrote, as opposed to ones flashtx made while serving
IMPORTED_EVENTS_SQL = "(t.event = 'imported' OR t.event LIKE 'legacy-%')"
# Every order's latest (status, event); no transition is the implied "placed" (0008).
LATEST_SQL = ("SELECT o.order_id, coalesce(t.status, 1::smallint) AS status,"
              " coalesce(t.event, 'placed') AS event FROM flashtx.orders o"
              " LEFT JOIN (SELECT DISTINCT ON (t.order_id) t.order_id, t.status, t.event"
              "   FROM flashtx.order_transitions t WHERE t.merchant_id = ANY($1::text[])"
              "   ORDER BY t.order_id, t.sequence DESC) t USING (order_id)"
              " WHERE o.merchant_id = ANY($1::text[])")


async def lock_migration(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATE_LOCK))


async def copy(connection: asyncpg.Connection, table: str,
               records: Sequence[tuple[Any, ...]]) -> None:
    """Rows into a table; orders with their idempotency keys reserved (order_keys,
    migration 0014: the engine's shards check a new order's key there)."""
    if records:
        await connection.copy_records_to_table(table, schema_name="flashtx", records=records,
                                               columns=COLUMNS[table])
    if records and table == "orders":
        merchant, key, order = (ORDER_COLUMNS.index(c) for c in (
            "merchant_id", "idempotency_key", "order_id"))
        await connection.copy_records_to_table(
            "order_keys", schema_name="flashtx",
            records=[(r[merchant], r[key], r[order]) for r in records],
            columns=("merchant_id", "idempotency_key", "order_id"))


async def existing_merchants(connection: asyncpg.Connection,
                             merchant_ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = await connection.fetch(
        "SELECT merchant_id, name, payment_window_s FROM flashtx.merchants"
        " WHERE merchant_id = ANY($1::text[])", merchant_ids)
    return {row[0]: (row[1], row[2]) for row in rows}


async def upsert_merchants(connection: asyncpg.Connection,
                           rows: Sequence[tuple[Any, ...]]) -> None:
    await connection.executemany(
        "INSERT INTO flashtx.merchants (merchant_id, name, payment_window_s, created_at_ms)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id) DO UPDATE SET"
        " name = EXCLUDED.name, payment_window_s = EXCLUDED.payment_window_s", rows)


async def existing_skus(connection: asyncpg.Connection, merchant_ids: list[str],
                        ) -> dict[tuple[str, str], tuple[str, int, int]]:
    rows = await connection.fetch(
        "SELECT merchant_id, sku_id, name, price_minor, per_buyer_limit FROM flashtx.skus"
        " WHERE merchant_id = ANY($1::text[])", merchant_ids)
    return {(row[0], row[1]): (row[2], row[3], row[4]) for row in rows}


async def update_skus(connection: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    await connection.executemany(
        "UPDATE flashtx.skus SET name = $4, price_minor = $5, per_buyer_limit = $6,"
        " updated_at_ms = $7 WHERE merchant_id = $1 AND sku_id = $2 AND slot = $3", rows)


async def on_hand_units(connection: asyncpg.Connection, merchant_ids: list[str],
                        ) -> dict[tuple[str, str], tuple[int, str | None]]:
    """(merchant, SKU) → (on_hand, reason of the latest importer adjustment or None).
    Units a campaign moved into its buckets (``<sku>~<campaign>~<k>``) count as the SKU's:
    the orders holding them name the SKU, and legacy stock knows no campaigns."""
    rows = await connection.fetch(
        "SELECT merchant_id, split_part(sku_id, '~', 1), sum(delta)::bigint,"
        " (array_agg(reason ORDER BY adjustment_id DESC)"
        "   FILTER (WHERE reason LIKE 'legacy-%'))[1]"
        " FROM flashtx.stock_adjustments WHERE merchant_id = ANY($1::text[])"
        " GROUP BY 1, 2", merchant_ids)
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


async def held_units(connection: asyncpg.Connection,
                     merchant_ids: list[str]) -> dict[tuple[str, str], int]:
    """Units held per SKU by orders that are RESERVED, PAID or FULFILLED (the engine
    counts these as reserved or sold)."""
    rows = await connection.fetch(
        f"WITH last AS ({LATEST_SQL})"
        " SELECT l.merchant_id, l.sku_id, sum(l.quantity)::bigint FROM flashtx.order_lines l"
        " JOIN last USING (order_id) WHERE last.status IN (1, 2, 3)"
        " AND l.merchant_id = ANY($1::text[]) GROUP BY 1, 2", merchant_ids)
    return {(row[0], row[1]): row[2] for row in rows}


async def existing_orders(connection: asyncpg.Connection,
                          order_ids: list[str]) -> dict[str, asyncpg.Record]:
    """order_id → its header, latest (sequence, status) and the status the importer
    last wrote (legacy_status)."""
    rows = await connection.fetch(
        "SELECT o.order_id, o.buyer_id, o.total_minor, o.created_at_ms,"
        " o.payment_deadline_ms, o.slot, coalesce(last.sequence, 1) AS sequence,"
        " coalesce(last.status, 1::smallint) AS status,"
        " (SELECT t.status FROM flashtx.order_transitions t WHERE t.order_id = o.order_id"
        f"   AND {IMPORTED_EVENTS_SQL} ORDER BY t.sequence DESC LIMIT 1) AS legacy_status"
        " FROM flashtx.orders o LEFT JOIN LATERAL (SELECT t.sequence, t.status"
        "   FROM flashtx.order_transitions t WHERE t.order_id = o.order_id"
        "   ORDER BY t.sequence DESC LIMIT 1) last ON true"
        " WHERE o.order_id = ANY($1::text[])", order_ids)
    return {row["order_id"]: row for row in rows}


async def create_seen_table(connection: asyncpg.Connection) -> None:
    await connection.execute(
        "CREATE TEMP TABLE IF NOT EXISTS legacy_seen_orders (idempotency_key text NOT NULL)")
    await connection.execute("TRUNCATE legacy_seen_orders")


async def add_seen(connection: asyncpg.Connection, idempotency_keys: Sequence[str]) -> None:
    """Remembers, for this session, which legacy orders the run read (rejected ones too)."""
    if idempotency_keys:
        await connection.copy_records_to_table(
            "legacy_seen_orders", records=[(key,) for key in idempotency_keys])


async def removed_orders(connection: asyncpg.Connection,
                         merchant_ids: list[str]) -> list[asyncpg.Record]:
    """Imported orders of these merchants that this run did not see in the legacy data,
    and that the importer has not already marked removed."""
    await connection.execute("ANALYZE legacy_seen_orders")
    return list(await connection.fetch(
        "WITH gone AS (SELECT o.order_id, o.merchant_id, o.slot FROM flashtx.orders o"
        "  WHERE o.merchant_id = ANY($1::text[]) AND o.idempotency_key LIKE 'legacy:%'"
        "  AND NOT EXISTS (SELECT 1 FROM legacy_seen_orders s"
        "   WHERE s.idempotency_key = o.idempotency_key))"
        " SELECT gone.*, last.sequence, last.status FROM gone"
        " JOIN flashtx.order_states last USING (order_id)"
        " WHERE last.event <> 'legacy-removed'", merchant_ids))


async def mark_finished(connection: asyncpg.Connection, merchant_ids: list[str]) -> int:
    """Marks the imported orders whose latest state is finished (migration 0012: recovery
    then skips them), and has the next order shard to start sum fulfilled units again
    from the ledger (settled_sales). Answers how many it marked."""
    status = await connection.execute(
        "UPDATE flashtx.orders o SET finished_at_ms = s.at_ms FROM flashtx.order_states s"
        " WHERE s.order_id = o.order_id AND s.status IN (3, 4, 5)"
        "   AND o.finished_at_ms IS NULL AND o.merchant_id = ANY($1::text[])", merchant_ids)
    marked = int(status.split()[-1])
    # Imported orders have no outbox rows: order shards' snapshots taken before (or by a
    # shard that has not loaded them) are not used from now on (migration 0013).
    await connection.execute(
        "INSERT INTO flashtx.settings (name, value) VALUES ('orders_generation', '1')"
        " ON CONFLICT (name) DO UPDATE SET value ="
        " (flashtx.settings.value::bigint + 1)::text")
    if marked:
        await connection.execute(
            "DELETE FROM flashtx.settings WHERE name = 'settled_sales_owners'")
    return marked
