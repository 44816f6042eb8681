"""An order shard's journal: its changes go to Postgres by group commit (actors.journal),
and it knows which orders' changes are not durable yet (a durable-mode answer waits for
them; a handover counts a cancel that is not durable as still holding)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from flashtx.actors import tracing
from flashtx.actors.journal import GroupCommitter
from flashtx.actors.persistence import (
    RefusedThenFailed,
    cart_entry,
    commit_order_entries,
    finished_rows,
    placed_entries,
    transition_rows,
)
from flashtx.adapters.postgres import Store
from flashtx.engine.carts import Cart, CartKey
from flashtx.engine.config import Config
from flashtx.engine.errors import ResultCode, refusal
from flashtx.engine.orders import OrderBook, OrderSnapshot
from flashtx.engine.sharding import slot_of

log = logging.getLogger(__name__)

KEY_TAKEN = "idempotency key was used with a different order"
DATABASE_DOWN = "the database is unavailable; retry with the same key"


class Refused:
    """Ids of orders the database refused (their key was another shard's first), the
    latest `kept_max`: their later changes are dropped, their placements answered as
    conflicts."""

    def __init__(self, kept_max: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._kept_max = kept_max

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, order_ids: list[str]) -> None:
        for order_id in order_ids:
            self._ids[order_id] = None
        while len(self._ids) > self._kept_max:
            self._ids.popitem(last=False)


class OrderJournal:
    def __init__(self, config: Config, name: str, owners: int = 1,
                 on_refused: Callable[[list[str]], None] | None = None) -> None:
        """`owners`: the number of order shards (fulfilled units are summed per shard).
        `on_refused`: called with the orders a commit refused (their idempotency key was
        committed by another shard), before any answer waiting for that commit."""
        self._config = config
        self._owners = owners
        self._name = name
        self._on_refused = on_refused
        self.committer: GroupCommitter | None = None  # None: nothing durable (no database)
        self.not_durable: dict[str, asyncio.Future[None]] = {}
        self.changes_journaled = 0  # order changes moved into the journal, ever
        self.refused = Refused(config.refused_orders_kept_max)
        self.refused_total = 0

    async def _flush(self, store: Store, entries: list[Any], retry: bool) -> None:
        try:
            refused = await commit_order_entries(store, entries, retry, self._owners,
                                                 self.refused)
        except RefusedThenFailed as failed:
            self._refused(failed.order_ids)  # known for good: the retry leaves them out
            raise failed.__cause__ or failed from None
        self._refused(refused)

    def _refused(self, refused: list[str]) -> None:
        if refused:
            self.refused.add(refused)
            self.refused_total += len(refused)
            if self._config.ack_mode != "durable":
                log.warning("%s: %d acknowledged orders refused at commit: their keys were "
                            "committed by other shards first", self._name, len(refused))
            if self._on_refused is not None:
                self._on_refused(refused)

    def open(self, store: Store) -> None:
        config = self._config
        self.committer = self.committer or GroupCommitter(
            lambda entries, retry: self._flush(store, entries, retry),
            batch_max=config.commit_orders_max, delay_s=config.commit_delay_ms_max / 1000,
            entries_max=config.journal_entries_max,
            retry_delay_s_max=config.commit_retry_delay_ms_max / 1000, name=self._name)

    def has_room(self, items: int) -> bool:
        return self.committer is None or self.committer.has_room(items)

    def room(self, share: float) -> int | None:
        return None if self.committer is None else self.committer.room(share)

    def full_refusal(self) -> tuple[ResultCode, str]:
        """Why new work is refused while the journal has no room: its database failing
        (UNAVAILABLE), or more work waiting than it holds (OVERLOADED)."""
        if self.committer is not None and self.committer.failing:
            return (ResultCode.UNAVAILABLE, DATABASE_DOWN)
        return (ResultCode.OVERLOADED, "the commit journal is full; retry with the same key")

    def orders(self, book: OrderBook, carts: Sequence[Any] = ()
               ) -> asyncio.Future[None] | None:
        """Moves the book's new changes into the journal, with `carts` entries in the same
        commit. Answers the commit's future (None: nothing to commit)."""
        changes = book.drain_changes()
        if self.committer is None or not changes:
            return None
        self.changes_journaled += len(changes)
        slots_total = self._config.slots_total
        entries: list[Any] = list(carts)
        orders = book.orders
        append, extend = entries.append, entries.extend
        for change in changes:
            order = orders[change.order_id]
            if change.event == "placed":
                extend(placed_entries(order, change.at_ms, slots_total))
                continue
            transition, event = transition_rows(change, order)
            append(("transition", transition, event, finished_rows(change, order)))
        future = self.committer.append(entries, tracing.link())
        order_ids = [change.order_id for change in changes]
        for order_id in order_ids:
            self.not_durable[order_id] = future
        future.add_done_callback(lambda _: self._forget(order_ids, future))
        return future

    def _forget(self, order_ids: list[str], future: asyncio.Future[None]) -> None:
        not_durable = self.not_durable
        for order_id in order_ids:
            if not_durable.get(order_id) is future:
                del not_durable[order_id]

    def slot(self, key: CartKey) -> int:
        return slot_of(key[0], key[1], self._config.slots_total)

    def cart(self, key: CartKey, cart: Cart | None) -> None:
        """A cart's new state (None or empty: gone), written behind: no answer waits."""
        if self.committer is not None:
            self.committer.append([cart_entry(key, cart, self.slot(key))])

    def carts_gone(self, keys: list[CartKey]) -> None:
        if self.committer is not None and keys:
            self.committer.append([cart_entry(key, None, 0) for key in keys])

    async def settle(self, results: list[Any],
                     commits: Sequence[asyncio.Future[None] | None] | None = None
                     ) -> list[Any]:
        """In durable mode, waits for the commits of the orders `results` report.
        `commits`: the commits of the orders placed by this call (journal.orders' answers):
        then only its replays are looked up, not every order."""
        if self._config.ack_mode != "durable" or not self.not_durable:
            return results
        not_durable = self.not_durable
        if commits is None:
            pending = {not_durable[o.order_id] for o in _orders_in(results)
                       if o.order_id in not_durable}
        else:
            pending = {f for f in commits if f is not None and not f.done()}
            replayed = ResultCode.REPLAYED
            for code, value in results:
                if code is replayed and isinstance(value, OrderSnapshot) and (
                        value.order_id in not_durable):
                    pending.add(not_durable[value.order_id])
        if pending:
            await asyncio.gather(*(asyncio.shield(f) for f in pending))
        return results

    def answer_refused(self, results: list[Any]) -> list[Any]:
        """Placements whose order a commit refused (its key was another shard's first)
        answer the conflict they were, once their commit is done (``settle``). Called
        only when a commit refused orders during the placement: the answers are not
        looked through otherwise."""
        refused = self.refused
        if not refused:
            return results
        codes = (ResultCode.OK, ResultCode.REPLAYED)
        for i, (code, value) in enumerate(results):
            if code in codes and isinstance(value, OrderSnapshot) and (
                    value.order_id in refused):
                results[i] = (ResultCode.IDEMPOTENCY_CONFLICT,
                              refusal(KEY_TAKEN, idempotency_key=value.idempotency_key))
        return results

    async def durable(self) -> None:
        """Waits until every change journaled so far is committed."""
        if self.committer is not None:
            await asyncio.shield(self.committer.durable())


def _orders_in(results: list[Any]) -> list[OrderSnapshot]:
    found = []
    for result in results:
        if isinstance(result, OrderSnapshot):
            found.append(result)
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1],
                                                                             OrderSnapshot):
            found.append(result[1])
    return found
