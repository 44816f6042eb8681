"""An order shard's journal: its changes go to Postgres by group commit (actors.journal),
one batch journal row per commit (actors.batch_journal), materialized into the query
tables behind the commits. It knows which orders' changes are not committed yet
(`not_committed`: a durable-mode answer waits for them, a handover counts a cancel not
committed as still holding) and which are not materialized yet (`not_materialized`: an
order leaves memory only once the tables hold it)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from flashtx.actors import clock, tracing
from flashtx.actors.batch_journal import BatchTables, Materializer
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
                 on_refused: Callable[[list[str]], None] | None = None, owner: int = 0
                 ) -> None:
        """`owners`: the number of order shards (fulfilled units are summed per shard).
        `on_refused`: called with the orders a commit refused (their idempotency key was
        committed by another shard), before any answer waiting for that commit."""
        self._config = config
        self._owners = owners
        self._owner = owner
        self._name = name
        self._on_refused = on_refused
        self.committer: GroupCommitter | None = None  # None: nothing durable (no database)
        self.materializer: Materializer | None = None
        self.not_committed: dict[str, asyncio.Future[None]] = {}  # not committed yet
        self.not_materialized: dict[str, asyncio.Future[None]] = {}  # not materialized yet
        self._incarnation = 0
        self._batches = 0  # journal rows written by this incarnation
        self.changes_journaled = 0  # order changes moved into the journal, ever
        self.refused = Refused(config.refused_orders_kept_max)
        self.refused_total = 0

    def reborn(self, incarnation: int) -> None:
        """This incarnation's number (store.next_incarnation): the high half of its
        journal positions."""
        self._incarnation = incarnation

    async def _flush(self, store: Store, entries: list[Any], retry: bool) -> None:
        if not retry:
            self._batches += 1
        # Unique among the shard's rows not materialized, which are all this
        # incarnation's (a start materializes every row left before it writes).
        position = ((self._incarnation & 0x7FFF_FFFF) << 32) + self._batches
        owners, owner = self._owners, self._owner
        written: list[BatchTables] = []

        async def write(kept: Any, retry: bool) -> None:
            tables = BatchTables.of(kept, owners)
            if not (retry and await store.has_journal(owners, owner, position)):
                await store.append_journal(owners, owner, position, clock.now_ms(),
                                           len(tables.orders), tables.encode(position),
                                           tables.key_columns())
            written.append(tables)

        try:
            refused = await commit_order_entries(store, entries, retry, owners,
                                                 self.refused, write)
        except RefusedThenFailed as failed:
            self._refused(failed.order_ids)  # known for good: the retry leaves them out
            raise failed.__cause__ or failed from None
        self._refused(refused)
        assert self.materializer is not None
        materialized = self.materializer.add(position, written[-1])
        # The batch's orders stay "not durable" until the tables hold them (before the
        # answers waiting for the commit run: no moment where they seem durable).
        not_materialized = self.not_materialized
        refused_ids = self.refused
        order_ids = {order_id for entry in entries if (order_id := _order_id(entry))
                     and order_id not in refused_ids}
        for order_id in order_ids:
            not_materialized[order_id] = materialized
        materialized.add_done_callback(lambda _: _forget(not_materialized, order_ids,
                                                         materialized))

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
        self.materializer = self.materializer or Materializer(
            store, self._owners, self._owner, f"{self._name} materializer",
            config.materialize_batches_max, config.materialize_rows_max,
            config.commit_retry_delay_ms_max / 1000, config.materialize_delay_ms / 1000)
        self.committer = self.committer or GroupCommitter(
            lambda entries, retry: self._flush(store, entries, retry),
            batch_max=config.commit_orders_max, delay_s=config.commit_delay_ms_max / 1000,
            entries_max=config.journal_entries_max,
            retry_delay_s_max=config.commit_retry_delay_ms_max / 1000, name=self._name)

    def has_room(self, items: int) -> bool:
        return self.committer is None or (self.committer.has_room(items) and (
            self.materializer is None or self.materializer.has_room()))

    def room(self, share: float) -> int | None:
        return None if self.committer is None else self.committer.room(share)

    def full_refusal(self) -> tuple[ResultCode, str]:
        """Why new work is refused while the journal has no room: its database failing
        (UNAVAILABLE), or more work waiting than it holds (OVERLOADED)."""
        if self.committer is not None and (self.committer.failing or (
                self.materializer is not None and self.materializer.failing_since)):
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
        not_committed, not_materialized = self.not_committed, self.not_materialized
        for order_id in order_ids:
            not_committed[order_id] = not_materialized[order_id] = future
        def forget(_: object) -> None:
            _forget(not_committed, order_ids, future)
            _forget(not_materialized, order_ids, future)

        future.add_done_callback(forget)
        return future

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
        if self._config.ack_mode != "durable" or not self.not_committed:
            return results
        not_committed = self.not_committed
        if commits is None:
            pending = {not_committed[o.order_id] for o in _orders_in(results)
                       if o.order_id in not_committed}
        else:
            pending = {f for f in commits if f is not None and not f.done()}
            replayed = ResultCode.REPLAYED
            for code, value in results:
                if code is replayed and isinstance(value, OrderSnapshot) and (
                        value.order_id in not_committed):
                    pending.add(not_committed[value.order_id])
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

    def materializer_stats(self) -> dict[str, Any]:
        """The materializer's lag (batches committed and not in the query tables yet, the
        oldest one's age) and work so far."""
        materializer = self.materializer
        if materializer is None:
            return {"materialize_lag_batches": 0, "materialize_lag_ms": 0,
                    "materialized_batches": 0, "materialize_seconds": 0.0,
                    "materialize_failing": False}
        return {"materialize_lag_batches": materializer.lag_batches,
                "materialize_lag_ms": round(materializer.lag_s() * 1000),
                "materialized_batches": materializer.materialized_batches,
                "materialize_seconds": materializer.seconds,
                "materialize_failing": materializer.failing_since is not None}

    async def committed(self) -> None:
        """Waits until every change journaled so far is committed (a restart finds it,
        materializing what is left first): before stock is freed or sold again."""
        if self.committer is not None:
            await asyncio.shield(self.committer.durable())

    async def durable(self) -> None:
        """Waits until every change journaled so far is committed and materialized."""
        if self.committer is not None:
            await asyncio.shield(self.committer.durable())
        if self.materializer is not None:
            await self.materializer.through_now()


def _order_id(entry: Any) -> str | None:
    """The order a journal entry changes (a cart entry: None)."""
    if entry[0] == "order":
        return str(entry[1][0])
    if entry[0] == "transition":
        return str(entry[2][3])
    return None


def _forget(pending: dict[str, asyncio.Future[None]], order_ids: Any,
            future: asyncio.Future[None]) -> None:
    for order_id in order_ids:
        if pending.get(order_id) is future:
            del pending[order_id]


def _orders_in(results: list[Any]) -> list[OrderSnapshot]:
    found = []
    for result in results:
        if isinstance(result, OrderSnapshot):
            found.append(result)
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1],
                                                                             OrderSnapshot):
            found.append(result[1])
    return found
