"""OrderShard: owns orders, idempotency keys and payment deadlines (key: merchant + buyer).

Placing a batch: settle idempotency per order, group every new order's lines by stock
shard, make one ``reserve`` call per stock shard, complete the orders whose lines were
all held and release the partial holds of the others, journal the new orders, and (in
durable mode) answer once their group commit is done.

On start (first or after a crash) it rebuilds its orders from Postgres before serving,
then tells every stock shard which holds it owns, so holds of orders that never
committed are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from actors import clock, metrics
from actors.journal import GroupCommitter
from actors.loops import every, until_done
from actors.persistence import (
    commit_order_entries,
    open_store,
    order_rows,
    restore_order,
    transition_rows,
)
from actors.routing import ShardGroup, find_actors
from adapters.postgres import Store
from engine.config import Config
from engine.errors import (
    DomainError,
    InvalidTransition,
    ResultCode,
    Unavailable,
)
from engine.orders import Order, OrderBook, OrderSnapshot, OrderStatus, StockAction
from engine.sharding import RoutingTable

log = logging.getLogger(__name__)

# (merchant_id, idempotency_key, buyer_id, lines, payment_window_s, slot, deadline_ms,
#  key_id). deadline_ms: the client's deadline (0: none); an order not begun by then is
# not placed. key_id: the API key placing it.
Placement = tuple[str, str, str, tuple[tuple[str, int], ...], int, int, int, str]
PlaceResult = tuple[ResultCode, Any]  # (OK | REPLAYED, OrderSnapshot) or (code, message)
# (op, merchant_id, order_id or buyer_id, argument, only_key): only_key set for a channel
# key, which sees only the orders it placed.
Action = tuple[str, str, str, Any, str]


class OrderShard:
    def __init__(self, index: int, config: Config, stock_handles: Sequence[Any],
                 stock_table: RoutingTable, order_table: RoutingTable) -> None:
        self.index = index
        self._instance = secrets.token_hex(4)  # changes when Ray restarts the actor
        self._config = config
        self._book = OrderBook(secrets.token_hex(3), config.orders_per_shard_max)
        self._stock = ShardGroup(stock_handles, stock_table, config.slots_total)
        self._slots = order_table.slots_of(index)
        self._waiting: dict[tuple[str, str], asyncio.Future[PlaceResult]] = {}
        self._not_durable: dict[str, asyncio.Future[None]] = {}
        self._busy: set[str] = set()  # orders with a stock call in flight
        self._moving = False  # resharding: stock-changing work is refused meanwhile
        self._stock_calls_inflight = 0
        self._place_calls = 0
        self._place_seconds = 0.0  # from a batch's arrival to its answer
        self._reserve_seconds = 0.0  # waiting for stock shards
        self._releases_due: list[tuple[str, int, Any]] = []  # stock calls to retry
        self._store: Store | None = None
        self._journal: GroupCommitter | None = None
        self._ready = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(every(
            config.expiry_sweep_interval_ms / 1000, self._sweep_once, "order expiry sweep",
            after=self._ready))

    async def _start(self) -> None:
        self._store = await open_store(self._config.postgres_dsn, self._config.postgres_pool_size)
        if self._store is not None:
            store = self._store
            stored = await store.stock_routing()
            if stored is not None and stored.version > self._stock.table.version:
                handles = await find_actors([f"stock-{i}" for i in range(stored.shards)])
                self._stock.update(handles, stored)  # resharded since this actor was made
            self._journal = GroupCommitter(
                lambda entries: commit_order_entries(store, entries),
                batch_max=self._config.commit_orders_max,
                delay_s=self._config.commit_delay_ms_max / 1000,
                entries_max=self._config.journal_entries_max,
                retry_delay_s_max=self._config.commit_retry_delay_ms_max / 1000,
                name=f"order-{self.index}")
            rows = await self._store.load_orders(self._slots)
            for row, lines in rows:
                self._book.restore(restore_order(row, lines))
            self._book.check_invariants()
            log.info("order shard %d recovered %d orders", self.index, len(rows))
        await until_done(self._push_stock_state, f"order shard {self.index} recovery")

    async def _push_stock_state(self) -> None:
        """Every stock shard learns the holds and sales this shard owns there (and drops
        any others it had from this shard: orders that never committed)."""
        await asyncio.gather(*(self._stock.call(shard, "replace_owned", self.index,
                                                *self._stock_state(shard))
                               for shard in range(len(self._stock.handles))))

    def _stock_state(self, stock_shard: int) -> tuple[list[Any], list[Any]]:
        """(holds, sales) of this shard's orders on one stock shard."""
        grace_ms = self._config.reservation_grace_ms
        holds: list[Any] = []
        sold: list[Any] = []
        for order in self._book.orders.values():
            if order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                continue
            part = self._parts(order.merchant_id, order.unpriced_lines).get(stock_shard)
            if not part:
                continue
            if order.status == OrderStatus.RESERVED:
                holds.append((order.order_id, order.merchant_id, order.buyer_id, tuple(part),
                              order.payment_deadline_ms + grace_ms))
            else:
                sold.extend((order.merchant_id, sku_id, order.buyer_id, quantity)
                            for sku_id, quantity in part)
        return holds, sold

    async def stock_state_for(self, stock_shard: int) -> tuple[list[Any], list[Any]]:
        """Asked by a stock shard when it starts or recovers."""
        await self._ready
        return self._stock_state(stock_shard)

    # --- placing (hot path) -----------------------------------------------------------------

    async def reroute_stock(self, handles: Sequence[Any], table: RoutingTable) -> None:
        """Resharding: stops taking stock-changing work, lets what is in flight finish,
        then routes by the new table. Work refused meanwhile gets UNAVAILABLE."""
        self._moving = True
        while self._stock_calls_inflight:
            await asyncio.sleep(0.005)
        self._stock.update(handles, table)
        self._releases_due.clear()  # addressed by the old table; the rebuild settles them

    async def resume(self) -> None:
        self._moving = False

    async def save_stock_routing(self, table: RoutingTable) -> None:
        """Makes a new stock table durable (before anyone routes by it)."""
        await self._ready
        if self._store is not None:
            await self._store.save_stock_routing(table)

    async def stock_routing(self) -> RoutingTable:
        await self._ready
        return self._stock.table

    async def place(self, items: Sequence[Placement]) -> list[PlaceResult]:
        if self._moving:
            return [(ResultCode.UNAVAILABLE, "stock is being resharded; retry with the same"
                     " key")] * len(items)
        self._stock_calls_inflight += 1
        try:
            return await self._place_measured(items)
        finally:
            self._stock_calls_inflight -= 1

    async def _place_measured(self, items: Sequence[Placement]) -> list[PlaceResult]:
        started = time.perf_counter()
        try:
            results = await self._place(items)
        finally:
            self._place_calls += 1
            self._place_seconds += time.perf_counter() - started
        outcomes: dict[str, int] = {}
        for code, _ in results:
            outcomes[code.name] = outcomes.get(code.name, 0) + 1
        for outcome, count in outcomes.items():
            metrics.record(metrics.orders(), count, outcome=outcome)
        return results

    async def _place(self, items: Sequence[Placement]) -> list[PlaceResult]:
        await self._ready
        now = clock.now_ms()
        results: list[Any] = [None] * len(items)
        requests: dict[int, list[Any]] = defaultdict(list)
        new: list[tuple[int, str, list[int], int]] = []
        waits: list[tuple[int, asyncio.Future[PlaceResult]]] = []
        room = self._journal is None or self._journal.has_room(len(items))
        grace_ms = self._config.reservation_grace_ms
        for i, (merchant_id, key, buyer_id, lines, window_s, slot, deadline, _) in enumerate(
                items):
            if deadline and now >= deadline:
                results[i] = (ResultCode.UNAVAILABLE, "the call's deadline passed before the"
                              " order was placed; nothing was applied")
                continue
            begin = self._book.begin(merchant_id, key, buyer_id, lines, slot)
            if begin.code is ResultCode.OK and not room:
                self._book.abandon(merchant_id, key)
                results[i] = (ResultCode.OVERLOADED, self._journal_full_message())
            elif begin.code is ResultCode.OK:
                deadline_ms = now + window_s * 1000
                parts = self._parts(merchant_id, lines)
                for shard, part in parts.items():
                    requests[shard].append((begin.order_id, merchant_id, buyer_id,
                                            tuple(part), deadline_ms + grace_ms, self.index))
                new.append((i, begin.order_id, list(parts), deadline_ms))
            elif begin.code is ResultCode.REPLAYED:
                results[i] = (ResultCode.REPLAYED, begin.order)
            elif begin.code is ResultCode.UNAVAILABLE:
                waits.append((i, self._waiter(merchant_id, key)))
            else:
                results[i] = (begin.code, begin.message)
        reserving = time.perf_counter()
        replies = await self._reserve(requests)
        self._reserve_seconds += time.perf_counter() - reserving
        releases = self._finish(items, new, replies, results, now)
        if releases:
            await self._stock_calls(releases)
        for i, waiter in waits:  # concurrent retries of a key get the first one's answer
            code, value = await waiter
            results[i] = (ResultCode.REPLAYED if code is ResultCode.OK else code, value)
        return await self._settle(results)

    def _parts(self, merchant_id: str,
               lines: Sequence[tuple[str, int]]) -> dict[int, list[tuple[str, int]]]:
        parts: dict[int, list[tuple[str, int]]] = defaultdict(list)
        shard_of = self._stock.shard_of
        for line in lines:
            parts[shard_of(merchant_id, line[0])].append(line)
        return parts

    async def _reserve(self, requests: dict[int, list[Any]]) -> dict[tuple[int, str], Any]:
        """One call per stock shard; returns {(shard, order_id): (code, prices|message)}."""
        shards = list(requests)
        for shard in shards:
            metrics.record(metrics.batch_items(), len(requests[shard]), hop="order_to_stock")
        answers = await asyncio.gather(
            *(self._stock.call(shard, "reserve", requests[shard]) for shard in shards),
            return_exceptions=True)
        replies: dict[tuple[int, str], Any] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock shard %d failed: %r", shard, answer)
                answer = [(ResultCode.UNAVAILABLE, "stock shard unavailable; retry")] * len(
                    requests[shard])
            for request, reply in zip(requests[shard], answer, strict=True):
                replies[(shard, request[0])] = reply
        return replies

    def _finish(self, items: Sequence[Placement], new: list[tuple[int, str, list[int], int]],
                replies: dict[tuple[int, str], Any], results: list[Any],
                now: int) -> dict[tuple[str, int], list[Any]]:
        """Completes fully held orders and journals them; returns the partial holds to
        release, per stock shard."""
        releases: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for i, order_id, shards, deadline_ms in new:
            merchant_id, key, buyer_id, lines, _, _, _, key_id = items[i]
            answers = [replies[(shard, order_id)] for shard in shards]
            failed = next((a for a in answers if a[0] is not ResultCode.OK), None)
            if failed is None:
                prices = self._prices(merchant_id, lines, shards, answers)
                order = self._book.complete(order_id, merchant_id, key, buyer_id, lines,
                                            prices, now, deadline_ms, key_id)
                results[i] = (ResultCode.OK, order)
            else:
                self._book.abandon(merchant_id, key)
                for shard, answer in zip(shards, answers, strict=True):
                    if answer[0] is ResultCode.OK or answer[0] is ResultCode.UNAVAILABLE:
                        releases[("release", shard)].append(order_id)
                results[i] = failed
            waiter = self._waiting.pop((merchant_id, key), None)
            if waiter is not None:
                waiter.set_result(results[i])
        self._journal_changes()
        return releases

    def _prices(self, merchant_id: str, lines: tuple[tuple[str, int], ...], shards: list[int],
                answers: list[Any]) -> list[int]:
        if len(shards) == 1:
            return list(answers[0][1])
        by_sku: dict[str, int] = {}
        parts = self._parts(merchant_id, lines)
        for shard, (_, prices) in zip(shards, answers, strict=True):
            by_sku.update((sku_id, price) for (sku_id, _), price in zip(parts[shard], prices,
                                                                          strict=True))
        return [by_sku[sku_id] for sku_id, _ in lines]

    def _waiter(self, merchant_id: str, key: str) -> asyncio.Future[PlaceResult]:
        waiter = self._waiting.get((merchant_id, key))
        if waiter is None:
            waiter = self._waiting[(merchant_id, key)] = asyncio.get_running_loop().create_future()
        return waiter

    # --- journal ----------------------------------------------------------------------------

    def _journal_changes(self) -> None:
        """Moves the book's new changes into the group-commit journal."""
        changes = self._book.drain_changes()
        if self._journal is None:
            return
        if not changes:
            return
        slots_total = self._config.slots_total
        entries: list[Any] = []
        for change in changes:
            order = self._book.orders[change.order_id]
            snapshot = order.snapshot()
            if change.event == "placed":
                row, lines = order_rows(snapshot, slots_total)
                entries.append(("order", row, lines))
            transition, event = transition_rows(change, order, snapshot)
            entries.append(("transition", transition, event))
        future = self._journal.append(entries)
        order_ids = [change.order_id for change in changes]
        for order_id in order_ids:
            self._not_durable[order_id] = future
        future.add_done_callback(lambda _: self._forget(order_ids, future))

    def _forget(self, order_ids: list[str], future: asyncio.Future[None]) -> None:
        not_durable = self._not_durable
        for order_id in order_ids:
            if not_durable.get(order_id) is future:
                del not_durable[order_id]

    def _journal_full_message(self) -> str:
        if self._journal is not None and self._journal.failing:
            return "the database is unavailable; retry with the same key"
        return "the commit journal is full; retry with the same key"

    async def _settle(self, results: list[Any]) -> list[Any]:
        """In durable mode, waits for the commits of what `results` report."""
        if self._config.ack_mode != "durable" or not self._not_durable:
            return results
        pending = {self._not_durable[o.order_id] for o in _orders_in(results)
                   if o.order_id in self._not_durable}
        if pending:
            await asyncio.gather(*(asyncio.shield(f) for f in pending))
        return results

    # --- reads and transitions --------------------------------------------------------------

    async def act(self, items: Sequence[Action]) -> list[Any]:
        """A batch of get / list / pay / cancel / fulfil; each answer is a snapshot, a
        (page, next offset) pair, or a DomainError."""
        if self._moving and any(item[0] not in ("get", "list") for item in items):
            return [Unavailable("stock is being resharded; retry")] * len(items)
        self._stock_calls_inflight += 1
        try:
            return await self._act(items)
        finally:
            self._stock_calls_inflight -= 1

    async def _act(self, items: Sequence[Action]) -> list[Any]:
        await self._ready
        results: list[Any] = [None] * len(items)
        stock_calls: dict[tuple[str, int], list[Any]] = defaultdict(list)
        commits: list[tuple[int, Order, str]] = []
        now = clock.now_ms()
        for i, item in enumerate(items):
            try:
                results[i] = self._act_one(item, now, stock_calls, commits, i)
            except DomainError as error:
                results[i] = error
        failed = await self._stock_calls(stock_calls)
        for i, order, op in commits:
            self._busy.discard(order.order_id)
            try:
                if order.order_id in failed:
                    raise failed[order.order_id]
                results[i] = self._book.apply(order, op, clock.now_ms())
            except DomainError as error:
                results[i] = error
        self._journal_changes()
        return await self._settle(results)

    def _act_one(self, item: Action, now: int, stock_calls: dict[tuple[str, int], list[Any]],
                 commits: list[tuple[int, Order, str]], position: int) -> Any:
        op, merchant_id, target, argument, only_key = item
        if op == "get":
            return self._book.get(merchant_id, target, only_key).snapshot()
        if op == "list":
            offset, limit = argument
            return self._book.list_for_buyer(merchant_id, target, offset, limit, only_key)
        order, action = self._book.check(merchant_id, target, op, now, only_key)
        if action is None:
            return order.snapshot()
        if order.order_id in self._busy:
            raise Unavailable("the order is changing; retry", order_id=order.order_id)
        parts = self._parts(order.merchant_id, order.unpriced_lines)
        if action is StockAction.COMMIT:  # stock first, then the state
            self._busy.add(order.order_id)
            commits.append((position, order, op))
            for shard in parts:
                stock_calls[("commit", shard)].append(order.order_id)
            return None
        snapshot = self._book.apply(order, op, now)  # state first, then the stock
        for shard, part in parts.items():
            if action is StockAction.RELEASE:
                stock_calls[("release", shard)].append(order.order_id)
            elif action is StockAction.RETURN:
                stock_calls[("return_sold", shard)].append(
                    (order.order_id, order.merchant_id, order.buyer_id, tuple(part),
                     self.index))
        return snapshot

    async def _stock_calls(self, calls: dict[tuple[str, int], list[Any]]) -> dict[str, Any]:
        """Commits, releases and returns on stock shards; returns {order_id: error} of failed
        commits. Failed releases and returns are queued and retried by the sweeper."""
        keys = list(calls)
        answers = await asyncio.gather(*(self._stock.call(shard, method, calls[(method, shard)])
                                         for method, shard in keys), return_exceptions=True)
        failed: dict[str, Any] = {}
        for (method, shard), answer in zip(keys, answers, strict=True):
            items = calls[(method, shard)]
            if isinstance(answer, BaseException):
                if method == "commit":
                    failed.update((o, Unavailable("stock shard unavailable; retry"))
                                  for o in items)
                else:
                    self._releases_due.extend((method, shard, item) for item in items)
                continue
            if method == "commit":
                for order_id, (code, message) in zip(items, answer, strict=True):
                    if code is not ResultCode.OK:
                        failed[order_id] = InvalidTransition(message, order_id=order_id)
        return failed

    # --- housekeeping -----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        journal = self._journal
        return {"index": self.index, "instance": self._instance, "orders": len(self._book.orders),
                "releases_due": len(self._releases_due),
                "journal_depth": journal.depth if journal else 0,
                "commits": journal.commits if journal else 0,
                "committed_entries": journal.committed_entries if journal else 0,
                "commit_failing": journal.failing if journal else False,
                "commit_seconds": journal.commit_seconds if journal else 0.0,
                "place_calls": self._place_calls, "place_seconds": self._place_seconds,
                "reserve_seconds": self._reserve_seconds}

    async def check_invariants(self) -> bool:
        await self._ready
        self._book.check_invariants()
        return True


    async def _sweep_once(self) -> None:
        if self._moving:
            return
        if self._journal is not None:
            metrics.record(metrics.depth(), self._journal.depth, queue="journal",
                           actor=f"order-{self.index}")
        now = clock.now_ms()
        calls: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for order in self._book.due_for_expiry(now, self._config.expiry_sweep_items_max):
            if order.order_id in self._busy:
                self._book.remind(order)  # being paid right now; look again later
                continue
            self._book.apply(order, "expire", now)
            for shard in self._parts(order.merchant_id, order.unpriced_lines):
                calls[("release", shard)].append(order.order_id)
        self._journal_changes()
        retries, self._releases_due = self._releases_due, []
        for method, shard, item in retries:
            calls[(method, shard)].append(item)
        if calls:
            await self._stock_calls(calls)


def _orders_in(results: list[Any]) -> list[OrderSnapshot]:
    found = []
    for result in results:
        if isinstance(result, OrderSnapshot):
            found.append(result)
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1],
                                                                             OrderSnapshot):
            found.append(result[1])
    return found


__all__ = ["OrderShard"]
