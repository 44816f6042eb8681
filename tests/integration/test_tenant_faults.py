"""What one tenant can send, checked against the shared engine: no request takes a shard
down for the others, and each answers what is true."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
import ray

from flashtx.app import LocalEngine
from flashtx.engine.sharding import slot_of
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus, unique_merchant_id
from tests.integration.test_order_path import level, order, outcome

pytestmark = pytest.mark.cluster


async def new_shop(operator: Client) -> tuple[str, str]:
    merchant_id = unique_merchant_id("tenant")
    created = await operator.merchants.CreateMerchant(
        merchant_pb2.CreateMerchantRequest(merchant_id=merchant_id, name="Tenant"))
    return merchant_id, created.admin_key_secret


def buyers_on_each_order_shard(engine: LocalEngine, merchant_id: str) -> list[str]:
    """One buyer id per order shard (orders route by merchant and buyer)."""
    table = engine.topology.orders.table
    found: dict[int, str] = {}
    for n in range(10_000):
        buyer = f"buyer-{n}"
        found.setdefault(table.shard_of_slot[slot_of(merchant_id, buyer,
                                                     engine.config.slots_total)], buyer)
        if len(found) == table.shards:
            return [found[shard] for shard in sorted(found)]
    raise AssertionError("no buyer found for some order shard")


def order_shard_stats(engine: LocalEngine) -> list[dict[str, Any]]:
    return list(ray.get([h.stats.remote() for h in engine.topology.orders.handles]))


async def reserved_becomes(client: Client, sku_id: str, units: int) -> int:
    """The SKU's reserved units once they are `units` (a refused order's hold is released
    by the shard's sweeper), or what they are after 30 s."""
    deadline = time.monotonic() + 30
    while (reserved := (await level(client, sku_id)).reserved) != units:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return reserved


async def test_one_key_for_buyers_on_two_order_shards_places_one_order(
        engine: LocalEngine, operator: Client) -> None:
    merchant_id, secret = await new_shop(operator)
    first, second = buyers_on_each_order_shard(engine, merchant_id)[:2]
    before = order_shard_stats(engine)
    async with Client(engine.address, secret) as shop:
        await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=10))
        # One request: the key for two buyers whose orders go to two shards, and an order
        # of its own beside them.
        batch = [order("k", first, ("s", 1)), order("k", second, ("s", 1)),
                 order("other", first, ("s", 1))]
        response = await shop.orders.PlaceOrders(order_pb2.PlaceOrdersRequest(orders=batch))
        codes = sorted(r.code for r in response.results[:2])
        assert codes == [common_pb2.RESULT_CODE_OK,
                         common_pb2.RESULT_CODE_IDEMPOTENCY_CONFLICT], response
        assert response.results[2].code == common_pb2.RESULT_CODE_OK
        refused = next(r for r in response.results[:2]
                       if r.code != common_pb2.RESULT_CODE_OK)
        assert refused.reason == "IDEMPOTENCY_CONFLICT"
        # A retry as documented is refused again, and the shard stays up.
        loser = batch[0] if response.results[0].code != common_pb2.RESULT_CODE_OK else batch[1]
        assert await outcome(shop, loser) == "ALREADY_EXISTS"
        # Two concurrent requests with one key and two buyers: one order.
        outcomes = await asyncio.gather(outcome(shop, order("k2", first, ("s", 1))),
                                        outcome(shop, order("k2", second, ("s", 1))))
        assert sorted(outcomes) == ["ALREADY_EXISTS", "OK"]
        assert await reserved_becomes(shop, "s", 3) == 3  # k, other and k2: no unit leaked
        listed = [await shop.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id=b))
                  for b in (first, second)]
        keys = sorted(o.idempotency_key for page in listed for o in page.orders)
        assert keys == ["k", "k2", "other"]
    after = order_shard_stats(engine)
    assert [s["instance"] for s in after] == [s["instance"] for s in before]  # no restart
    # Where the second order of a key is refused, at its commit or before it is placed (a
    # shard that forgot keys asks the database first, and finds the key once the other
    # commit landed), depends on which shard gets there first: not counted here (it once
    # failed on a loaded machine). The commit's refusal is proven deterministically by the
    # simulator (shared keys in 30 % of its runs, and
    # test_the_checks_catch_a_key_committed_by_two_shards).
    # At most once each: k's second order, its retry, and k2's second order.
    refused = sum(s["orders_refused_at_commit"] - b["orders_refused_at_commit"]
                  for s, b in zip(after, before, strict=True))
    assert 0 <= refused <= 3


