"""An order shard's link to the stock shards: routing, one call per stock shard per step,
handover generations, and the releases and refunds waiting to be retried.

Generations: each time a stock shard takes this order shard's state over (it restarted),
the generation on that shard grows. A release or refund carries the generation it was
sent with; the stock shard ignores one older than the state it took over, which already
says what the call would have done. Queued retries of an older generation are dropped,
not repeated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container, Sequence
from typing import Any, NamedTuple, cast

from flashtx.actors import clock, metrics
from flashtx.actors.ports import StockPeer
from flashtx.actors.routing import ShardGroup
from flashtx.engine.errors import DomainError, InvalidTransition, ResultCode, Unavailable
from flashtx.engine.messages import (
    Answers,
    Generation,
    Handover,
    HoldBatch,
    ReserveBatch,
    ReturnBatch,
)
from flashtx.engine.order_state import OrderState, StockCalls
from flashtx.engine.sharding import RoutingTable

log = logging.getLogger(__name__)

STOCK_UNAVAILABLE = "stock shard unavailable; retry"


class _Due(NamedTuple):
    """A release or refund to retry (its stock shard did not answer)."""

    kind: str  # release | abandon | return
    shard: int
    item: Any  # order or hold id; (order_id, merchant_id, buyer_id, lines) for a return
    generation: Generation


class StockLink:
    def __init__(self, owner: int, peers: Sequence[StockPeer], table: RoutingTable,
                 slots_total: int, due_max: int) -> None:
        self.owner = owner
        self.group: ShardGroup[StockPeer] = ShardGroup(peers, table, slots_total, by_sku=True)
        self.shard_of = self.group.shard_of
        self.due: list[_Due] = []
        self._due_max = due_max
        self._handovers: dict[int, int] = {}  # stock shard -> generation
        # Generations of a later incarnation are greater: the database's counter
        # (``reborn``), else the clock (no database: nothing outlives the process).
        self._born_ms = clock.now_ms()

    # --- routing and generations --------------------------------------------------------------

    def reroute(self, peers: Sequence[StockPeer], table: RoutingTable) -> None:
        self.group.update(peers, table)
        self.due.clear()  # addressed by the old table; the rebuild settles them

    def reborn(self, incarnation: int) -> None:
        """This incarnation's number from the database (``Store.next_incarnation``): it
        only grows, whatever the clock of the host it starts on says."""
        self._born_ms = incarnation
        self._handovers.clear()

    def generation(self, shard: int) -> Generation:
        return Generation(self._born_ms, self._handovers.get(shard, 0))

    def handover(self, shard: int, state: OrderState, not_durable: Container[str],
                 grace_ms: int) -> Handover:
        """The holds and sales of this order shard on one stock shard, and a new
        generation: calls sent before it are stale there, queued retries are dropped."""
        self._handovers[shard] = self._handovers.get(shard, 0) + 1
        self.due = [due for due in self.due if due.shard != shard]
        holds, sales = state.stock_state(shard, self.shard_of, not_durable, grace_ms,
                                         clock.now_ms())
        return Handover(self.owner, holds, sales, self.generation(shard))

    async def push_state(self, state: OrderState, not_durable: Container[str],
                         grace_ms: int) -> None:
        """Every stock shard learns what this shard owns there (and drops any other holds
        it had from this shard: orders that never committed)."""
        await asyncio.gather(*(peer.replace_owned(self.handover(shard, state, not_durable,
                                                                grace_ms))
                               for shard, peer in enumerate(self.group.peers)))

    # --- calls --------------------------------------------------------------------------------

    async def reserve(self, batches: dict[int, ReserveBatch]) -> dict[int, Answers]:
        """One call per stock shard; a shard that fails answers UNAVAILABLE for each."""
        for batch in batches.values():
            metrics.record(metrics.batch_items(), len(batch), hop="order_to_stock")
        return await self._each(batches, lambda peer, batch: peer.reserve(batch))

    async def hold(self, batches: dict[int, HoldBatch]) -> dict[int, Answers]:
        return await self._each(batches, lambda peer, batch: peer.hold(batch))

    async def _each(self, batches: dict[int, Any], send: Any) -> dict[int, Answers]:
        shards = list(batches)
        answers = await asyncio.gather(*(send(self.group.peer(shard), batches[shard])
                                         for shard in shards), return_exceptions=True)
        replies: dict[int, Answers] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock shard %d failed: %r", shard, answer)
                answer = Answers.all(ResultCode.UNAVAILABLE, STOCK_UNAVAILABLE,
                                     len(batches[shard]))
            replies[shard] = cast(Answers, answer)
        return replies

    async def send(self, calls: StockCalls) -> dict[str, DomainError]:
        """Commits, releases and refunds; answers {order_id: error} of failed commits.
        Failed releases and refunds are queued for ``take_due``."""
        peer, owner = self.group.peer, self.owner
        commits = list(calls.commits.items())
        frees: list[tuple[str, int, list[Any]]] = [
            *(("release", shard, items) for shard, items in calls.releases.items()),
            *(("abandon", shard, items) for shard, items in calls.abandons.items()),
            *(("return", shard, items) for shard, items in calls.returns.items())]
        generations = {shard: self.generation(shard) for _, shard, _ in frees}  # as sent
        answers = await asyncio.gather(
            *(peer(shard).commit(order_ids) for shard, order_ids in commits),
            *(peer(shard).release(items, owner, generations[shard]) if kind == "release"
              else peer(shard).abandon(items, owner, generations[shard]) if kind == "abandon"
              else peer(shard).return_sold(ReturnBatch.of(items, owner, generations[shard]))
              for kind, shard, items in frees), return_exceptions=True)
        failed: dict[str, DomainError] = {}
        for (_, order_ids), answer in zip(commits, answers[:len(commits)], strict=True):
            if isinstance(answer, BaseException):
                failed.update((o, Unavailable(STOCK_UNAVAILABLE)) for o in order_ids)
                continue
            for order_id, (code, message) in zip(order_ids, cast(Answers, answer), strict=True):
                if code is not ResultCode.OK:
                    failed[order_id] = InvalidTransition(message, order_id=order_id)
        for (kind, shard, items), answer in zip(frees, answers[len(commits):], strict=True):
            if isinstance(answer, BaseException):
                self.due.extend(_Due(kind, shard, item, generations[shard]) for item in items)
        return failed

    # --- retries ------------------------------------------------------------------------------

    def full(self) -> bool:
        """Too many releases wait for an unreachable stock shard: stock-freeing work waits."""
        return len(self.due) >= self._due_max

    def queue(self, calls: StockCalls) -> None:
        """Releases to send later (by the sweeper, once what frees them is durable)."""
        self.due.extend(_Due("release", shard, item, self.generation(shard))
                        for shard, items in calls.releases.items() for item in items)

    def take_due(self, calls: StockCalls, covered: list[Any]) -> None:
        """Moves the retries of `covered` (the queue as it was before the caller waited
        for the journal: what frees them is durable) into `calls`; a handover meanwhile
        settled those of another generation. Retries queued since stay queued."""
        taken = {id(item) for item in covered}
        due, self.due = ([item for item in self.due if id(item) in taken],
                         [item for item in self.due if id(item) not in taken])
        for item in due:
            if item.generation == self.generation(item.shard):
                target: dict[int, list[Any]] = (
                    calls.releases if item.kind == "release" else calls.abandons
                    if item.kind == "abandon" else calls.returns)
                target[item.shard].append(item.item)
