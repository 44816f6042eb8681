"""Crash and recovery during a flash sale: shard actors are killed mid-load, Ray
restarts them, they rebuild from Postgres, and clients retrying with their idempotency
keys end with every invariant intact."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import pytest
import ray

from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.conftest import add_skus, restarted_order_shards
from tests.integration.retrying import materialized, one_unit, until_answered

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BUYERS = 10_000
UNITS = 3_000


async def buy_until_answered(client: Client, buyer: int, gate: asyncio.Semaphore,
                             acked: dict[str, str]) -> str:
    """One buyer: retries retryable failures with the same key until an answer."""
    request = one_unit(f"sale-{buyer}", f"buyer-{buyer}", "drop")

    async def attempt() -> Any:
        async with gate:
            return await client.orders.PlaceOrder(request, timeout=10)

    outcome, response = await until_answered(attempt)
    if response is not None:
        acked[request.idempotency_key] = response.order.order_id
    return outcome


async def test_killing_shards_mid_sale_loses_nothing_and_oversells_nothing(
        engine, shop: Client, database_dsn: str) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="drop", name="Drop", price_minor=100,
                                       on_hand=UNITS, per_buyer_limit=1))
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    before = ray.get([s.stats.remote() for s in engine.topology.orders.handles
                      + engine.topology.stock.handles[:2]])
    acked: dict[str, str] = {}
    gate = asyncio.Semaphore(400)
    sale = asyncio.gather(*(buy_until_answered(shop, b, gate, acked) for b in range(BUYERS)))
    while len(acked) < UNITS // 3:
        await asyncio.sleep(0.05)
    ray.kill(engine.topology.orders.handles[0], no_restart=False)
    while len(acked) < 2 * UNITS // 3:
        await asyncio.sleep(0.05)
    ray.kill(engine.topology.stock.handles[0], no_restart=False)
    ray.kill(engine.topology.stock.handles[1], no_restart=False)
    outcomes = await sale
    after = ray.get([s.stats.remote() for s in engine.topology.orders.handles
                     + engine.topology.stock.handles[:2]])
    restarted = [a["instance"] != b["instance"] for a, b in zip(after, before, strict=True)]
    assert restarted == [True, False, True, True]  # order-0, stock-0 and stock-1 restarted
    assert set(outcomes) <= {"OK", "FAILED_PRECONDITION"}, set(outcomes)
    assert outcomes.count("OK") == len(acked) == UNITS  # sold out exactly, nothing oversold

    connection = await asyncpg.connect(database_dsn)
    try:
        await materialized(connection)
        rows = await connection.fetch(
            "SELECT o.order_id, o.idempotency_key, l.quantity FROM flashtx.orders o"
            " JOIN flashtx.order_lines l USING (order_id) WHERE o.merchant_id = $1",
            merchant_id)
    finally:
        await connection.close()
    stored = {row["idempotency_key"]: row["order_id"] for row in rows}
    assert len(rows) == len(stored)  # one order (and one line) per key
    assert {k: stored.get(k) for k in acked} == acked  # every acknowledged order is there
    assert sum(row["quantity"] for row in rows) <= UNITS

    deadline = time.monotonic() + 30
    while True:  # the restarted stock shard serves again, with every hold accounted for
        try:
            level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
                sku_id="drop", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
            break
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert (level.reserved, level.sold, level.available) == (len(stored), 0, UNITS - len(stored))
    engine.check_invariants()


async def place_once(client: Client, key: str, gate: asyncio.Semaphore,
                     timeout_s: float) -> str:
    request = one_unit(key, key, "ride")
    try:
        async with gate:
            await client.orders.PlaceOrder(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


async def test_postgres_outage_refuses_new_orders_and_loses_nothing(
        engine, shop: Client, postgres_link, database_dsn: str) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="ride", name="Ride", price_minor=1,
                                       on_hand=100_000))
    assert await place_once(shop, "before", asyncio.Semaphore(1), 5) == "OK"
    keys = [f"outage-{n}" for n in range(3_000)]
    gate = asyncio.Semaphore(300)
    postgres_link.cut()
    try:
        started = time.monotonic()
        during = await asyncio.gather(*(place_once(shop, k, gate, 3) for k in keys))
        elapsed_s = time.monotonic() - started
        stats = ray.get([s.stats.remote() for s in engine.topology.orders.handles])
    finally:
        postgres_link.restore()
    # Nothing is acknowledged without its commit; the journals fill to their bound and
    # the rest is refused at once instead of queueing, told the database is unavailable
    # (UNAVAILABLE; a gateway queue refused before its shard said so: RESOURCE_EXHAUSTED).
    assert "OK" not in during
    assert set(during) <= {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
    refused = during.count("UNAVAILABLE") + during.count("RESOURCE_EXHAUSTED")
    assert refused >= len(keys) - 2 * engine.config.journal_entries_max
    assert during.count("UNAVAILABLE") > 0
    assert all(s["commit_failing"] for s in stats)
    assert all(s["journal_depth"] <= engine.config.journal_entries_max for s in stats)
    assert elapsed_s < 60

    # Postgres is back: commits resume by themselves; retries with the same keys get
    # the orders that were waiting, or place them now. One order per key.
    acked: dict[str, str] = {}
    outcomes = await asyncio.gather(*(buy_key(shop, k, acked) for k in keys))
    assert set(outcomes) == {"OK"}
    connection = await asyncpg.connect(database_dsn)
    try:
        await materialized(connection)
        rows = await connection.fetch(
            "SELECT idempotency_key, order_id FROM flashtx.orders"
            " WHERE idempotency_key = ANY($1::text[])", keys)
    finally:
        await connection.close()
    assert {row["idempotency_key"]: row["order_id"] for row in rows} == acked
    assert len(rows) == len(keys)


async def buy_key(client: Client, key: str, acked: dict[str, str]) -> str:
    request = one_unit(key, key, "ride")
    outcome, response = await until_answered(
        lambda: client.orders.PlaceOrder(request, timeout=10))
    if response is not None:
        acked[key] = response.order.order_id
    return outcome


async def test_a_cancel_frees_its_units_only_once_it_is_durable(
        engine, shop: Client, postgres_link) -> None:
    """While a cancel is not yet committed its units stay held: were they sold again and
    the shard crashed before the commit, the order would come back reserved and the SKU
    would be oversold."""
    from flashtx_client.v1 import order_pb2

    await add_skus(shop, stock_pb2.Sku(sku_id="last", name="Last", price_minor=1, on_hand=1))
    placed = (await shop.orders.PlaceOrder(one_unit("first", "buyer-1", "last"))).order
    strong = stock_pb2.GetStockRequest(sku_id="last",
                                       consistency=common_pb2.READ_CONSISTENCY_STRONG)
    postgres_link.cut()
    try:
        cancel = asyncio.ensure_future(shop.orders.CancelOrder(
            order_pb2.CancelOrderRequest(order_id=placed.order_id), timeout=120))
        deadline = time.monotonic() + 60
        while not any(s["journal_depth"] for s in await asyncio.gather(
                *(o.stats.remote() for o in engine.topology.orders.handles))):
            assert time.monotonic() < deadline, "the cancel never reached its journal"
            await asyncio.sleep(0.02)
        # The cancel is in memory and queued for its commit, which cannot happen yet.
        assert (await shop.stock.GetStock(strong)).level.available == 0
        assert not cancel.done()
    finally:
        postgres_link.restore()
    cancelled = (await cancel).order
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert (await shop.stock.GetStock(strong)).level.available == 1


async def test_an_expiry_storm_leaves_room_for_new_orders(
        engine, operator: Client, postgres_link) -> None:
    """Thousands of orders pass their payment deadline at once while Postgres is away:
    the sweeper journals only its share of each order shard's journal, so a new order is
    still taken (and acknowledged once Postgres is back) instead of refused as overloaded."""
    from flashtx_client.v1 import order_pb2
    from tests.integration.conftest import unique_merchant_id

    created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("storm"), name="Storm", payment_window_s=60))
    shards = engine.topology.orders.handles
    storm = 3 * engine.config.journal_entries_max * len(shards)  # well past every journal
    async with Client(engine.address, created.admin_key_secret) as shop:
        await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=1,
                                           on_hand=storm + 1))
        for start in range(0, storm, 1000):
            placed = await shop.orders.PlaceOrders(order_pb2.PlaceOrdersRequest(orders=[
                one_unit(f"storm-{n}", f"buyer-{n}", "s") for n in range(start, start + 1000)]))
            assert all(r.code == common_pb2.RESULT_CODE_OK for r in placed.results), placed
        background = int(engine.config.journal_entries_max
                         * engine.config.journal_background_share)
        postgres_link.cut()
        try:
            await asyncio.to_thread(engine.topology.shift_clock, 61_000)  # all due at once
            deadline = time.monotonic() + 60
            while not all(s["journal_depth"] >= background for s in await asyncio.gather(
                    *(o.stats.remote() for o in shards))):
                assert time.monotonic() < deadline, "the sweeper never expired the orders"
                await asyncio.sleep(0.05)
            depth = sum(s["journal_depth"] for s in await asyncio.gather(
                *(o.stats.remote() for o in shards)))
            late = asyncio.ensure_future(shop.orders.PlaceOrder(
                one_unit("after-the-storm", "buyer-late", "s"), timeout=120))
            # Until it is answered (refused) or journaled (taken, waiting for its commit).
            while not late.done() and sum(s["journal_depth"] for s in await asyncio.gather(
                    *(o.stats.remote() for o in shards))) <= depth:
                assert time.monotonic() < deadline, "the new order went nowhere"
                await asyncio.sleep(0.02)
        finally:
            postgres_link.restore()
        assert (await late).order.order_id  # taken, and durable once Postgres is back


async def test_a_shard_that_looks_up_keys_takes_orders_through_an_outage(
        engine, shop: Client, postgres_link) -> None:
    """An order shard restarted with finished orders in its history asks Postgres about
    every key it does not know. With Postgres cut, a new order waits for that lookup (in
    the journal's room, reported as a failing database) instead of being refused, and is
    acknowledged once Postgres is back; a replay of a finished order that left memory is
    answered from Postgres, never placed again."""
    from flashtx_client.v1 import order_pb2

    await add_skus(shop, stock_pb2.Sku(sku_id="lookup", name="Lookup", price_minor=1,
                                       on_hand=1_000))
    shards = engine.topology.orders.handles
    finished: dict[str, str] = {}
    for n in range(8 * len(shards)):  # a finished order in every shard's history
        order = (await shop.orders.PlaceOrder(one_unit(f"done-{n}", f"b-{n}", "lookup"))).order
        await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=order.order_id))
        finished[f"done-{n}"] = order.order_id
    deadline = time.monotonic() + 60
    # Restarted from Postgres, each with finished orders in its history.
    after = await restarted_order_shards(shards, deadline_s=60)
    assert all(a["keys_looked_up"] for a in after)

    postgres_link.cut()
    try:
        late = asyncio.ensure_future(shop.orders.PlaceOrder(
            one_unit("during-the-outage", "buyer-late", "lookup"), timeout=120))
        while not late.done():  # until it waits in a journal (or is answered)
            stats = await asyncio.gather(*(o.stats.remote() for o in shards))
            if any(s["journal_depth"] for s in stats):
                break
            assert time.monotonic() < deadline + 60, "the new order went nowhere"
            await asyncio.sleep(0.02)
        assert not late.done()
        assert any(s["commit_failing"] for s in stats if s["journal_depth"])
    finally:
        postgres_link.restore()
    placed = (await late).order
    assert placed.order_id and placed.status == order_pb2.ORDER_STATUS_RESERVED
    for key, order_id in list(finished.items())[:4]:  # replays of orders left in Postgres
        replay = await shop.orders.PlaceOrder(one_unit(key, f"b-{key[5:]}", "lookup"))
        assert (replay.order.order_id, replay.replayed) == (order_id, True)
        assert replay.order.status == order_pb2.ORDER_STATUS_CANCELLED
