"""Carts, campaigns and hot-SKU buckets through the real gRPC port on the session's real
local Ray cluster (2 stock shards, 2 order shards, 2 gateways), with Postgres.

Time is moved with the engine's injectable clock (``Topology.shift_clock``), never slept.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from flashtx.actors.ports import wait_all
from flashtx.app import LocalEngine
from flashtx.engine.messages import SkuKeys
from flashtx_client import Client
from flashtx_client.v1 import (
    campaign_pb2,
    cart_pb2,
    common_pb2,
    merchant_pb2,
    order_pb2,
    stock_pb2,
)
from tests.integration.conftest import add_skus, unique_merchant_id
from tests.integration.retrying import eventually, materialized
from tests.integration.test_order_path import error_reason

pytestmark = pytest.mark.cluster

MINUTE_MS = 60_000
STRONG = common_pb2.READ_CONSISTENCY_STRONG


@pytest.fixture
def clock(engine: LocalEngine) -> Iterator[object]:
    """Moves the engine's clock; puts it back after the test."""
    def shift(offset_ms: int) -> None:
        engine.topology.shift_clock(offset_ms)

    yield shift
    engine.topology.shift_clock(0)


def now_ms() -> int:
    return int(time.time() * 1000)


async def create_campaign(client: Client, campaign_id: str, skus: list[campaign_pb2.CampaignSku],
                          starts_at_ms: int, ends_at_ms: int,
                          buckets: int = 1) -> campaign_pb2.Campaign:
    response = await client.campaigns.CreateCampaign(campaign_pb2.CreateCampaignRequest(
        campaign_id=campaign_id, name=campaign_id, starts_at_ms=starts_at_ms,
        ends_at_ms=ends_at_ms, skus=skus, buckets=buckets))
    return response.campaign


def sale(sku_id: str, price: int, allotment: int = 0, limit: int = 0) -> campaign_pb2.CampaignSku:
    return campaign_pb2.CampaignSku(sku_id=sku_id, sale_price_minor=price, allotment=allotment,
                                    per_buyer_limit=limit)


def campaign_order(key: str, buyer: str, campaign_id: str,
                   *lines: tuple[str, int]) -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        idempotency_key=key, buyer_id=buyer, campaign_id=campaign_id,
        lines=[order_pb2.OrderLine(sku_id=s, quantity=q) for s, q in lines])


async def attempt(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name}:{error_reason(error)}"
    return "OK"


async def buy(client: Client, request: order_pb2.PlaceOrderRequest) -> str:
    """A buyer that retries what the engine says to retry (a shard restarting, units
    moving between buckets) with the same key, as clients are told to."""
    for _ in range(100):
        outcome = await attempt(client.orders.PlaceOrder(request))
        if not outcome.startswith(("UNAVAILABLE", "RESOURCE_EXHAUSTED")):
            return outcome
        await asyncio.sleep(0.05)
    return outcome


async def level(client: Client, sku_id: str) -> stock_pb2.StockLevel:
    response = await client.stock.GetStock(stock_pb2.GetStockRequest(sku_id=sku_id,
                                                                      consistency=STRONG))
    return response.level


async def add(client: Client, buyer: str, sku_id: str, quantity: int,
              campaign_id: str = "") -> cart_pb2.Cart:
    response = await client.carts.AddItem(cart_pb2.AddItemRequest(
        buyer_id=buyer, campaign_id=campaign_id, sku_id=sku_id, quantity=quantity))
    return response.cart


