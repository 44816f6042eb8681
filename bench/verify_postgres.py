"""Checks acknowledged orders against the engine's own Postgres ledger (schema ``flashtx``).

Invariant 2 says an acknowledged order is in Postgres: every acknowledged order the
client kept is looked up there by id, with its lines. Answers None when the engine keeps
no Postgres state (no ``flashtx.orders`` table), so the check is skipped, not passed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

MISSING_ORDERS = """
SELECT count(*) FROM unnest($1::text[], $2::text[]) AS acked(order_id, lines)
WHERE acked.lines IS DISTINCT FROM (
    SELECT string_agg(line.sku_id || 'x' || line.quantity, ',' ORDER BY line.sku_id)
    FROM flashtx.orders o JOIN flashtx.order_lines line USING (order_id)
    WHERE o.order_id = acked.order_id AND o.merchant_id = $3
)
"""
CHUNK_ORDERS = 5000
MATERIALIZED_WAIT_S = 120.0


def _lines_text(lines: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{sku}x{quantity}" for sku, quantity in sorted(lines))


async def missing_acked_orders(
    dsn: str, merchant_id: str, acked: list[Any]
) -> tuple[int, int] | None:
    """(acknowledged orders absent from Postgres or with other lines, orders checked),
    once the materializers have written every committed batch to the query tables (at
    most MATERIALIZED_WAIT_S; what is left then counts as missing)."""
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchval("SELECT to_regclass('flashtx.orders')") is None:
            return None
        deadline = time.monotonic() + MATERIALIZED_WAIT_S
        while await connection.fetchval(
                "SELECT count(*) FROM flashtx.order_journal") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        missing = 0
        for start in range(0, len(acked), CHUNK_ORDERS):
            chunk = acked[start : start + CHUNK_ORDERS]
            order_ids = [order_id for order_id, _, _, _ in chunk]
            lines = [_lines_text(order_lines) for _, _, _, order_lines in chunk]
            missing += await connection.fetchval(MISSING_ORDERS, order_ids, lines, merchant_id)
        return missing, len(acked)
    finally:
        await connection.close()
