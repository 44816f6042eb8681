"""Recovery time: write N orders straight into a fresh flashtx database (as the group
commit would), then time a deployment's start until every shard has rebuilt and serves.

    python -m bench.recovery --orders 1000000 --dsn postgresql://.../flashtx_recovery
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

from adapters.postgres import Store
from engine.config import load_config
from engine.orders import new_order_id
from engine.sharding import slot_of

MERCHANT = "recovery-shop"
SKUS = 1000


async def fill(dsn: str, orders: int, batch: int = 20_000) -> None:
    store = await Store.open(dsn, 2)
    slots = load_config().slots_total
    now_ms = int(time.time() * 1000)
    async with store.pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO flashtx.merchants VALUES ($1, 'Recovery shop', 900, $2)"
            " ON CONFLICT DO NOTHING", MERCHANT, now_ms)
        await connection.executemany(
            "INSERT INTO flashtx.skus VALUES ($1, $2, $3, 'sku', 100, 0, $4)"
            " ON CONFLICT DO NOTHING",
            [(MERCHANT, f"s{i}", slot_of(MERCHANT, f"s{i}", slots), now_ms) for i in range(SKUS)])
        await connection.executemany(
            "INSERT INTO flashtx.stock_adjustments (merchant_id, sku_id, slot, delta, reason,"
            " at_ms) VALUES ($1, $2, $3, $4, 'fill', $5)",
            [(MERCHANT, f"s{i}", slot_of(MERCHANT, f"s{i}", slots), orders, now_ms)
             for i in range(SKUS)])
    epoch = secrets.token_hex(3)
    for start in range(0, orders, batch):
        rows, lines, transitions, outbox = [], [], [], []
        for n in range(start, min(orders, start + batch)):
            buyer = f"b{n}"
            slot = slot_of(MERCHANT, buyer, slots)
            order_id = new_order_id(slot, epoch, n)
            sku = f"s{n % SKUS}"
            # A tenth still RESERVED (holds), the rest PAID (sales): both are rebuilt.
            status = 1 if n % 10 == 0 else 2
            # The engine's row shapes (adapters.postgres: PLACED_ORDER_COLUMNS, …); "placed"
            # is implied by the order's row (migration 0008).
            rows.append((order_id, MERCHANT, buyer, f"k{n}", slot, 100, now_ms,
                         now_ms + 3_600_000, "", "", "USD"))
            lines.append((order_id, 0, MERCHANT, sku, slot_of(MERCHANT, sku, slots), 1, 100,
                          ""))
            if status == 2:
                transitions.append((order_id, 2, MERCHANT, slot, 2, "pay", False, now_ms, ""))
        await store.commit_orders(rows, lines, transitions, outbox)
    await store.close()


def measure(dsn: str, orders: int, stock_shards: int, order_shards: int) -> dict[str, float]:
    from flashtx.app import LocalEngine, new_operator_key

    started = time.perf_counter()
    engine = LocalEngine.start(postgres_dsn=dsn, redis_url="none", operator_key=new_operator_key(),
                               stock_shards=stock_shards, order_shards=order_shards)
    ready_s = time.perf_counter() - started
    stats = engine.stats()
    engine.check_invariants()
    engine.stop()
    loaded = sum(s["orders"] for s in stats["order_shards"])
    return {"orders": orders, "orders_loaded": loaded, "start_to_serving_s": round(ready_s, 2),
            "stock_shards": stock_shards, "order_shards": order_shards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--dsn", required=True, help="an empty database")
    parser.add_argument("--stock-shards", type=int, default=2)
    parser.add_argument("--order-shards", type=int, default=2)
    parser.add_argument("--skip-fill", action="store_true")
    options = parser.parse_args()
    if not options.skip_fill:
        started = time.perf_counter()
        asyncio.run(fill(options.dsn, options.orders))
        print(f"filled {options.orders:,} orders in {time.perf_counter() - started:.1f} s")
    print(json.dumps(measure(options.dsn, options.orders, options.stock_shards,
                             options.order_shards)))


if __name__ == "__main__":
    main()