async def test_campaign_window_prices_and_refusals(shop: Client, clock: object) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="tv", name="TV", price_minor=50_000,
                                       on_hand=100))
    start = now_ms() + 10 * MINUTE_MS
    campaign = await create_campaign(shop, "blackfriday", [sale("tv", 29_900, allotment=40)],
                                     start, start + 10 * MINUTE_MS)
    assert campaign.skus[0].units == 40 and campaign.skus[0].available == 40
    # The allotment left the SKU's own stock.
    assert (await level(shop, "tv")).available == 60
    before = await attempt(shop.orders.PlaceOrder(
        campaign_order("early", "b1", "blackfriday", ("tv", 1))))
    assert before == "FAILED_PRECONDITION:CAMPAIGN_NOT_ACTIVE"
    # Carts fill before the start.
    cart = await add(shop, "b2", "tv", 1, "blackfriday")
    assert [(line.sku_id, line.quantity) for line in cart.lines] == [("tv", 1)]

    clock(10 * MINUTE_MS + 1000)  # type: ignore[operator]
    placed = await shop.orders.PlaceOrder(campaign_order("in", "b1", "blackfriday", ("tv", 1)))
    assert placed.order.lines[0].unit_price_minor == 29_900
    assert placed.order.campaign_id == "blackfriday"
    checkout = await shop.carts.Checkout(cart_pb2.CheckoutRequest(
        buyer_id="b2", campaign_id="blackfriday", idempotency_key="b2-checkout"))
    assert checkout.order.total_minor == 29_900
    regular = await shop.orders.PlaceOrder(campaign_order("reg", "b1", "", ("tv", 1)))
    assert regular.order.lines[0].unit_price_minor == 50_000

    clock(20 * MINUTE_MS + 1000)  # type: ignore[operator]
    after = await attempt(shop.orders.PlaceOrder(
        campaign_order("late", "b3", "blackfriday", ("tv", 1))))
    assert after == "FAILED_PRECONDITION:CAMPAIGN_NOT_ACTIVE"
    late_cart = await attempt(add(shop, "b4", "tv", 1, "blackfriday"))
    assert late_cart == "FAILED_PRECONDITION:CAMPAIGN_NOT_ACTIVE"
    # A retry of an order placed in the window still answers it after the end.
    replay = await shop.orders.PlaceOrder(campaign_order("in", "b1", "blackfriday", ("tv", 1)))
    assert replay.replayed and replay.order.order_id == placed.order.order_id

    # Once over, unsold units go back to the SKU (the two sold stay reserved).
    async def settled() -> None:
        tv = await level(shop, "tv")
        assert (tv.on_hand, tv.available) == (98, 97)
    await eventually(settled)


async def test_bad_campaign_input_changes_nothing(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=10, on_hand=5))
    start = now_ms() + MINUTE_MS
    for skus, ends, buckets, field in (
            ([sale("a", 5)], start - 1, 1, "ends_at_ms"),
            ([sale("a", 5)], start + MINUTE_MS, 99, "buckets"),
            ([sale("a", 5), sale("a", 5)], start + MINUTE_MS, 1, "skus[1].sku_id"),
            ([sale("a~1", 5)], start + MINUTE_MS, 1, "skus[0].sku_id")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_campaign(shop, "bad", skus, start, ends, buckets)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (raised.value.details() or "")
    too_many = await attempt(create_campaign(shop, "big", [sale("a", 5, allotment=6)], start,
                                             start + MINUTE_MS))
    assert too_many == "FAILED_PRECONDITION:FAILED_PRECONDITION"
    missing = await attempt(create_campaign(shop, "nope", [sale("zz", 5)], start,
                                            start + MINUTE_MS))
    assert missing == "NOT_FOUND:NOT_FOUND"
    assert (await level(shop, "a")).available == 5
    listed = await shop.campaigns.ListCampaigns(campaign_pb2.ListCampaignsRequest())
    assert list(listed.campaigns) == []


async def test_allotment_and_buckets_under_concurrency(shop: Client) -> None:
    """K=4 buckets on 2 stock shards: every unit sells, none twice, and nobody is told
    "out of stock" while a unit is left anywhere."""
    await add_skus(shop, stock_pb2.Sku(sku_id="hot", name="Hot", price_minor=1000,
                                       on_hand=500))
    start = now_ms() - 1000
    await create_campaign(shop, "storm", [sale("hot", 100, allotment=200)], start,
                          start + 60 * MINUTE_MS, buckets=4)
    results = await asyncio.gather(*(buy(shop, campaign_order(f"k{i}", f"buyer-{i}", "storm",
                                                              ("hot", 1))) for i in range(200)))
    assert Counter(results) == {"OK": 200}  # buckets empty unevenly: fallback finds units
    more = await asyncio.gather(*(buy(shop, campaign_order(
        f"x{i}", f"late-{i}", "storm", ("hot", 1))) for i in range(50)))
    assert Counter(more) == {"FAILED_PRECONDITION:OUT_OF_STOCK": 50}
    campaign = (await shop.campaigns.GetCampaign(
        campaign_pb2.GetCampaignRequest(campaign_id="storm"))).campaign
    state = campaign.skus[0]
    assert (state.units, state.available, state.reserved, state.sold_out) == (200, 0, 200, True)
    hot = await level(shop, "hot")
    assert (hot.on_hand, hot.available) == (300, 300)  # the allotment was never exceeded


async def test_oversubscribed_buckets_sell_exactly_the_allotment(shop: Client,
                                                                 engine: LocalEngine) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="p", name="P", price_minor=1000, on_hand=90))
    start = now_ms() - 1000
    await create_campaign(shop, "rush", [sale("p", 10, allotment=90)], start,
                          start + 60 * MINUTE_MS, buckets=2)
    results = await asyncio.gather(*(buy(shop, campaign_order(
        f"k{i}", f"b{i}", "rush", ("p", 1 + i % 3))) for i in range(120)))
    wanted = {f"k{i}": 1 + i % 3 for i in range(120)}
    sold = sum(wanted[f"k{i}"] for i, r in enumerate(results) if r == "OK")
    assert sold <= 90
    assert set(results) <= {"OK", "FAILED_PRECONDITION:OUT_OF_STOCK"}
    campaign = (await shop.campaigns.GetCampaign(
        campaign_pb2.GetCampaignRequest(campaign_id="rush"))).campaign
    assert campaign.skus[0].reserved == sold
    assert campaign.skus[0].available == 90 - sold
    # Refusals came only when no bucket could serve the order.
    assert campaign.skus[0].available < 3
    engine.check_invariants()


