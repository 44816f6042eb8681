"""Soak: many orders through one deployment on a compressed clock, with memory, table
sizes and recovery time recorded as the history grows.

The clock is compressed by configuration: payment windows of seconds, finished orders
leaving memory after a second, an idempotency window of a minute, outbox rows pruned
after half a minute and order shard snapshots every 10 s, so a run of tens of minutes
spans hundreds of windows. Orders are paid and fulfilled (a tenth, fulfilled a few
seconds after payment), cancelled (2 %) or left to expire (the rest), as in a flash
sale. At each checkpoint the load pauses, the resident memory of every engine process,
the outbox and order tables are measured, and the deployment is stopped and started
again (Ray stays up): its start-to-serving time is the recovery time at that history
length.

    python -m bench.soak --orders 10000000 --checkpoints 6 \
        --dsn postgresql://.../flashtx_soak --json soak.json --plot soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from flashtx.bench.recovery import wait_for_actor_processes_to_exit
from flashtx_client import Client
from flashtx_client.v1 import (
    cart_pb2,
    common_pb2,
    merchant_pb2,
    order_pb2,
    stock_pb2,
)

SKUS = 100
BUYERS = 100_000
# The compressed clock (engine configuration of the run).
COMPRESSED = {"finished_order_linger_s": 1.0, "idempotency_window_s": 60,
              "outbox_retention_s": 30, "outbox_prune_interval_s": 5.0,
              "reservation_grace_ms": 2_000, "key_orders_per_s": 1_000_000,
              "key_orders_burst": 1_000_000, "merchant_orders_per_s": 1_000_000,
              "merchant_orders_burst": 1_000_000,
              # Snapshots well within the outbox's retention (older ones cannot be used).
              "order_snapshot_interval_s": 10.0}
FULFIL_AFTER_S = 3.0


async def set_up(address: str, operator_key: str, payment_window_s: int,
                 cart_hold_s: int = 0) -> str:
    """A merchant with SKUs of (practically) endless stock; answers its admin secret."""
    async with Client(address, operator_key) as operator:
        created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
            merchant_id="soak-shop", name="Soak shop", payment_window_s=payment_window_s,
            cart_hold_s=cart_hold_s))
    async with Client(address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[
            stock_pb2.Sku(sku_id=f"s{i}", name=f"SKU {i}", price_minor=100,
                          on_hand=10**12) for i in range(SKUS)]))
    return str(created.admin_key_secret)


class Load:
    """Places orders in batches, and pays, fulfils and cancels some of them."""

    def __init__(self, batch: int, concurrency: int, cancel_percent: int = 2,
                 cart_changes: int = 0) -> None:
        """`cancel_percent` of the orders are cancelled; `cart_changes` cart changes
        are made per batch placed, over and over on the same few carts (the churn that
        must not grow a shard)."""
        self.batch, self.concurrency = batch, concurrency
        self.cancel_percent, self.cart_changes = cancel_percent, cart_changes
        self.counter = itertools.count()
        self.outcomes: dict[str, int] = defaultdict(int)
        self.placed = 0

    async def run(self, address: str, secret: str, until: int) -> None:
        """Places orders numbered up to `until`, then waits for their payments and
        fulfilments."""
        follow_ups: list[asyncio.Task[None]] = []
        async with Client(address, secret) as shop:
            async def placer() -> None:
                while True:
                    first = next(self.counter) * self.batch
                    if first >= until:
                        return
                    numbers = range(first, min(until, first + self.batch))
                    request = order_pb2.PlaceOrdersRequest(orders=[
                        order_pb2.PlaceOrderRequest(
                            idempotency_key=f"soak-{n}", buyer_id=f"b{n % BUYERS}",
                            lines=[order_pb2.OrderLine(sku_id=f"s{n % SKUS}", quantity=1)])
                        for n in numbers])
                    while True:
                        try:
                            answer = await shop.orders.PlaceOrders(request, timeout=60)
                            break
                        except grpc.aio.AioRpcError as error:  # overload: the same keys again
                            self.outcomes[f"retried {error.code().name}"] += 1
                            await asyncio.sleep(0.2)
                    for n, result in zip(numbers, answer.results, strict=True):
                        code = common_pb2.ResultCode.Name(result.code)
                        self.outcomes[code.removeprefix("RESULT_CODE_")] += 1
                        if not result.order.order_id:
                            continue
                        fate = n % 100
                        if fate < 10:
                            follow_ups.append(asyncio.ensure_future(
                                self._pay_and_fulfil(shop, result.order.order_id)))
                        elif fate < 10 + self.cancel_percent:
                            follow_ups.append(asyncio.ensure_future(
                                self._step(shop, "CancelOrder", result.order.order_id)))
                    if self.cart_changes:
                        await self._churn_carts(shop, first)
                    self.placed += len(numbers)
                    if len(follow_ups) > 20_000:
                        done = [task for task in follow_ups if task.done()]
                        for task in done:
                            follow_ups.remove(task)

            await asyncio.gather(*(placer() for _ in range(self.concurrency)))
            await asyncio.gather(*follow_ups)
        self.counter = itertools.count(until // self.batch)

    async def _churn_carts(self, shop: Client, first: int) -> None:
        """Changes the quantity of a line of the same 20 carts, over and over."""
        changes = [shop.carts.UpdateQuantity(cart_pb2.UpdateQuantityRequest(
            buyer_id=f"churn-{(first + k) % 20}", sku_id=f"s{k % SKUS}",
            quantity=1 + (first + k) % 3), timeout=30) for k in range(self.cart_changes)]
        for answer in await asyncio.gather(*changes, return_exceptions=True):
            code = answer.code().name if isinstance(answer, grpc.aio.AioRpcError) else "OK"
            self.outcomes[f"UpdateQuantity {code}"] += 1

    async def _pay_and_fulfil(self, shop: Client, order_id: str) -> None:
        await self._step(shop, "PayOrder", order_id)
        await asyncio.sleep(FULFIL_AFTER_S)
        await self._step(shop, "FulfillOrder", order_id)

    async def _step(self, shop: Client, rpc: str, order_id: str) -> None:
        request: Any = {"PayOrder": order_pb2.PayOrderRequest,
                        "CancelOrder": order_pb2.CancelOrderRequest,
                        "FulfillOrder": order_pb2.FulfillOrderRequest}[rpc](order_id=order_id)
        for _ in range(20):
            try:
                await getattr(shop.orders, rpc)(request, timeout=30)
                self.outcomes[f"{rpc} OK"] += 1
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.RESOURCE_EXHAUSTED):
                    self.outcomes[f"{rpc} {error.code().name}"] += 1  # e.g. paid too late
                    return
                await asyncio.sleep(0.2)
        self.outcomes[f"{rpc} gave up"] += 1


def actor_memory(stats: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Resident bytes of the engine's shards and gateways, summed per kind."""
    import psutil

    found: dict[str, int] = defaultdict(int)
    for kind, actors in stats.items():
        for actor in actors:
            try:
                found[kind] += psutil.Process(actor["pid"]).memory_info().rss
            except psutil.Error:
                continue
    return dict(found)


