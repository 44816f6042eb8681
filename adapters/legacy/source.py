"""Where legacy rows come from: a schema of a Postgres database, or a directory of CSV
exports (one ``<table>.csv`` per mapped table, with a header row) that is staged into a
scratch schema with ``COPY`` and then read exactly like a Postgres source.

Rows are streamed in key order (``key::text`` in the "C" collation, which orders like
Python's ``str``) from one read-only REPEATABLE READ transaction, so every entity of a run
sees the same snapshot of the legacy database and memory stays bounded by the batch size.
"""

from __future__ import annotations

import csv
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from flashtx.adapters.legacy.mapping import Entity, Mapping

__all__ = ["LegacySource", "open_source"]

Row: TypeAlias = asyncpg.Record


class LegacySource:
    def __init__(self, connection: asyncpg.Connection, mapping: Mapping, schema: str) -> None:
        self.connection = connection
        self.mapping = mapping
        self.schema = schema

    def _select(self, entity: Entity, order_by: str) -> str:
        columns = ", ".join(f'{column.sql()} AS "{field_name}"'
                            for field_name, column in entity.columns.items()
                            if field_name != "key")
        key = entity.columns.get("key")
        if key is not None:
            columns = f'{key.sql()}::text AS "key", {columns}'
        where = f" WHERE {entity.where}" if entity.where else ""
        return (f'SELECT {columns} FROM "{self.schema}"."{entity.table}"{where}'
                f' ORDER BY ({order_by})::text COLLATE "C"')

    async def count(self, name: str) -> int:
        entity = self.mapping.entities.get(name)
        if entity is None:
            return 0
        where = f" WHERE {entity.where}" if entity.where else ""
        return int(await self.connection.fetchval(
            f'SELECT count(*) FROM "{self.schema}"."{entity.table}"{where}'))

    async def rows(self, name: str, batch_rows: int) -> AsyncIterator[list[Row]]:
        """Batches of one entity's rows, in legacy key order."""
        entity = self.mapping.entities.get(name)
        if entity is None:
            return
        sql = self._select(entity, entity.columns["key"].sql())
        cursor = await self.connection.cursor(sql)
        while batch := await cursor.fetch(batch_rows):
            yield batch

    async def stock(self, batch_rows: int) -> AsyncIterator[list[Row]]:
        """Available units per legacy SKU key, summed over the stock rows (warehouses)."""
        entity = self.mapping.entities.get("stock")
        if entity is None:
            return
        sku, available = entity.columns["sku"].sql(), entity.columns["available"].sql()
        where = f" WHERE {entity.where}" if entity.where else ""
        sql = (f'SELECT {sku}::text AS sku, sum(({available})::numeric) AS available'
               f' FROM "{self.schema}"."{entity.table}"{where}'
               f' GROUP BY 1 ORDER BY ({sku})::text COLLATE "C"')
        cursor = await self.connection.cursor(sql)
        while batch := await cursor.fetch(batch_rows):
            yield batch

    async def orders(self, batch_rows: int) -> AsyncIterator[list[tuple[Row, list[Row]]]]:
        """Batches of (order, its lines): two cursors in key order, merged."""
        orders = self.mapping.entities["orders"]
        lines = self.mapping.entities["order_lines"]
        order_cursor = await self.connection.cursor(
            self._select(orders, orders.columns["key"].sql()))
        line_cursor = await self.connection.cursor(
            self._select(lines, lines.columns["order"].sql()))
        pending: list[Row] = []
        exhausted = False
        while order_batch := await order_cursor.fetch(batch_rows):
            last_key = order_batch[-1]["key"]
            while not exhausted and (not pending or _order_key(pending[-1]) <= last_key):
                more = await line_cursor.fetch(batch_rows)
                exhausted = not more
                pending.extend(more)
            yield _attach(order_batch, pending)
            pending = [line for line in pending if _order_key(line) > last_key]


def _order_key(line: Row) -> str:
    return str(line["order"])


def _attach(orders: list[Row], lines: list[Row]) -> list[tuple[Row, list[Row]]]:
    by_order: dict[str, list[Row]] = {}
    for line in lines:
        by_order.setdefault(_order_key(line), []).append(line)
    return [(order, by_order.get(order["key"], [])) for order in orders]


@asynccontextmanager
async def open_source(mapping: Mapping, dsn: str, csv_dir: Path | None = None,
                      ) -> AsyncIterator[LegacySource]:
    """A source over ``dsn`` (the legacy database), or over CSV files staged into a
    scratch schema of ``dsn`` that is dropped afterwards."""
    connection = await asyncpg.connect(dsn)
    staged = ""
    try:
        if csv_dir is not None:
            staged = f"legacy_csv_{secrets.token_hex(4)}"
            await _stage_csv(connection, mapping, csv_dir, staged)
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            yield LegacySource(connection, mapping, staged or mapping.schema)
    finally:
        if staged:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{staged}" CASCADE')
        await connection.close()


async def _stage_csv(connection: asyncpg.Connection, mapping: Mapping, csv_dir: Path,
                     schema: str) -> None:
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    for table in sorted({entity.table for entity in mapping.entities.values()}):
        path = csv_dir / f"{table}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the mapping reads table {table}")
        header = _header(path)
        columns = ", ".join(f'"{name}" text' for name in header)
        await connection.execute(f'CREATE TABLE "{schema}"."{table}" ({columns})')
        await connection.copy_to_table(table, schema_name=schema, source=str(path),
                                       format="csv", header=True)
        await connection.execute(f'ANALYZE "{schema}"."{table}"')


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        header: list[Any] = next(csv.reader(handle), [])
    if not header or any(not name or '"' in name for name in header):
        raise ValueError(f"{path}: needs a header row of column names")
    return header