async def test_per_buyer_limit_holds_across_carts_and_orders(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="gpu", name="GPU", price_minor=70_000,
                                       on_hand=100))
    start = now_ms() - 1000
    await create_campaign(shop, "drop", [sale("gpu", 50_000, limit=2)], start,
                          start + 60 * MINUTE_MS, buckets=2)
    await add(shop, "fan", "gpu", 2, "drop")
    over = await attempt(shop.orders.PlaceOrder(campaign_order("o1", "fan", "drop",
                                                               ("gpu", 1))))
    assert over == "FAILED_PRECONDITION:LIMIT_EXCEEDED"
    await shop.carts.UpdateQuantity(cart_pb2.UpdateQuantityRequest(
        buyer_id="fan", campaign_id="drop", sku_id="gpu", quantity=1))
    await shop.orders.PlaceOrder(campaign_order("o2", "fan", "drop", ("gpu", 1)))
    assert await attempt(add(shop, "fan", "gpu", 1, "drop")) == (
        "FAILED_PRECONDITION:LIMIT_EXCEEDED")
    # Concurrent attempts by one buyer: the limit still holds.
    others = await asyncio.gather(*(attempt(shop.orders.PlaceOrder(campaign_order(
        f"r{i}", "rival", "drop", ("gpu", 1)))) for i in range(10)))
    assert Counter(others) == {"OK": 2, "FAILED_PRECONDITION:LIMIT_EXCEEDED": 8}
    # Cancelling gives the units back to the buyer's allowance.
    rival = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id="rival"))
    await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(
        order_id=rival.orders[0].order_id))
    await shop.orders.PlaceOrder(campaign_order("r-again", "rival", "drop", ("gpu", 1)))


async def test_checkout_is_idempotent_under_retries(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=300, on_hand=10),
                   stock_pb2.Sku(sku_id="b", name="B", price_minor=200, on_hand=10))
    await add(shop, "buyer", "a", 2)
    await add(shop, "buyer", "b", 1)
    checkout = cart_pb2.CheckoutRequest(buyer_id="buyer", idempotency_key="pay-1")
    answers = await asyncio.gather(*(shop.carts.Checkout(checkout) for _ in range(20)),
                                   return_exceptions=True)
    orders = {a.order.order_id for a in answers if isinstance(a, cart_pb2.CheckoutResponse)}
    failures = [a for a in answers if not isinstance(a, cart_pb2.CheckoutResponse)]
    # Retries racing the first either get its order or are told to retry.
    assert all(f.code() == grpc.StatusCode.UNAVAILABLE for f in failures), failures
    assert len(orders) == 1
    assert sum(1 for a in answers if isinstance(a, cart_pb2.CheckoutResponse)
               and not a.replayed) == 1
    [order_id] = orders
    again = await shop.carts.Checkout(checkout)
    assert again.replayed and again.order.order_id == order_id
    assert again.order.total_minor == 800
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="buyer"))).cart
    assert list(cart.lines) == []
    empty = await attempt(shop.carts.Checkout(cart_pb2.CheckoutRequest(
        buyer_id="buyer", idempotency_key="pay-2")))
    assert empty == "FAILED_PRECONDITION:FAILED_PRECONDITION"
    assert ((await level(shop, "a")).reserved, (await level(shop, "b")).reserved) == (2, 1)


