"""A sample legacy commerce schema with generated data, and the mapping that migrates it.

The legacy system keys everything by integer ids, keeps prices as decimals, payment windows
in minutes, and stock per warehouse; its order states are words. Sizes: ``full`` is 5
merchants, 100,000 SKUs, 200,000 customers and 1,000,000 orders (~2.5M lines); ``small``
is for tests. A few rows are invalid on purpose (a SKU code with a space, an order with an
unknown state, a customer handle with a space) so that rejects have something to report.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

__all__ = ["SAMPLE_MAPPING", "SIZES", "SampleSize", "create_sample", "export_csv"]


@dataclass(frozen=True, slots=True)
class SampleSize:
    merchants: int
    skus: int
    customers: int
    orders: int


SIZES = {"full": SampleSize(5, 100_000, 200_000, 1_000_000),
         "small": SampleSize(3, 300, 200, 2_000)}
STATES = ("new", "paid", "shipped", "shipped", "shipped", "cancelled", "abandoned")
_BATCH_ROWS = 50_000

SCHEMA_SQL = """
CREATE TABLE "{s}".shops (id integer PRIMARY KEY, code text NOT NULL, title text NOT NULL,
    pay_minutes integer, opened_at timestamptz NOT NULL);
CREATE TABLE "{s}".customers (id integer PRIMARY KEY, shop_id integer NOT NULL,
    handle text NOT NULL);
CREATE TABLE "{s}".products (id integer PRIMARY KEY, shop_id integer NOT NULL,
    code text NOT NULL, title text NOT NULL, price numeric(12, 2) NOT NULL,
    max_per_customer integer);
CREATE TABLE "{s}".inventory (product_id integer NOT NULL, warehouse text NOT NULL,
    qty integer NOT NULL, PRIMARY KEY (product_id, warehouse));
CREATE TABLE "{s}".orders (id integer PRIMARY KEY, shop_id integer NOT NULL,
    customer_id integer NOT NULL, state text NOT NULL, placed_at timestamptz NOT NULL,
    grand_total numeric(14, 2) NOT NULL);
CREATE TABLE "{s}".order_items (id bigint PRIMARY KEY, order_id integer NOT NULL,
    line integer NOT NULL, product_id integer NOT NULL, qty integer NOT NULL,
    price numeric(12, 2) NOT NULL);
"""

SAMPLE_MAPPING = """\
# flashtx migrate mapping for the sample legacy schema (adapters/legacy/sample.py)
[source]
schema = "{schema}"

[defaults]
payment_window_s = 900          # when a merchant has no window of its own

[merchants]
table = "shops"
[merchants.columns]
key = "id"                      # what other tables refer to
merchant_id = "code"
name = "title"
payment_window_s = {{ column = "pay_minutes", scale = 60 }}
created_at = "opened_at"

[customers]
table = "customers"
[customers.columns]
key = "id"
buyer_id = "handle"

[skus]
table = "products"
[skus.columns]
key = "id"
merchant = "shop_id"
sku_id = "code"
name = "title"
price_minor = {{ column = "price", scale = 100 }}
per_buyer_limit = "max_per_customer"

[stock]                         # summed over the rows of a SKU (one per warehouse)
table = "inventory"
[stock.columns]
sku = "product_id"
available = "qty"               # units free to sell now, not held by any order

[orders]
table = "orders"
[orders.columns]
key = "id"
merchant = "shop_id"
customer = "customer_id"
status = "state"
created_at = "placed_at"
total_minor = {{ column = "grand_total", scale = 100 }}
[orders.status_map]
new = "RESERVED"
paid = "PAID"
shipped = "FULFILLED"
cancelled = "CANCELLED"
abandoned = "EXPIRED"

