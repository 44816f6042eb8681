"""Reconciliation: per entity, the rows flashtx should hold (counted and checksummed while
the legacy side was read) against what it holds (counted and checksummed in SQL).

A row's checksum is 60 bits of md5 over its fields joined by '|' (transform.checksum_of);
an entity's checksum is the sum over its rows, so neither side needs an order. Scope: the
migrated merchants' imported rows (idempotency key ``legacy:…``; SKUs with an importer
adjustment), leaving out rows the importer marked removed. Stock compares *available*
(on-hand minus units held by reserved, paid and fulfilled orders) of SKUs where it is not 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from flashtx.adapters.legacy.target import LATEST_SQL

__all__ = ["Counted", "ReconcileRow", "reconcile"]


def _checksum_sql(fields: str) -> str:
    return (f"count(*), coalesce(sum(('x' || substr(md5(concat_ws('|', {fields})), 1, 15))"
            "::bit(60)::bigint), 0)")


_IMPORTED_SKUS = (
    "SELECT merchant_id, sku_id FROM flashtx.stock_adjustments"
    " WHERE merchant_id = ANY($1::text[]) AND reason LIKE 'legacy-%' GROUP BY 1, 2"
    " HAVING (array_agg(reason ORDER BY adjustment_id DESC))[1] <> 'legacy-removed'")
_LIVE_ORDERS = (
    f"SELECT o.* , last.status FROM flashtx.orders o JOIN ({LATEST_SQL}) last USING (order_id)"
    " WHERE o.merchant_id = ANY($1::text[]) AND o.idempotency_key LIKE 'legacy:%'"
    " AND last.event <> 'legacy-removed'")
_HELD = (
    f"SELECT l.merchant_id, l.sku_id, sum(l.quantity) AS units FROM flashtx.order_lines l"
    f" JOIN ({LATEST_SQL}) last USING (order_id) WHERE last.status IN (1, 2, 3)"
    " AND l.merchant_id = ANY($1::text[]) GROUP BY 1, 2")
_STOCK = (
    "SELECT a.merchant_id, a.sku_id, sum(a.delta) - coalesce(max(h.units), 0) AS available"
    # A campaign's bucket units (<sku>~<campaign>~<k>) are the SKU's.
    " FROM (SELECT merchant_id, split_part(sku_id, '~', 1) AS sku_id, delta"
    "       FROM flashtx.stock_adjustments) a JOIN imported USING (merchant_id, sku_id)"
    " LEFT JOIN held h USING (merchant_id, sku_id) GROUP BY 1, 2")

FLASHTX_SQL = {
    "merchants": "SELECT " + _checksum_sql("merchant_id, name, payment_window_s")
                 + " FROM flashtx.merchants WHERE merchant_id = ANY($1::text[])",
    "skus": "SELECT " + _checksum_sql("s.merchant_id, s.sku_id, name, price_minor,"
                                      " per_buyer_limit")
            + f" FROM flashtx.skus s JOIN ({_IMPORTED_SKUS}) i USING (merchant_id, sku_id)",
    "orders": "SELECT " + _checksum_sql(
        "order_id, merchant_id, buyer_id, idempotency_key, total_minor, created_at_ms,"
        " payment_deadline_ms, status") + f" FROM ({_LIVE_ORDERS}) o",
    "order_lines": "SELECT " + _checksum_sql(
        "l.order_id, line_no, sku_id, quantity, unit_price_minor")
        + f" FROM flashtx.order_lines l JOIN ({_LIVE_ORDERS}) o USING (order_id)",
    "stock": f"WITH imported AS ({_IMPORTED_SKUS}), held AS ({_HELD}), stock AS ({_STOCK})"
             " SELECT " + _checksum_sql("merchant_id, sku_id, available")
             + " FROM stock WHERE available <> 0",
}


@dataclass(frozen=True, slots=True)
class ReconcileRow:
    entity: str
    legacy_rows: int  # read from the legacy side
    rejected_rows: int
    expected_rows: int  # what flashtx should hold
    flashtx_rows: int
    expected_checksum: int
    flashtx_checksum: int

    @property
    def matches(self) -> bool:
        return (self.expected_rows, self.expected_checksum) == (self.flashtx_rows,
                                                                self.flashtx_checksum)


class Counted(Protocol):
    """What the sync counted of one entity (``sync.EntityCounts``)."""

    legacy: int
    rejected: int
    accepted: int
    checksum: int


async def reconcile(connection: asyncpg.Connection, merchant_ids: list[str],
                    counts_of: Callable[[str], Counted]) -> list[ReconcileRow]:
    """Each entity's rows and checksum in flashtx against what the sync counted of it."""
    rows: list[ReconcileRow] = []
    for entity, sql in FLASHTX_SQL.items():
        counts = counts_of(entity)
        flashtx_rows, flashtx_checksum = await connection.fetchrow(sql, merchant_ids)
        rows.append(ReconcileRow(entity, counts.legacy, counts.rejected, counts.accepted,
                                 flashtx_rows, counts.checksum, int(flashtx_checksum)))
    return rows