async def test_cart_limits_and_bad_input(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=1, on_hand=10))
    for request, field in (
            (cart_pb2.AddItemRequest(buyer_id="b", sku_id="a", quantity=0), "quantity"),
            (cart_pb2.AddItemRequest(buyer_id="", sku_id="a", quantity=1), "buyer_id"),
            (cart_pb2.AddItemRequest(buyer_id="b", sku_id="a b", quantity=1), "sku_id"),
            (cart_pb2.AddItemRequest(buyer_id="b", sku_id="a", quantity=10**6), "quantity")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await shop.carts.AddItem(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (raised.value.details() or "")
    unknown = await attempt(add(shop, "b", "a", 1, "no-such-campaign"))
    assert unknown == "NOT_FOUND:NOT_FOUND"
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="b"))).cart
    assert list(cart.lines) == []


async def test_cart_expires_after_idle_time(shop: Client, clock: object,
                                            engine: LocalEngine) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=1, on_hand=10))
    cart = await add(shop, "idle", "a", 3)
    assert [(line.sku_id, line.quantity) for line in cart.lines] == [("a", 3)]
    clock((engine.config.cart_idle_s - 5) * 1000)  # type: ignore[operator]
    kept = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="idle"))).cart
    assert len(kept.lines) == 1  # not idle long enough yet
    clock((engine.config.cart_idle_s + 5) * 1000)  # type: ignore[operator]

    async def gone() -> None:
        cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="idle"))).cart
        assert list(cart.lines) == []
    await eventually(gone)


async def test_holds_on_add_expire_and_checkout_takes_them_over(
        engine: LocalEngine, operator: Client, clock: object) -> None:
    created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("holds"), name="Holds", cart_hold_s=60))
    assert created.merchant.cart_hold_s == 60
    async with Client(engine.address, created.admin_key_secret) as shop:
        await add_skus(shop, stock_pb2.Sku(sku_id="few", name="Few", price_minor=5,
                                           on_hand=3))
        cart = await add(shop, "early", "few", 2)
        assert cart.lines[0].held_until_ms > 0
        assert (await level(shop, "few")).available == 1
        refused = await attempt(shop.orders.PlaceOrder(campaign_order("x", "late", "",
                                                                      ("few", 2))))
        assert refused == "FAILED_PRECONDITION:OUT_OF_STOCK"
        # Checkout gets exactly the units the cart held.
        done = await shop.carts.Checkout(cart_pb2.CheckoutRequest(buyer_id="early",
                                                                  idempotency_key="c1"))
        assert done.order.lines[0].quantity == 2
        few = await level(shop, "few")
        assert (few.available, few.reserved) == (1, 2)
        # A hold returns after the merchant's hold time.
        await add(shop, "other", "few", 1)
        assert (await level(shop, "few")).available == 0
        clock(61_000)  # type: ignore[operator]

        async def returned() -> None:
            assert (await level(shop, "few")).available == 1
            cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="other"))).cart
            assert cart.lines[0].held_until_ms == 0
        await eventually(returned)
        # Reserve-at-checkout merchants (the default) hold nothing in carts.
        await shop.merchants.UpdateMerchant(merchant_pb2.UpdateMerchantRequest(
            cart_hold_s=0))
        async def policy_changed() -> None:
            cart = await add(shop, "third", "few", 1)
            assert cart.lines[0].held_until_ms == 0
        await eventually(policy_changed)
        engine.check_invariants()


