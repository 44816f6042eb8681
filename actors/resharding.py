"""Resharding the stock shards while traffic flows: one procedure over the ports, run by
the deployment (actors.topology, on Ray) and by the simulator (flashtx.sim, in process).

1. The new table is saved as *unsettled*, then every order shard pauses stock-changing
   work (callers get UNAVAILABLE and retry), lets what is in flight finish and routes by
   it. An order shard that restarts meanwhile reads the unsettled table and stays paused.
2. Every stock shard narrows to the slots it keeps (writes to slots it loses are refused
   from then on, and those in flight finish first), then every stock shard rebuilds its
   slots the way recovery does: catalogue and on-hand from Postgres, holds and sales from
   the order shards, which route by the new table already. No order is lost or counted
   twice, and no catalogue write lands on a shard after the new owner read the database.
3. The table is saved as settled, and the order shards resume.

If a step fails (after a few tries), the reshard rolls back the same way to the old
table (one version later) and raises ReshardFailed; if the rollback fails too, the order
shards stay paused (an unsettled table) and this raises, for an operator to run it again.
Work never resumes on stock shards that have not rebuilt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar, cast

from flashtx.actors.ports import OrderPeer, StockPeer
from flashtx.engine.sharding import RoutingTable

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReshardFailed(RuntimeError):
    """The reshard did not complete and was rolled back: `table` routes now."""

    def __init__(self, table: RoutingTable) -> None:
        super().__init__(f"stock reshard failed; rolled back to table version {table.version}")
        self.table = table


def spread(old: RoutingTable, shards_total: int) -> RoutingTable:
    """The next table with slots spread evenly over `shards_total` shards (unsettled)."""
    return RoutingTable(old.version + 1,
                        tuple(slot % shards_total for slot in range(len(old.shard_of_slot))),
                        settled=False)


async def reshard_stock(orders: Sequence[OrderPeer], old: Sequence[StockPeer],
                        added: Sequence[StockPeer], old_table: RoutingTable,
                        table: RoutingTable, durable: bool = True, tries: int = 5,
                        rollback_tries: int = 12) -> RoutingTable:
    """Moves from `old_table` (served by `old`) to `table` (served by old + added). Each
    step is tried `tries` times before the reshard rolls back; the rollback, which only
    returns to a state that worked, `rollback_tries` times. `table` gets a version above
    every order shard's (a run after a failed one)."""
    peers = [*old, *added]
    steps = _Steps(orders, durable, tries)
    current = await _Steps(orders, durable, rollback_tries).all([o.stock_routing
                                                                 for o in orders])
    newest = max(t.version for t in current)
    if table.version <= newest:
        table = dataclasses.replace(table, version=newest + 1)
    try:
        await steps.run(peers, table)
    except Exception as error:
        log.warning("stock reshard to table %d failed (%r); rolling back", table.version, error)
        back = RoutingTable(table.version + 1, old_table.shard_of_slot, settled=False)
        # The added shards may own slots by now (the new table was settled, then a later
        # step failed): they take no catalogue write or move from here on, and the ones
        # in flight end before the old shards read the database again.
        await _Steps(orders, durable, rollback_tries).run(list(old), back,
                                                           retiring=list(added))  # raises: paused
        raise ReshardFailed(dataclasses.replace(back, settled=True)) from error
    return dataclasses.replace(table, settled=True)


class _Steps:
    def __init__(self, orders: Sequence[OrderPeer], durable: bool, tries: int) -> None:
        self.orders, self.durable, self.tries = list(orders), durable, tries

    async def run(self, stock: list[StockPeer], table: RoutingTable,
                  retiring: Sequence[StockPeer] = ()) -> None:
        """`retiring`: shards outside `table`, narrowed to nothing before any rebuild. One
        that cannot be reached is passed over: a shard that restarts reads the table and
        takes no write until a reshard rebuilds it."""
        first = self.orders[0]
        if self.durable:
            await self.all([partial(first.save_stock_routing, table)])
        await self.all([partial(o.reroute_stock, stock, table) for o in self.orders])
        await self.all([partial(s.narrow, table.slots_of(i)) for i, s in enumerate(stock)])
        for shard, answer in zip(retiring, await asyncio.gather(
                *(self._until_done(partial(s.narrow, [])) for s in retiring),
                return_exceptions=True), strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock reshard: %r not narrowed (%r); passed over", shard, answer)
        await self.all([partial(s.rebuild, table.slots_of(i)) for i, s in enumerate(stock)])
        if self.durable:
            await self.all([partial(first.save_stock_routing,
                                     dataclasses.replace(table, settled=True))])
        await self.all([o.resume for o in self.orders])

    async def all(self, calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """Each call (idempotent) until it answers, `tries` times at most. Every call has
        ended when this returns or raises: none is left running into the next step (or
        into a rollback)."""
        answers = await asyncio.gather(*(self._until_done(call) for call in calls),
                                       return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return cast(list[T], answers)

    async def _until_done(self, call: Callable[[], Awaitable[T]]) -> T:
        delay_s = 0.05
        for attempt in range(self.tries):
            try:
                return await call()
            except Exception:
                if attempt + 1 == self.tries:
                    raise
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)
        raise AssertionError("unreachable")
