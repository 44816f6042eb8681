"""Handover generations only grow: an order shard restarted on a host whose clock is
behind still outranks the incarnation before it on every stock shard (else the stock
shards would drop its releases and refunds as stale: units back only at hold expiry,
refunds never)."""

from __future__ import annotations

from flashtx.actors import clock
from flashtx.actors.stock_link import StockLink
from flashtx.adapters.postgres import Store
from flashtx.engine.sharding import RoutingTable


async def test_an_incarnation_started_with_a_clock_behind_outranks_the_one_before(
        own_store: Store) -> None:
    table = RoutingTable.uniform(64, 2)
    before = StockLink(0, [], table, 64, 100)
    before.reborn(await own_store.next_incarnation(clock.now_ms()))
    try:
        clock.shift(-3_600_000)  # the next host's clock is an hour behind
        after = StockLink(0, [], table, 64, 100)
        assert after.generation(1) < before.generation(1)  # by its clock alone: stale
        after.reborn(await own_store.next_incarnation(clock.now_ms()))
    finally:
        clock.shift(0)
    assert after.generation(1) > before.generation(1)
    assert after.generation(0) > before.generation(0)