async def test_a_retried_create_campaign_answers_the_original_once(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="r", name="R", price_minor=100, on_hand=50))
    start = now_ms() - 1000
    first = await create_campaign(shop, "again", [sale("r", 50, allotment=20)], start,
                                  start + 60 * MINUTE_MS, buckets=2)
    # The answer was lost; the client sends the same request again.
    second = await create_campaign(shop, "again", [sale("r", 50, allotment=20)], start,
                                   start + 60 * MINUTE_MS, buckets=2)
    assert second.campaign_id == first.campaign_id and second.skus == first.skus
    assert (await level(shop, "r")).on_hand == 30  # the 20 units moved once
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # same id, another payload
        await create_campaign(shop, "again", [sale("r", 40, allotment=20)], start,
                              start + 60 * MINUTE_MS, buckets=2)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_end_campaign_returns_unsold_units(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=100, on_hand=50))
    start = now_ms() - 1000
    await create_campaign(shop, "short", [sale("s", 50, allotment=20)], start,
                          start + 60 * MINUTE_MS, buckets=2)
    for i in range(5):
        await shop.orders.PlaceOrder(campaign_order(f"k{i}", f"b{i}", "short", ("s", 1)))
    ended = (await shop.campaigns.EndCampaign(
        campaign_pb2.EndCampaignRequest(campaign_id="short"))).campaign
    assert ended.ended
    s = await level(shop, "s")
    assert (s.on_hand, s.available) == (45, 45)  # 15 unsold came back, 5 were sold
    refused = await attempt(shop.orders.PlaceOrder(campaign_order("k9", "b9", "short",
                                                                  ("s", 1))))
    assert refused == "FAILED_PRECONDITION:CAMPAIGN_NOT_ACTIVE"
    # A cancelled campaign order's units return to the SKU too, once released.
    orders = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id="b0"))
    await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(
        order_id=orders.orders[0].order_id))

    async def back() -> None:
        assert (await level(shop, "s")).available == 46
    await eventually(back)


@pytest.mark.slow
async def test_killing_shards_mid_campaign_loses_nothing_and_oversells_nothing(
        engine: LocalEngine, shop: Client, database_dsn: str) -> None:
    """A bucketed campaign sale while the order shard, both stock shards and the merchant
    shard (which moves units between buckets) are killed: buyers retrying with their keys
    buy exactly the allotment, every acknowledged order is stored once, and carts filled
    before the crash are still there after it."""
    import asyncpg
    import ray

    from tests.integration.retrying import RETRYABLE_WHILE_RESTARTING, until_answered

    units, buyers = 600, 1_500
    await add_skus(shop, stock_pb2.Sku(sku_id="drop", name="Drop", price_minor=100,
                                       on_hand=units + 100))
    start = now_ms() - 1000
    await create_campaign(shop, "crash", [sale("drop", 50, allotment=units)], start,
                          start + 60 * MINUTE_MS, buckets=2)
    for i in range(20):
        await add(shop, f"carter-{i}", "drop", 1, "crash")
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    acked: dict[str, str] = {}
    gate = asyncio.Semaphore(300)

    async def buy(buyer: int) -> str:
        request = campaign_order(f"c-{buyer}", f"buyer-{buyer}", "crash", ("drop", 1))

        async def once() -> object:
            async with gate:
                return await shop.orders.PlaceOrder(request, timeout=10)

        outcome, response = await until_answered(once, retryable=RETRYABLE_WHILE_RESTARTING)
        if response is not None:
            acked[request.idempotency_key] = response.order.order_id  # type: ignore[attr-defined]
        return outcome

    sale_task = asyncio.gather(*(buy(b) for b in range(buyers)))
    while len(acked) < units // 4:
        await asyncio.sleep(0.02)
    ray.kill(engine.topology.orders.handles[0], no_restart=False)
    ray.kill(engine.topology.merchants.handles[0], no_restart=False)
    while len(acked) < units // 2:
        await asyncio.sleep(0.02)
    ray.kill(engine.topology.stock.handles[0], no_restart=False)
    ray.kill(engine.topology.stock.handles[1], no_restart=False)
    outcomes = await sale_task
    assert set(outcomes) <= {"OK", "FAILED_PRECONDITION"}, Counter(outcomes)
    assert outcomes.count("OK") == len(acked) == units  # the allotment, exactly

    connection = await asyncpg.connect(database_dsn)
    try:
        await materialized(connection)
        rows = await connection.fetch(
            "SELECT o.order_id, o.idempotency_key, o.campaign_id, l.quantity, l.stock_key"
            " FROM flashtx.orders o JOIN flashtx.order_lines l USING (order_id)"
            " WHERE o.merchant_id = $1", merchant_id)
    finally:
        await connection.close()
    stored = {row["idempotency_key"]: row["order_id"] for row in rows}
    assert len(rows) == len(stored) == units
    assert {k: stored.get(k) for k in acked} == acked
    assert {row["campaign_id"] for row in rows} == {"crash"}
    assert all(row["stock_key"].startswith("drop~crash~") for row in rows)

    async def counted() -> None:
        campaign = (await shop.campaigns.GetCampaign(
            campaign_pb2.GetCampaignRequest(campaign_id="crash"))).campaign
        state = campaign.skus[0]
        assert (state.reserved + state.sold, state.available, state.sold_out) == (
            units, 0, True)
        drop = await level(shop, "drop")
        assert drop.on_hand == 100  # the SKU kept what was not allotted
    await eventually(counted, timeout_s=60)
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(
        buyer_id="carter-7", campaign_id="crash"))).cart
    assert [(line.sku_id, line.quantity) for line in cart.lines] == [("drop", 1)]
    engine.check_invariants()