async def calls_on(client: Client, order_id: str) -> list[str]:
    """What GetOrder, PayOrder and CancelOrder answer for `order_id` (a status code)."""
    found = []
    for call in (client.orders.GetOrder(order_pb2.GetOrderRequest(order_id=order_id)),
                 client.orders.PayOrder(order_pb2.PayOrderRequest(order_id=order_id)),
                 client.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=order_id))):
        try:
            await call
            found.append("OK")
        except grpc.aio.AioRpcError as error:
            found.append(error.code().name)
    return found


async def test_another_tenants_order_is_not_found_like_an_unknown_id(
        engine: LocalEngine, operator: Client) -> None:
    """Once an order of the shard has left memory, reads of ids not in memory go to the
    database: another merchant's live order must still be NOT_FOUND, as an unknown id,
    never UNAVAILABLE ("changing; retry", which tells that it exists)."""
    (_, owner_secret), (_, other_secret) = await new_shop(operator), await new_shop(operator)
    async with Client(engine.address, owner_secret) as owner, Client(
            engine.address, other_secret) as other:
        await add_skus(owner, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=10))
        live = (await owner.orders.PlaceOrder(order("live", "b", ("s", 1)))).order
        gone = (await owner.orders.PlaceOrder(order("gone", "b", ("s", 1)))).order
        await owner.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=gone.order_id))
        evicted = sum(s["orders_evicted"] for s in order_shard_stats(engine))
        await asyncio.to_thread(engine.topology.shift_clock, 61_000)  # past the linger
        deadline = time.monotonic() + 30
        while sum(s["orders_evicted"] for s in order_shard_stats(engine)) <= evicted:
            assert time.monotonic() < deadline, "the finished order never left memory"
            await asyncio.sleep(0.05)
        assert await calls_on(other, live.order_id) == ["NOT_FOUND"] * 3
        assert await calls_on(other, gone.order_id) == ["NOT_FOUND"] * 3
        unknown = live.order_id[:-4] + "ffff"
        assert await calls_on(other, unknown) == ["NOT_FOUND"] * 3
        mine = await owner.orders.GetOrder(order_pb2.GetOrderRequest(order_id=live.order_id))
        assert mine.order.status == order_pb2.ORDER_STATUS_RESERVED


async def test_a_merchant_flooding_a_gateway_leaves_room_for_the_others(
        engine: LocalEngine, operator: Client) -> None:
    """A merchant's keys together are held to its order rate (merchant_orders_per_s), so
    two keys do not double it; another merchant's orders still go through the gateway."""
    from tests.integration.test_security import start_gateway

    (_, greedy_secret), (_, other_secret) = await new_shop(operator), await new_shop(operator)
    address = await start_gateway(engine, 96, frozen_clock=True, merchant_orders_per_s=10.0,
                                  merchant_orders_burst=10.0)
    async with Client(engine.address, greedy_secret) as greedy:
        await add_skus(greedy, stock_pb2.Sku(sku_id="s", name="S", price_minor=1,
                                             on_hand=1000))
        second_key = await greedy.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
            scopes=[common_pb2.SCOPE_CHANNEL], label="second"))
    async with Client(engine.address, other_secret) as other:
        await add_skus(other, stock_pb2.Sku(sku_id="s", name="S", price_minor=1, on_hand=10))
    codes = []
    async with Client(address, greedy_secret) as first, Client(
            address, second_key.secret) as second:
        for n in range(16):
            client = first if n % 2 else second
            codes.append(await outcome(client, order(f"flood-{n}", f"b{n}", ("s", 1))))
    assert codes == ["OK"] * 10 + ["RESOURCE_EXHAUSTED"] * 6
    async with Client(address, other_secret) as other:
        assert [await outcome(other, order(f"calm-{n}", f"b{n}", ("s", 1)))
                for n in range(3)] == ["OK"] * 3