async def table_sizes(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        return {table: int(await connection.fetchval(f"SELECT count(*) FROM flashtx.{table}"))
                for table in ("orders", "outbox", "settled_sales")} | {
            "live_orders": int(await connection.fetchval(
                "SELECT count(*) FROM flashtx.orders WHERE finished_at_ms IS NULL"))}
    finally:
        await connection.close()


async def vacuum(dsn: str) -> float:
    """VACUUM ANALYZE of the run's database, as autovacuum would do in the background
    (for a Postgres that runs without it); answers its seconds."""
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE)")
        return round(time.perf_counter() - started, 1)
    finally:
        await connection.close()


def settled(engine: Any, dsn: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Waits until the order shards hold live orders alone (every finished order has left
    memory: the expiries have run and the linger passed); answers their stats."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats: dict[str, Any] = engine.stats()
        in_memory = sum(s["orders"] for s in stats["order_shards"])
        live = asyncio.run(table_sizes(dsn))["live_orders"]
        if in_memory <= live or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def soak(options: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    from flashtx.actors.routing import NAMESPACE
    from flashtx.app import LocalEngine, new_operator_key

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, num_cpus=os.cpu_count() or 2)
    operator_key = new_operator_key()
    overrides = {**COMPRESSED, "postgres_dsn": options.dsn, "operator_key": operator_key,
                 "order_shards": options.order_shards, "stock_shards": options.stock_shards}
    points: list[dict[str, Any]] = []
    try:
        engine = LocalEngine.start(**overrides)
        secret = asyncio.run(set_up(engine.address, operator_key, options.payment_window_s,
                                    options.cart_hold_s))
        load = Load(options.batch, options.concurrency, options.cancel_percent,
                    options.cart_changes)
        started = time.perf_counter()
        for point in range(1, options.checkpoints + 1):
            until = options.orders * point // options.checkpoints
            leg = time.perf_counter()
            asyncio.run(load.run(engine.address, secret, until))
            leg_s = time.perf_counter() - leg
            stats = settled(engine, options.dsn)
            vacuum_s = asyncio.run(vacuum(options.dsn)) if options.vacuum else None
            sizes = asyncio.run(table_sizes(options.dsn))
            memory = actor_memory(stats)
            engine.stop()
            wait_for_actor_processes_to_exit()  # a start is not timed beside their exit
            restart = time.perf_counter()
            for attempt in range(3):  # a free port picked may be taken meanwhile
                try:
                    engine = LocalEngine.start(**overrides)
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    time.sleep(1)
            engine.check_invariants()  # waits for every shard's recovery
            recovery_s = time.perf_counter() - restart
            again = engine.stats()["order_shards"]
            points.append({
                "orders_placed": until, "leg_orders_per_s": round(
                    (until - options.orders * (point - 1) // options.checkpoints) / leg_s),
                "elapsed_s": round(time.perf_counter() - started, 1),
                "recovery_s": round(recovery_s, 2), "vacuum_s": vacuum_s,
                # Where each order shard's live orders came from, and its steps' seconds.
                "recovered_from": [s["recovered_from"] for s in again],
                "recovery_steps_s": [s["recovery_seconds"] for s in again],
                "memory_mb": {kind: round(rss / 2**20, 1) for kind, rss in memory.items()},
                "orders_in_memory": sum(s["orders"] for s in stats["order_shards"]),
                "keys_retained": sum(s["keys_retained"] for s in stats["order_shards"]),
                "orders_evicted": sum(s["orders_evicted"] for s in stats["order_shards"]),
                "carts": sum(s["carts"] for s in stats["order_shards"]),
                "expiry_entries": {
                    "order": sum(s["expiry_entries"] for s in stats["order_shards"]),
                    "stock": sum(s["expiry_entries"] for s in stats["stock_shards"])},
                "tables": sizes, "outcomes": dict(load.outcomes)})
            print(json.dumps(points[-1]), flush=True)
        engine.check_invariants()
        engine.stop()
    finally:
        ray.shutdown()
    return points


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed = [p["orders_placed"] / 1e6 for p in points]
    figure, (memory, recovery) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in sorted({k for p in points for k in p["memory_mb"]}):
        memory.plot(placed, [p["memory_mb"].get(kind, 0) for p in points], marker="o",
                    label=kind)
    memory.set_xlabel("orders placed (millions)")
    memory.set_ylabel("resident memory, MiB (all actors of the class)")
    if all("expiry_entries" in p for p in points):
        entries = memory.twinx()
        for kind, style in (("order", ":"), ("stock", "-.")):
            entries.plot(placed, [p["expiry_entries"][kind] / 1e3 for p in points],
                         color="black", linestyle=style, label=f"{kind} expiry entries (k)")
        entries.set_ylabel("expiry heap entries, thousands")
        entries.legend(fontsize=7, loc="lower right")
    memory.legend(fontsize=7)
    recovery.plot(placed, [p["recovery_s"] for p in points], marker="o", label="recovery s")
    recovery.set_xlabel("orders placed (millions)")
    recovery.set_ylabel("start to serving, s (Ray up)")
    outbox = recovery.twinx()
    outbox.plot(placed, [p["tables"]["outbox"] / 1e3 for p in points], color="grey",
                linestyle="--", label="outbox rows (k)")
    outbox.set_ylabel("outbox rows, thousands")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--dsn", required=True, help="an empty database")
    parser.add_argument("--batch", type=int, default=500, help="orders per PlaceOrders")
    parser.add_argument("--concurrency", type=int, default=4, help="PlaceOrders in flight")
    parser.add_argument("--payment-window-s", type=int, default=2,
                        help="unpaid orders expire after this many seconds")
    parser.add_argument("--cancel-percent", type=int, default=2,
                        help="orders cancelled (of every 100; 10 more are paid)")
    parser.add_argument("--cart-changes", type=int, default=0,
                        help="cart quantity changes per batch, on the same 20 carts")
    parser.add_argument("--cart-hold-s", type=int, default=0,
                        help="the merchant's cart_hold_s (>0: cart lines hold stock)")
    parser.add_argument("--stock-shards", type=int, default=2)
    parser.add_argument("--order-shards", type=int, default=2)
    parser.add_argument("--vacuum", action="store_true",
                        help="VACUUM ANALYZE at each checkpoint (a Postgres without autovacuum)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    options = parser.parse_args()
    points = soak(options)
    if options.json:
        options.json.write_text(json.dumps(points, indent=1))
    if options.plot:
        plot(points, options.plot)


if __name__ == "__main__":
    main()