async def test_emptying_bucket_is_refilled_and_sold_out_is_said_once_at_the_end(
        shop: Client, engine: LocalEngine, database_dsn: str) -> None:
    """Buyers who all draw from bucket 0 empty it: the merchant shard refills it from
    bucket 1, no sell-out is announced while units remain, and one stock.sold_out event
    follows once every bucket is empty."""
    import zlib

    import asyncpg
    import ray

    await add_skus(shop, stock_pb2.Sku(sku_id="hot", name="Hot", price_minor=10, on_hand=100))
    start = now_ms() - 1000
    await create_campaign(shop, "lean", [sale("hot", 5, allotment=100)], start,
                          start + 60 * MINUTE_MS, buckets=2)
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    [campaign] = [c for c in ray.get(engine.topology.merchants.handles[0].campaigns_of.remote(
        [merchant_id]))]
    keys = campaign.skus["hot"].bucket_keys
    stock = engine.topology.stock

    def available() -> list[int]:
        levels = [wait_all([stock.of(merchant_id, key).levels(
            SkuKeys([merchant_id], [key]))])[0][0] for key in keys]
        return [level.available for level in levels]

    assert available() == [50, 50]
    first_bucket = [f"b{n}" for n in range(2_000) if zlib.crc32(f"b{n}".encode()) % 2 == 0]
    for i, buyer in enumerate(first_bucket[:45]):
        await shop.orders.PlaceOrder(campaign_order(f"k{i}", buyer, "lean", ("hot", 1)))

    async def refilled() -> None:
        now = available()
        assert now[0] >= engine.config.campaign_bucket_low_water and sum(now) == 55, now
    await eventually(refilled)

    async def sold_out_events() -> list[str]:
        connection = await asyncpg.connect(database_dsn)
        try:
            rows = await connection.fetch(
                "SELECT event_id FROM flashtx.outbox WHERE merchant_id = $1"
                " AND event_type = 'stock.sold_out'", merchant_id)
        finally:
            await connection.close()
        return [row["event_id"] for row in rows]

    assert await sold_out_events() == []
    results = await asyncio.gather(*(buy(shop, campaign_order(
        f"r{i}", f"rest-{i}", "lean", ("hot", 1))) for i in range(70)))
    assert Counter(results) == {"OK": 55, "FAILED_PRECONDITION:OUT_OF_STOCK": 15}

    async def announced() -> None:
        assert await sold_out_events() == [f"sold_out:{merchant_id}:hot:lean"]
    await eventually(announced)


