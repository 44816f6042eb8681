"""Baseline: naive Postgres row locking, as most shops first build a flash sale.

Per order, in one transaction through an asyncpg pool: for each line
``UPDATE sku SET stock = stock - q WHERE sku_id = $1 AND stock >= q`` (zero rows: out of
stock, roll back), then INSERT the order and its lines. Durable (synchronous_commit on).
Batch mode sends a batch's orders in one transaction, each in its own savepoint, after
locking the batch's SKU rows in sku_id order (without it, batches deadlock on hot rows).
No per-buyer limit is checked: the baseline does less work than the engine.
Its tables live in their own schema, recreated for every run.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from flashtx.bench.scenarios import OrderSpec, SkuSpec
from flashtx.bench.targets.base import Outcome, report_first_error

SCHEMA = "flashtx_bench_naive"
DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.sku (sku_id text PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0));
CREATE TABLE {SCHEMA}.orders (
    order_id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    buyer_id text NOT NULL,
    status text NOT NULL DEFAULT 'reserved',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {SCHEMA}.order_line (
    order_id bigint NOT NULL REFERENCES {SCHEMA}.orders, sku_id text NOT NULL, quantity int NOT NULL
);
"""
TAKE_STOCK = f"UPDATE {SCHEMA}.sku SET stock = stock - $2 WHERE sku_id = $1 AND stock >= $2"
RETURN_STOCK = f"UPDATE {SCHEMA}.sku SET stock = stock + $2 WHERE sku_id = $1"
INSERT_ORDER = (
    f"INSERT INTO {SCHEMA}.orders (idempotency_key, buyer_id) VALUES ($1, $2) RETURNING order_id"
)
INSERT_LINES = (
    f"INSERT INTO {SCHEMA}.order_line (order_id, sku_id, quantity) "
    "SELECT $1, * FROM unnest($2::text[], $3::int[])"
)
LOCK_SKUS = f"SELECT 1 FROM {SCHEMA}.sku WHERE sku_id = ANY($1::text[]) ORDER BY sku_id FOR UPDATE"
READ_STOCK = f"SELECT stock FROM {SCHEMA}.sku WHERE sku_id = $1"
PAY = f"UPDATE {SCHEMA}.orders SET status = 'paid' WHERE order_id = $1 AND status = 'reserved'"
CANCEL = (
    f"UPDATE {SCHEMA}.orders SET status = 'cancelled' "
    "WHERE order_id = $1 AND status IN ('reserved', 'paid')"
)


class _OutOfStock(Exception):
    pass


async def prepare(dsn: str, skus: list[SkuSpec]) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(DDL)
        await connection.copy_records_to_table(
            "sku", schema_name=SCHEMA, records=[(s.sku_id, s.on_hand) for s in skus]
        )
    finally:
        await connection.close()
    return {"dsn": dsn}


async def oversold_units(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval(
                f"SELECT coalesce(sum(-stock), 0) FROM {SCHEMA}.sku WHERE stock < 0"
            )
        )
    finally:
        await connection.close()


class PostgresClient:
    name = "postgres"
    checks_replay = False

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        size = int(self._info.get("pool_size", 16))
        self._pool = await asyncpg.create_pool(self._info["dsn"], min_size=size, max_size=size)

    async def place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]:
        assert self._pool is not None
        try:
            async with self._pool.acquire() as connection:
                if not batch:
                    return [await self._place_one(connection, order) for order in orders]
                async with connection.transaction():
                    skus = sorted({sku for order in orders for sku, _ in order.lines})
                    await connection.execute(LOCK_SKUS, skus)
                    return [await self._place_one(connection, order) for order in orders]
        except (asyncpg.PostgresError, OSError) as error:
            report_first_error(self.name, error)
            return [("error", "")] * len(orders)

    async def _place_one(self, connection: asyncpg.Connection, order: OrderSpec) -> Outcome:
        try:
            async with connection.transaction():
                for sku_id, quantity in order.lines:
                    if await connection.execute(TAKE_STOCK, sku_id, quantity) != "UPDATE 1":
                        raise _OutOfStock
                order_id = await connection.fetchval(
                    INSERT_ORDER, order.idempotency_key, order.buyer_id
                )
                skus = [sku for sku, _ in order.lines]
                quantities = [quantity for _, quantity in order.lines]
                await connection.execute(INSERT_LINES, order_id, skus, quantities)
        except _OutOfStock:
            return ("out_of_stock", "")
        except asyncpg.UniqueViolationError:
            return ("conflict", "")
        return ("ok", str(order_id))

    async def read(self, sku_id: str) -> str:
        assert self._pool is not None
        await self._pool.fetchval(READ_STOCK, sku_id)
        return "ok"

    async def pay(self, order_ref: str) -> str:
        assert self._pool is not None
        status = await self._pool.execute(PAY, int(order_ref))
        return "ok" if status == "UPDATE 1" else "failed_precondition"

    async def cancel(self, order_ref: str, order: OrderSpec) -> str:
        assert self._pool is not None
        async with self._pool.acquire() as connection, connection.transaction():
            if await connection.execute(CANCEL, int(order_ref)) != "UPDATE 1":
                return "failed_precondition"
            for sku_id, quantity in order.lines:
                await connection.execute(RETURN_STOCK, sku_id, quantity)
        return "ok"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
