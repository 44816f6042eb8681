"""Baseline: the physical limit of flashtx's durable write, bare asyncpg COPY.

What the engine writes for one placed order (an order row, a line row per line and an
outbox row carrying the serialized event, with the same columns and indexes as the
engine's tables, migrations 0001-0008), written with one COPY per table in one
transaction per call: a PlaceOrders batch is one commit of all its orders, a unary call
one commit of one order. Durable (synchronous_commit on). No stock, no idempotency
checks beyond the tables' unique keys, no events relayed: nothing but the write, so the
engine's durable throughput divided by this one's says how much of the database's write
capacity the engine turns into orders. Its tables live in their own schema, recreated
for every run.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from flashtx.bench.scenarios import OrderSpec, SkuSpec
from flashtx.bench.targets.base import Outcome, report_first_error

SCHEMA = "flashtx_bench_copy"
DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.orders (
    order_id text PRIMARY KEY, merchant_id text NOT NULL, buyer_id text NOT NULL,
    idempotency_key text NOT NULL, slot integer NOT NULL, total_minor bigint NOT NULL,
    created_at_ms bigint NOT NULL, payment_deadline_ms bigint NOT NULL,
    key_id text NOT NULL DEFAULT '', campaign_id text NOT NULL DEFAULT '',
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX ON {SCHEMA}.orders (slot);
CREATE TABLE {SCHEMA}.order_lines (
    order_id text NOT NULL, line_no smallint NOT NULL, merchant_id text NOT NULL,
    sku_id text NOT NULL, sku_slot integer NOT NULL, quantity integer NOT NULL,
    unit_price_minor bigint NOT NULL, stock_key text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE {SCHEMA}.outbox (
    outbox_id bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE,
    merchant_id text NOT NULL, event_type text NOT NULL, order_id text NOT NULL DEFAULT '',
    sequence integer NOT NULL DEFAULT 0, payload bytea NOT NULL,
    created_at_ms bigint NOT NULL, relayed boolean NOT NULL DEFAULT false,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX ON {SCHEMA}.outbox (txid, outbox_id);
"""
ORDER_COLUMNS = ("order_id", "merchant_id", "buyer_id", "idempotency_key", "slot",
                 "total_minor", "created_at_ms", "payment_deadline_ms", "key_id", "campaign_id")
LINE_COLUMNS = ("order_id", "line_no", "merchant_id", "sku_id", "sku_slot", "quantity",
                "unit_price_minor", "stock_key")
OUTBOX_COLUMNS = ("event_id", "merchant_id", "event_type", "order_id", "sequence", "payload",
                  "created_at_ms")
PAYLOAD = bytes(160)  # about the size of a serialized order.reserved event


async def prepare(dsn: str, skus: list[SkuSpec]) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(DDL)
    finally:
        await connection.close()
    return {"dsn": dsn}


class CopyClient:
    name = "copy"
    checks_replay = False

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self._pool: asyncpg.Pool | None = None
        self._prefix = f"{os.getpid():x}-"
        self._count = 0

    async def open(self) -> None:
        size = int(self._info.get("pool_size", 16))
        self._pool = await asyncpg.create_pool(self._info["dsn"], min_size=size, max_size=size)

    async def place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]:
        assert self._pool is not None
        rows, lines, events, ids = [], [], [], []
        for order in orders:
            self._count += 1
            order_id = f"{self._prefix}{self._count}"
            ids.append(order_id)
            rows.append((order_id, "m", order.buyer_id, order.idempotency_key, 0,
                         100 * sum(q for _, q in order.lines), 0, 0, "", ""))
            lines.extend((order_id, n, "m", sku_id, 0, quantity, 100, "")
                         for n, (sku_id, quantity) in enumerate(order.lines))
            events.append((f"{order_id}:1", "m", "order.reserved", order_id, 1, PAYLOAD, 0))
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.copy_records_to_table(
                    "orders", schema_name=SCHEMA, records=rows, columns=ORDER_COLUMNS)
                await connection.copy_records_to_table(
                    "order_lines", schema_name=SCHEMA, records=lines, columns=LINE_COLUMNS)
                await connection.copy_records_to_table(
                    "outbox", schema_name=SCHEMA, records=events, columns=OUTBOX_COLUMNS)
        except asyncpg.UniqueViolationError:  # a replayed key: the whole commit is refused
            return [("conflict", "")] * len(orders)
        except (asyncpg.PostgresError, OSError) as error:
            report_first_error(self.name, error)
            return [("error", "")] * len(orders)
        return [("ok", order_id) for order_id in ids]

    async def read(self, sku_id: str) -> str:
        return "ok"  # nothing to read: this baseline measures the write alone

    async def pay(self, order_ref: str) -> str:
        return "ok"

    async def cancel(self, order_ref: str, order: OrderSpec) -> str:
        return "ok"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