[order_lines]
table = "order_items"
[order_lines.columns]
order = "order_id"
line_no = "line"
sku = "product_id"
quantity = "qty"
unit_price_minor = {{ column = "price", scale = 100 }}
"""


def sample_mapping(schema: str) -> str:
    return SAMPLE_MAPPING.format(schema=schema)


async def create_sample(connection: asyncpg.Connection, schema: str, size: SampleSize,
                        prefix: str = "legacy", seed: int = 7) -> None:
    """Creates ``schema`` (dropping one of that name) and fills it."""
    generator = random.Random(seed)
    now = datetime.now(UTC)
    await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    await connection.execute(SCHEMA_SQL.format(s=schema))
    shops = [(shop, f"{prefix}-shop-{shop}", f"Shop {shop} ({prefix})",
              15 if shop % 2 else None, now - timedelta(days=900 + shop))
             for shop in range(1, size.merchants + 1)]
    await _copy(connection, schema, "shops", iter(shops))
    await _copy(connection, schema, "customers", _customers(size))
    prices = [Decimal(generator.randrange(100, 50_000)) / 100 for _ in range(size.skus)]
    await _copy(connection, schema, "products", _products(size, prices))
    await _copy(connection, schema, "inventory", _inventory(size, generator))
    orders, items = _orders(size, prices, generator, now)
    await _copy(connection, schema, "orders", orders)
    await _copy(connection, schema, "order_items", items)
    await connection.execute(
        f'CREATE INDEX ON "{schema}".order_items (order_id);'
        f' ANALYZE "{schema}".orders; ANALYZE "{schema}".order_items')


async def _copy(connection: asyncpg.Connection, schema: str, table: str,
                rows: Iterator[tuple[Any, ...]]) -> None:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH_ROWS:
            await connection.copy_records_to_table(table, schema_name=schema, records=batch)
            batch = []
    if batch:
        await connection.copy_records_to_table(table, schema_name=schema, records=batch)


def shop_of(entity_id: int, size: SampleSize) -> int:
    return entity_id % size.merchants + 1


def _customers(size: SampleSize) -> Iterator[tuple[Any, ...]]:
    for customer in range(1, size.customers + 1):
        handle = f"bad handle {customer}" if customer % 97 == 0 else f"c{customer}@mail"
        yield customer, shop_of(customer, size), handle


def _products(size: SampleSize, prices: list[Decimal]) -> Iterator[tuple[Any, ...]]:
    for product in range(1, size.skus + 1):
        code = f"SKU {product}" if product % 101 == 0 else f"SKU-{product:06d}"
        limit = 5 if product % 10 == 0 else None
        yield (product, shop_of(product, size), code, f"Product {product}",
               prices[product - 1], limit)


def _inventory(size: SampleSize, generator: random.Random) -> Iterator[tuple[Any, ...]]:
    for product in range(1, size.skus + 1):
        yield product, "north", generator.randrange(0, 500)
        if product % 3:
            yield product, "south", generator.randrange(0, 200)


def _orders(size: SampleSize, prices: list[Decimal], generator: random.Random,
            now: datetime) -> tuple[Iterator[tuple[Any, ...]], Iterator[tuple[Any, ...]]]:
    """Orders and their items, generated once and handed out as two iterators."""
    orders: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    skus_per_shop = size.skus // size.merchants
    customers_per_shop = size.customers // size.merchants
    for order in range(1, size.orders + 1):
        shop = shop_of(order, size)
        # customer and products of the same shop: ids ≡ shop - 1 (mod merchants)
        customer = generator.randrange(1, customers_per_shop) * size.merchants + shop - 1
        state = "weird" if order % 499 == 0 else generator.choice(STATES)
        placed_at = now - (timedelta(minutes=generator.randrange(1, 10)) if state == "new"
                           else timedelta(minutes=generator.randrange(60, 600_000)))
        chosen = {generator.randrange(1, skus_per_shop) * size.merchants + shop - 1
                  for _ in range(generator.randrange(1, 5))}
        total = Decimal(0)
        for line, product in enumerate(sorted(chosen), start=1):
            quantity = generator.randrange(1, 4)
            total += prices[product - 1] * quantity
            items.append((order * 8 + line, order, line, product, quantity,
                          prices[product - 1]))
        orders.append((order, shop, customer, state, placed_at, total))
    return iter(orders), iter(items)


async def export_csv(connection: asyncpg.Connection, schema: str, directory: Path) -> None:
    """One ``<table>.csv`` with a header per table, as a legacy export would look."""
    directory.mkdir(parents=True, exist_ok=True)
    for table in ("shops", "customers", "products", "inventory", "orders", "order_items"):
        await connection.copy_from_table(table, schema_name=schema,
                                         output=str(directory / f"{table}.csv"),
                                         format="csv", header=True)
