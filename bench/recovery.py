"""Recovery time against history: write an order history straight into a fresh flashtx
database (the rows the group commit writes: most orders finished long ago, the newest
ones live), then time a deployment's start until every shard has rebuilt and serves
(from the ledger: the fill writes no snapshot); then every order shard writes a snapshot,
one order shard is killed and timed until Ray has restarted it (from its snapshot), and
the deployment starts again and is timed (from the snapshots). Ray's own start is timed
apart.

    python -m bench.recovery --orders 10000000 --live 100000 --dsn postgresql://.../flashtx_recovery
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from typing import Any

from flashtx.adapters.postgres import Store
from flashtx.engine.config import load_config
from flashtx.engine.orders import OrderStatus, new_order_id
from flashtx.engine.sharding import slot_of

MERCHANT = "recovery-shop"
SKUS = 1000
DAY_MS = 86_400_000
RAY_OWN = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")  # not actors


def history_status(n: int, orders: int, live: int) -> OrderStatus:
    """The state of the n-th order of a history whose last `live` orders are live: of the
    finished ones 8 in 10 fulfilled, 1 cancelled, 1 expired; of the live ones 1 in 10
    reserved, the rest paid."""
    if n >= orders - live:
        return OrderStatus.RESERVED if n % 10 == 0 else OrderStatus.PAID
    return {8: OrderStatus.CANCELLED, 9: OrderStatus.EXPIRED}.get(n % 10,
                                                                  OrderStatus.FULFILLED)


async def fill(dsn: str, orders: int, live: int | None = None, batch: int = 20_000,
               days: float = 30.0, order_shards: int = 2) -> Counter[OrderStatus]:
    """`orders` placed over the last `days`, the newest `live` of them live (default:
    all), fulfilled units summed for `order_shards`. Answers how many orders are in each
    state."""
    live = orders if live is None else live
    store = await Store.open(dsn, 2)
    slots = load_config().slots_total
    now_ms = int(time.time() * 1000)
    span_ms = int(days * DAY_MS)
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
    states: Counter[OrderStatus] = Counter()
    for start in range(0, orders, batch):
        rows, lines, transitions, finished = [], [], [], []
        settled: Counter[tuple[Any, ...]] = Counter()
        for n in range(start, min(orders, start + batch)):
            buyer = f"b{n}"
            slot = slot_of(MERCHANT, buyer, slots)
            order_id = new_order_id(slot, epoch, n)
            sku = f"s{n % SKUS}"
            status = history_status(n, orders, live)
            states[status] += 1
            created = now_ms - span_ms + (n * span_ms) // orders
            deadline = now_ms + 3_600_000 if status == OrderStatus.RESERVED else created + 900_000
            # The engine's row shapes (adapters.postgres: PLACED_ORDER_COLUMNS, …); "placed"
            # is implied by the order's row (migration 0008).
            rows.append((order_id, MERCHANT, buyer, f"k{n}", slot, 100, created, deadline,
                         "", "", "USD"))
            lines.append((order_id, 0, MERCHANT, sku, slot_of(MERCHANT, sku, slots), 1, 100,
                          ""))
            at = created + 60_000
            if status in (OrderStatus.PAID, OrderStatus.FULFILLED):
                transitions.append((order_id, 2, MERCHANT, slot, 2, "pay", False, at, ""))
            if status == OrderStatus.FULFILLED:
                transitions.append((order_id, 3, MERCHANT, slot, 3, "fulfil", False, at, ""))
                settled[(order_shards, slot % order_shards, MERCHANT, "", sku, sku, "")] += 1
            elif status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                event = "cancel" if status == OrderStatus.CANCELLED else "expire"
                transitions.append((order_id, 2, MERCHANT, slot, int(status), event, False,
                                    at, ""))
            if status in (OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                finished.append((order_id, at))
        await store.commit_orders(rows, lines, transitions, [], finished=finished,
                                  settled=[(*key, units) for key, units in settled.items()])
    await store.setting("settled_sales_owners", str(order_shards))
    await store.close()
    return states


def restart_order_shard(index: int) -> float:
    """Kills one order shard's process; answers the seconds until Ray has restarted it
    and it serves again (recovered from Postgres, its state handed to the stock shards)."""
    import ray

    handle = ray.get_actor(f"order-{index}")
    before = ray.get(handle.stats.remote())["instance"]  # a new one after a restart
    started = time.perf_counter()
    ray.kill(handle, no_restart=False)
    while True:
        try:
            if ray.get(handle.stats.remote(), timeout=60)["instance"] != before:
                ray.get(handle.check_invariants.remote(), timeout=60)  # waits for recovery
                return time.perf_counter() - started
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        time.sleep(0.01)  # not back yet


async def drop_snapshots(dsn: str) -> None:
    """No order shard has a snapshot: the next start reads the ledger."""
    store = await Store.open(dsn, 1)
    try:
        async with store.pool.acquire() as connection:
            await connection.execute("DELETE FROM flashtx.order_snapshots")
    finally:
        await store.close()


def wait_for_actor_processes_to_exit(timeout_s: float = 60.0) -> float:
    """Waits until no Ray worker process of this machine runs an actor (Ray names them
    ``ray::ClassName…``; idle workers ``ray::IDLE``, and Ray's own agents run for good);
    answers the seconds waited."""
    import psutil

    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        busy = []
        for process in psutil.process_iter(["cmdline"]):
            command = (process.info["cmdline"] or [""])[0]
            if command.startswith("ray::") and not command.startswith(RAY_OWN):
                busy.append(command)
        if not busy:
            break
        time.sleep(0.05)
    return time.perf_counter() - started


def measure(dsn: str, orders: int, live: int, stock_shards: int,
            order_shards: int) -> dict[str, Any]:
    import os

    import ray

    from flashtx.actors.routing import NAMESPACE
    from flashtx.app import LocalEngine, new_operator_key

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as LocalEngine starts Ray
    asyncio.run(drop_snapshots(dsn))  # the first start reads the ledger (a rerun's too)
    started = time.perf_counter()
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, num_cpus=os.cpu_count() or 2)
    ray_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        engine = LocalEngine.start(postgres_dsn=dsn, redis_url="none",
                                   operator_key=new_operator_key(),
                                   stock_shards=stock_shards, order_shards=order_shards)
        engine.check_invariants()  # waits for every shard's recovery
        ready_s = time.perf_counter() - started
        stats = engine.stats()
        # Then each order shard writes a snapshot, and the same deployment starts again
        # (Ray up) from them: the live orders from one row each instead of the ledger.
        handles = [ray.get_actor(f"order-{i}") for i in range(order_shards)]
        snapshots = ray.get([h.snapshot_now.remote() for h in handles])
        shard_s = restart_order_shard(0)
        engine.stop()
        # The stopped deployment's processes exit first: a start is not timed while
        # they still take the two cores.
        exit_s = wait_for_actor_processes_to_exit()
        started = time.perf_counter()
        engine = LocalEngine.start(postgres_dsn=dsn, redis_url="none",
                                   operator_key=new_operator_key(),
                                   stock_shards=stock_shards, order_shards=order_shards)
        engine.check_invariants()
        snapshot_ready_s = time.perf_counter() - started
        again = engine.stats()
        engine.stop()
    finally:
        ray.shutdown()
    shards = stats["order_shards"]
    return {"orders": orders, "live": live,
            "orders_loaded": sum(s["orders"] for s in shards),
            "first_recovered_from": [s["recovered_from"] for s in shards],
            "ray_start_s": round(ray_s, 2), "start_to_serving_s": round(ready_s, 2),
            "snapshot_bytes": sum(s["bytes"] for s in snapshots),
            "snapshot_seconds": round(max(s["seconds"] for s in snapshots), 2),
            "start_from_snapshots_s": round(snapshot_ready_s, 2),
            "recovered_from": [s["recovered_from"] for s in again["order_shards"]],
            "orders_loaded_from_snapshots": sum(s["orders"] for s in again["order_shards"]),
            "order_shard_restart_s": round(shard_s, 2),
            "stopped_processes_exit_s": round(exit_s, 2),
            "stock_shards": stock_shards, "order_shards": order_shards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders in the history")
    parser.add_argument("--live", type=int, default=None,
                        help="of them, the newest still live (default: a tenth)")
    parser.add_argument("--days", type=float, default=30.0,
                        help="the history spans this many days, up to now")
    parser.add_argument("--dsn", required=True, help="an empty database")
    parser.add_argument("--stock-shards", type=int, default=2)
    parser.add_argument("--order-shards", type=int, default=2)
    parser.add_argument("--skip-fill", action="store_true")
    options = parser.parse_args()
    live = options.orders // 10 if options.live is None else options.live
    if not options.skip_fill:
        started = time.perf_counter()
        asyncio.run(fill(options.dsn, options.orders, live, days=options.days,
                         order_shards=options.order_shards))
        print(f"filled {options.orders:,} orders ({live:,} live) in"
              f" {time.perf_counter() - started:.1f} s")
    print(json.dumps(measure(options.dsn, options.orders, live, options.stock_shards,
                             options.order_shards)))


if __name__ == "__main__":
    main()