async def test_merchants_cannot_reach_each_others_carts_and_campaigns(
        engine: LocalEngine, operator: Client, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="mine", name="Mine", price_minor=5, on_hand=50))
    start = now_ms() - 1000
    await create_campaign(shop, "ours", [sale("mine", 3, allotment=10)], start,
                          start + 60 * MINUTE_MS)
    await add(shop, "buyer", "mine", 2)
    await add(shop, "buyer", "mine", 1, "ours")
    rival_created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("rival"), name="Rival"))
    not_found = "NOT_FOUND:NOT_FOUND"
    async with Client(engine.address, rival_created.admin_key_secret) as rival:
        for call in (
                rival.campaigns.GetCampaign(campaign_pb2.GetCampaignRequest(campaign_id="ours")),
                rival.campaigns.EndCampaign(campaign_pb2.EndCampaignRequest(campaign_id="ours")),
                rival.orders.PlaceOrder(campaign_order("x", "buyer", "ours", ("mine", 1))),
                rival.carts.AddItem(cart_pb2.AddItemRequest(buyer_id="buyer", campaign_id="ours",
                                                            sku_id="mine", quantity=1))):
            assert await attempt(call) == not_found
        # The same buyer id at another merchant is another buyer: an empty cart.
        cart = (await rival.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="buyer"))).cart
        assert list(cart.lines) == []
        assert await attempt(rival.carts.Checkout(cart_pb2.CheckoutRequest(
            buyer_id="buyer", idempotency_key="steal"))) == (
            "FAILED_PRECONDITION:FAILED_PRECONDITION")  # its own, empty cart
        await rival.carts.ClearCart(cart_pb2.ClearCartRequest(buyer_id="buyer"))
        listed = await rival.campaigns.ListCampaigns(campaign_pb2.ListCampaignsRequest())
        assert list(listed.campaigns) == []
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(buyer_id="buyer"))).cart
    assert [(line.sku_id, line.quantity) for line in cart.lines] == [("mine", 2)]
    ours = (await shop.campaigns.GetCampaign(
        campaign_pb2.GetCampaignRequest(campaign_id="ours"))).campaign
    assert not ours.ended


async def test_campaign_and_cart_scopes(engine: LocalEngine, shop: Client) -> None:
    channel_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_CHANNEL], label="pos"))
    saas_key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_SAAS], label="crm"))
    start = now_ms() + MINUTE_MS
    create = campaign_pb2.CreateCampaignRequest(
        campaign_id="c", starts_at_ms=start, ends_at_ms=start + MINUTE_MS,
        skus=[sale("s", 1)])
    denied = "PERMISSION_DENIED:PERMISSION_DENIED"
    async with Client(engine.address, channel_key.secret) as channel, \
            Client(engine.address, saas_key.secret) as saas:
        assert await attempt(channel.campaigns.CreateCampaign(create)) == denied
        assert await attempt(channel.campaigns.EndCampaign(
            campaign_pb2.EndCampaignRequest(campaign_id="c"))) == denied
        assert await attempt(saas.carts.AddItem(cart_pb2.AddItemRequest(
            buyer_id="b", sku_id="s", quantity=1))) == denied
        assert await attempt(channel.merchants.UpdateMerchant(
            merchant_pb2.UpdateMerchantRequest(cart_hold_s=5))) == denied
        # Reads are open to channel and SaaS keys.
        assert await attempt(saas.campaigns.ListCampaigns(
            campaign_pb2.ListCampaignsRequest())) == "OK"
        assert await attempt(channel.carts.GetCart(cart_pb2.GetCartRequest(
            buyer_id="b"))) == "OK"


async def test_campaigns_are_listed_in_pages_that_new_ones_do_not_shift(shop: Client) -> None:
    """Every campaign that existed at the first page is listed exactly once, though
    campaigns are created between the pages; a token from elsewhere is INVALID_ARGUMENT."""
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=10, on_hand=50))
    start = now_ms() + 60 * MINUTE_MS
    for name in ("c2", "c4", "c6", "c8"):
        await create_campaign(shop, name, [sale("a", 5, allotment=1)], start, start + MINUTE_MS)
    seen: list[str] = []
    token = ""
    created = iter(("c1", "c5", "c9"))
    while True:
        page = await shop.campaigns.ListCampaigns(campaign_pb2.ListCampaignsRequest(
            page_size=2, page_token=token))
        seen += [c.campaign_id for c in page.campaigns]
        token = page.next_page_token
        if not token:
            break
        extra = next(created, None)  # a campaign created while the client pages
        if extra:
            await create_campaign(shop, extra, [sale("a", 5, allotment=1)], start,
                                  start + MINUTE_MS)
    assert [c for c in seen if c in ("c2", "c4", "c6", "c8")] == ["c2", "c4", "c6", "c8"]
    assert len(seen) == len(set(seen))  # none twice
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await shop.campaigns.ListCampaigns(campaign_pb2.ListCampaignsRequest(
            page_token="o1.MTIzOmFiYw"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
