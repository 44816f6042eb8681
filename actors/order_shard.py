"""OrderShard: owns orders, idempotency keys, carts and payment deadlines (key: merchant +
buyer). An I/O shell: the decisions are engine.placing (new orders), engine.cart_plans
(cart lines and their holds) and engine.order_state (transitions, expiry, handovers); this
class awaits stock shards, journals changes and answers.

Placing a batch: settle idempotency per order, make one ``reserve`` call per stock shard,
complete the orders whose lines were all held and release the partial holds of the
others, journal the new orders, and (in durable mode) answer once their group commit is
done. Stock is freed (cancel, refund, expiry, smaller cart lines) only after the change
that frees it is durable.

On start (first or after a crash) it rebuilds its state from Postgres before serving,
then hands every stock shard the holds and sales it owns there, so holds of orders that
never committed are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from actors import clock, metrics
from actors.journal import GroupCommitter
from actors.loops import every, until_done
from actors.persistence import (
    campaign_from_row,
    cart_entry,
    cart_from_row,
    commit_order_entries,
    open_store,
    order_rows,
    restore_order,
    transition_rows,
)
from actors.ports import MerchantPeer, StockPeer, find_peers
from actors.routing import ShardGroup
from adapters.postgres import Store
from engine.campaigns import Campaign
from engine.cart_plans import (
    CartHold,
    CheckoutPlan,
    after_hold,
    apply_change,
    checkout_of,
    hold_batches,
    plan_change,
    snapshot_of,
)
from engine.carts import Cart, CartKey, CartSnapshot, hold_id
from engine.config import Config
from engine.errors import DomainError, InvalidTransition, Overloaded, ResultCode, Unavailable
from engine.messages import (
    ActionBatch,
    Answers,
    CartBatch,
    CheckoutBatch,
    Generation,
    Handover,
    PlaceBatch,
    ReserveBatch,
    ReturnBatch,
)
from engine.order_state import RELEASES_WAITING, OrderState, StockCalls
from engine.orders import Order, OrderSnapshot, PlaceResults
from engine.placing import FromCart, Placing
from engine.sharding import RoutingTable, slot_of

log = logging.getLogger(__name__)

PlaceResult = tuple[ResultCode, Any]  # (OK | REPLAYED, OrderSnapshot) or (code, reason)
RESHARDING = "stock is being resharded; retry with the same key"
STOCK_UNAVAILABLE = "stock shard unavailable; retry"


class _Due(NamedTuple):
    """A release or refund to retry (its stock shard did not answer)."""

    kind: str  # release | return
    shard: int
    item: Any  # order or hold id; (order_id, merchant_id, buyer_id, lines) for a return
    generation: Generation


class OrderShard(clock.ClockControl):
    def __init__(self, index: int, config: Config, stock: Sequence[StockPeer],
                 stock_table: RoutingTable, order_table: RoutingTable) -> None:
        self.index = index
        self._instance = secrets.token_hex(4)  # changes when Ray restarts the actor
        self._config = config
        self._state = OrderState.empty(config, secrets.token_hex(3))
        self._stock: ShardGroup[StockPeer] = ShardGroup(stock, stock_table,
                                                        config.slots_total, by_sku=True)
        self._slots = order_table.slots_of(index)
        self._waiting: dict[tuple[str, str], asyncio.Future[PlaceResult]] = {}
        self._not_durable: dict[str, asyncio.Future[None]] = {}
        self._busy: set[str] = set()  # orders with a stock call in flight
        self._carts_busy: set[tuple[CartKey, str]] = set()  # lines with a stock call out
        self._moving = False  # resharding: stock-changing work is refused meanwhile
        self._stock_calls_inflight = 0
        self._place_calls = 0
        self._place_seconds = 0.0  # from a batch's arrival to its answer
        self._reserve_seconds = 0.0  # waiting for stock shards
        # Releases and refunds to retry. When a stock shard takes this shard's state over
        # (it restarted), the state it gets already says what they would have done: they
        # are dropped, not repeated.
        self._releases_due: list[_Due] = []
        self._handovers: dict[int, int] = {}  # stock shard -> generation
        self._born_ms = clock.now_ms()  # generations of a later incarnation are greater
        self._store: Store | None = None
        self._journal: GroupCommitter | None = None
        self._ready = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(every(
            config.expiry_sweep_interval_ms / 1000, self._sweep_once, "order expiry sweep",
            after=self._ready))

    # --- start and recovery -------------------------------------------------------------------

    async def _start(self) -> None:
        self._store = await open_store(self._config.postgres_dsn, self._config.postgres_pool_size)
        if self._store is not None:
            # A read that fails (the database restarting too) is tried again, never left
            # as a shard that cannot serve.
            await until_done(self._recover, f"order shard {self.index} recovery")
        else:  # nothing durable: the merchant shards hold the campaigns
            await until_done(self._load_campaigns, f"order shard {self.index} campaigns")
        await until_done(self._push_stock_state, f"order shard {self.index} recovery")

    async def _recover(self) -> None:
        """Rebuilds memory from the database (from scratch on every try)."""
        store = self._store
        assert store is not None
        state = self._state = OrderState.empty(self._config, self._state.book.epoch)
        stored = await store.stock_routing()
        if stored is not None and stored.version > self._stock.table.version:
            peers = await find_peers([f"stock-{i}" for i in range(stored.shards)])
            self._stock.update(peers, stored)  # resharded since this actor was made
        self._journal = self._journal or GroupCommitter(
            lambda entries, retry: commit_order_entries(store, entries, retry),
            batch_max=self._config.commit_orders_max,
            delay_s=self._config.commit_delay_ms_max / 1000,
            entries_max=self._config.journal_entries_max,
            retry_delay_s_max=self._config.commit_retry_delay_ms_max / 1000,
            name=f"order-{self.index}")
        for row in await store.load_campaigns():
            state.add_campaign(campaign_from_row(row))
        rows = await store.load_orders(self._slots)
        for row, lines in rows:
            state.restore_order(restore_order(row, lines))
        state.book.check_invariants()
        carts = await store.load_carts(self._slots)
        for row in carts:
            cart = cart_from_row(row)
            state.carts.restore(cart)
            merchant_id, buyer_id, campaign_id = cart.key
            state.count_units(merchant_id, campaign_id, buyer_id, cart.order_lines(), 1)
        log.info("order shard %d recovered %d orders, %d carts", self.index, len(rows),
                 len(carts))

    async def _load_campaigns(self) -> None:
        merchants: list[MerchantPeer] = await find_peers(
            [f"merchant-{i}" for i in range(self._config.merchant_shards)])
        for campaigns in await asyncio.gather(*(m.campaigns_of() for m in merchants)):
            for campaign in campaigns:
                self._state.add_campaign(campaign)

    async def _push_stock_state(self) -> None:
        """Every stock shard learns the holds and sales this shard owns there (and drops
        any others it had from this shard: orders that never committed)."""
        await asyncio.gather(*(peer.replace_owned(self._handover(shard))
                               for shard, peer in enumerate(self._stock.peers)))

    async def stock_state_for(self, stock_shard: int) -> Handover:
        """Asked by a stock shard when it starts or recovers."""
        await self._ready
        return self._handover(stock_shard)

    def _handover(self, stock_shard: int) -> Handover:
        """This shard's holds and sales on one stock shard, and the new generation: calls
        sent before it are stale there, and queued retries to it are dropped."""
        self._handovers[stock_shard] = self._handovers.get(stock_shard, 0) + 1
        self._releases_due = [due for due in self._releases_due if due.shard != stock_shard]
        holds, sales = self._state.stock_state(stock_shard, self._stock.shard_of,
                                               self._not_durable,
                                               self._config.reservation_grace_ms,
                                               clock.now_ms())
        return Handover(self.index, holds, sales, self._generation(stock_shard))

    def _generation(self, stock_shard: int) -> Generation:
        return Generation(self._born_ms, self._handovers.get(stock_shard, 0))

    # --- resharding ---------------------------------------------------------------------------

    async def reroute_stock(self, peers: Sequence[StockPeer], table: RoutingTable) -> None:
        """Stops taking stock-changing work, lets what is in flight finish, then routes by
        the new table. Work refused meanwhile gets UNAVAILABLE."""
        self._moving = True
        while self._stock_calls_inflight:
            await asyncio.sleep(0.005)
        self._stock.update(peers, table)
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

    async def campaign_changed(self, campaign: Campaign) -> None:
        """A campaign was created or ended (told by its merchant shard)."""
        await self._ready
        self._state.add_campaign(campaign)

    # --- placing (hot path) -------------------------------------------------------------------

    async def place(self, batch: PlaceBatch) -> list[PlaceResult]:
        if self._moving:
            return [(ResultCode.UNAVAILABLE, RESHARDING)] * len(batch)
        self._stock_calls_inflight += 1
        try:
            return PlaceResults(await self._place_measured(batch))
        finally:
            self._stock_calls_inflight -= 1

    async def _place_measured(self, batch: PlaceBatch,
                              from_carts: Sequence[FromCart | None] = ()) -> list[PlaceResult]:
        started = time.perf_counter()
        try:
            results = await self._place(batch, from_carts)
        finally:
            self._place_calls += 1
            self._place_seconds += time.perf_counter() - started
        outcomes: dict[str, int] = {}
        for code, _ in results:
            outcomes[code.name] = outcomes.get(code.name, 0) + 1
        for outcome, count in outcomes.items():
            metrics.record(metrics.orders(), count, outcome=outcome)
        return results

    async def _place(self, batch: PlaceBatch,
                     from_carts: Sequence[FromCart | None] = ()) -> list[PlaceResult]:
        await self._ready
        placing = Placing(self._state, batch, clock.now_ms(), self.index, self._stock.shard_of,
                          self._config.reservation_grace_ms, from_carts)
        attempts = placing.begin(self._has_room(len(batch)), self._journal_full_message())
        waits = [(i, self._waiter(batch.merchant_ids[i], batch.keys[i]))
                 for i in placing.waits]
        results = placing.results
        while attempts:  # campaign orders refused by their bucket try the next one
            round_ = placing.round(attempts)
            reserving = time.perf_counter()
            replies = await self._reserve(round_.batches)
            self._reserve_seconds += time.perf_counter() - reserving
            attempts, releases, done = placing.settle(attempts, round_, replies)
            if self._waiting:
                for i in done:
                    waiter = self._waiting.pop((batch.merchant_ids[i], batch.keys[i]), None)
                    if waiter is not None:
                        waiter.set_result(results[i])
            self._journal_changes()
            if releases:  # before the next try: it may go to the same shard
                await self._stock_calls(StockCalls(releases=releases))
        for i, waiter in waits:  # concurrent retries of a key get the first one's answer
            code, value = await waiter
            results[i] = (ResultCode.REPLAYED if code is ResultCode.OK else code, value)
        return await self._settle(results)

    async def _reserve(self, batches: dict[int, ReserveBatch]) -> dict[int, Answers]:
        """One call per stock shard; a shard that fails answers UNAVAILABLE for each."""
        shards = list(batches)
        for shard in shards:
            metrics.record(metrics.batch_items(), len(batches[shard]), hop="order_to_stock")
        answers = await asyncio.gather(*(self._stock.peer(shard).reserve(batches[shard])
                                         for shard in shards), return_exceptions=True)
        replies: dict[int, Answers] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock shard %d failed: %r", shard, answer)
                answer = Answers.all(ResultCode.UNAVAILABLE, STOCK_UNAVAILABLE,
                                     len(batches[shard]))
            replies[shard] = answer
        return replies

    def _waiter(self, merchant_id: str, key: str) -> asyncio.Future[PlaceResult]:
        waiter = self._waiting.get((merchant_id, key))
        if waiter is None:
            waiter = self._waiting[(merchant_id, key)] = asyncio.get_running_loop().create_future()
        return waiter

    # --- journal ------------------------------------------------------------------------------

    def _has_room(self, items: int) -> bool:
        return self._journal is None or self._journal.has_room(items)

    def _journal_changes(self) -> None:
        """Moves the book's new changes into the group-commit journal."""
        changes = self._state.book.drain_changes()
        if self._journal is None or not changes:
            return
        slots_total = self._config.slots_total
        entries: list[Any] = []
        orders = self._state.book.orders
        for change in changes:
            order = orders[change.order_id]
            if change.event == "placed":
                row, lines = order_rows(order, slots_total)
                entries.append(("order", row, lines))
            transition, event = transition_rows(change, order)
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

    async def _durable(self) -> None:
        """Waits until every change journaled so far is committed."""
        if self._journal is not None:
            await asyncio.shield(self._journal.durable())

    # --- reads and transitions ----------------------------------------------------------------

    async def act(self, batch: ActionBatch) -> list[Any]:
        """A batch of get / list / pay / cancel / fulfil / refund; each answer is a
        snapshot, a (page, next offset) pair, or a DomainError."""
        if self._moving and any(op not in ("get", "list") for op in batch.ops):
            return [Unavailable("stock is being resharded; retry")] * len(batch)
        self._stock_calls_inflight += 1
        try:
            return await self._act(batch)
        finally:
            self._stock_calls_inflight -= 1

    async def _act(self, batch: ActionBatch) -> list[Any]:
        await self._ready
        results: list[Any] = [None] * len(batch)
        calls = StockCalls()
        payments: list[tuple[int, Order, str]] = []
        now = clock.now_ms()
        act, shard_of, full = self._state.act, self._stock.shard_of, self._releases_full()
        for i, (op, merchant_id, target, argument, only_key) in enumerate(batch.rows()):
            answer: Any
            try:
                answer = act(op, merchant_id, target, argument, only_key, now, self._busy,
                             calls, shard_of, full)
            except DomainError as error:
                answer = error
            if isinstance(answer, Order):
                payments.append((i, answer, op))
            else:
                results[i] = answer
        # Stock is committed first, then the state; released (cancel, refund) only after
        # the state that frees it is durable: a crash in between must not bring back an
        # order whose units were sold again.
        failed = await self._stock_calls(StockCalls(commits=calls.commits))
        for i, order, op in payments:
            self._busy.discard(order.order_id)
            try:
                if order.order_id in failed:
                    raise failed[order.order_id]
                results[i] = self._state.book.apply(order, op, clock.now_ms())
            except DomainError as error:
                results[i] = error
        self._journal_changes()
        if calls.freeing():
            await self._durable()
            await self._stock_calls(StockCalls(releases=calls.releases, returns=calls.returns))
        return await self._settle(results)

    def _releases_full(self) -> bool:
        return len(self._releases_due) >= self._config.releases_due_max

    async def _stock_calls(self, calls: StockCalls) -> dict[str, DomainError]:
        """Commits, releases and refunds on stock shards; answers {order_id: error} of
        failed commits. Failed releases and refunds are queued and retried by the sweeper."""
        peer, index = self._stock.peer, self.index
        commits = list(calls.commits.items())
        frees: list[tuple[str, int, list[Any]]] = [
            *(("release", shard, items) for shard, items in calls.releases.items()),
            *(("return", shard, items) for shard, items in calls.returns.items())]
        generations = {shard: self._generation(shard) for _, shard, _ in frees}  # as sent
        answers = await asyncio.gather(
            *(peer(shard).commit(order_ids) for shard, order_ids in commits),
            *(peer(shard).release(items, index, generations[shard]) if kind == "release"
              else peer(shard).return_sold(ReturnBatch.of(items, index, generations[shard]))
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
                self._releases_due.extend(_Due(kind, shard, item, generations[shard])
                                          for item in items)
        return failed

    # --- carts --------------------------------------------------------------------------------

    async def cart(self, batch: CartBatch) -> list[Any]:
        """A batch of cart operations; each answer is a CartSnapshot or a DomainError."""
        await self._ready
        now = clock.now_ms()
        state = self._state
        results: list[Any] = [None] * len(batch)
        pending: list[CartHold] = []
        room = self._has_room(len(batch))
        for i, (op, merchant_id, buyer_id, campaign_id, sku_id, quantity, hold_s) in (
                enumerate(batch.rows())):
            key = (merchant_id, buyer_id, campaign_id)
            try:
                if op == "get":
                    cart = state.carts.get(key)
                    results[i] = (cart.snapshot(now) if cart is not None
                                  else state.carts.empty(key, now))
                    continue
                if not room:
                    raise Overloaded(self._journal_full_message(),
                                     self._config.overload_retry_after_ms)
                if op == "clear":
                    results[i] = self._clear_cart(key, now)
                    continue
                change = plan_change(state, i, op, key, sku_id, quantity, hold_s, now,
                                     self._carts_busy, self._config.quantity_per_line_max)
                if change.needs_stock:
                    pending.append(change)
                else:
                    results[i] = self._apply(change, now)
            except DomainError as error:
                results[i] = error
        freeing = [change for change in pending if change.frees]
        if freeing:
            await self._free_cart_holds(freeing, results, now)
        pending = [change for change in pending if not change.frees]
        while pending:
            pending = await self._hold_cart_lines(pending, results, now)
        return results

    async def _free_cart_holds(self, changes: list[CartHold], results: list[Any],
                               now: int) -> None:
        """Lines that hold fewer units after the change (smaller, removed, or no longer
        held): the cart's new state is committed first, then the holds shrink. A crash in
        between must not bring back a cart whose units were sold again (the same order as
        a cancel: commit, then release). A shrink that fails leaves the stock shard
        holding too much until the hold expires or the shard takes this one's state over:
        undersold for a while, never oversold."""
        for change in changes:
            results[change.position] = self._apply(change, now)
        try:
            await self._durable()
            batches = hold_batches(changes, self.index, self._stock.shard_of)
            answers = await asyncio.gather(*(self._stock.peer(shard).hold(batch)
                                             for shard, batch in batches.items()),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    log.warning("shrinking cart holds failed: %r", answer)
        finally:
            for change in changes:
                self._carts_busy.discard((change.key, change.sku_id))

    async def _hold_cart_lines(self, pending: list[CartHold], results: list[Any],
                               now: int) -> list[CartHold]:
        """Takes or grows the stock holds of cart lines (one call per stock shard), then
        changes the lines; a new campaign hold refused for stock tries the buyer's next
        bucket (the changes answered)."""
        batches = hold_batches(pending, self.index, self._stock.shard_of)
        shards = list(batches)
        answers = await asyncio.gather(*(self._stock.peer(shard).hold(batches[shard])
                                         for shard in shards), return_exceptions=True)
        replies: dict[tuple[int, str], tuple[ResultCode, Any]] = {}
        for shard, answer in zip(shards, answers, strict=True):
            batch = batches[shard]
            if isinstance(answer, BaseException):
                answer = Answers.all(ResultCode.UNAVAILABLE, STOCK_UNAVAILABLE, len(batch))
            replies.update(zip(((shard, hold) for hold in batch.hold_ids), answer,
                               strict=True))
        again: list[CartHold] = []
        for change in pending:
            shard = self._stock.shard_of(change.key[0], change.stock_key)
            code, value = replies[(shard, hold_id(change.key, change.sku_id))]
            outcome = after_hold(self._state, change, code, value)
            if isinstance(outcome, CartHold):
                again.append(outcome)
                continue
            self._carts_busy.discard((change.key, change.sku_id))
            results[change.position] = outcome if outcome is not None else self._apply(change, now)
        return again

    def _apply(self, change: CartHold, now: int) -> CartSnapshot:
        return self._save_cart(change.key, apply_change(self._state, change, now), now)

    def _save_cart(self, key: CartKey, cart: Cart | None, now: int) -> CartSnapshot:
        """Journals the cart (written behind: the answer does not wait) and answers it."""
        if self._journal is not None:
            slot = slot_of(key[0], key[1], self._config.slots_total)
            self._journal.append([cart_entry(key, cart if cart and cart.lines else None, slot)])
        return snapshot_of(self._state, key, cart, now)

    def _clear_cart(self, key: CartKey, now: int) -> CartSnapshot:
        cart = self._state.carts.get(key)
        if cart is not None:
            if any((key, sku_id) in self._carts_busy for sku_id in cart.lines):
                raise Unavailable("this cart is changing; retry")
            if self._releases_full():
                raise Unavailable(RELEASES_WAITING)
            self._state.carts.remove(key)
            calls = StockCalls()
            self._gone([self._state.cart_gone(cart, calls, self._stock.shard_of)])
            # Its holds return once the cart is durably gone (the sweeper sends them).
            self._releases_due.extend(_Due("release", shard, hold, self._generation(shard))
                                      for shard, holds in calls.releases.items()
                                      for hold in holds)
        return self._state.carts.empty(key, now)

    def _gone(self, keys: list[CartKey]) -> None:
        if self._journal is not None and keys:
            self._journal.append([cart_entry(key, None, 0) for key in keys])

    async def checkout(self, batch: CheckoutBatch) -> list[PlaceResult]:
        """Carts become orders through the placing path. A key that placed an order
        answers it (REPLAYED) even once the cart is empty; a cart is emptied of what its
        order took only when the order exists (durable, in durable mode)."""
        if self._moving:
            return [(ResultCode.UNAVAILABLE, RESHARDING)] * len(batch)
        await self._ready
        results: list[Any] = [None] * len(batch)
        rows: list[tuple[Any, ...]] = []
        from_carts: list[FromCart | None] = []
        positions: list[int] = []
        for i, (merchant_id, buyer_id, campaign_id, key, window_s, slot, deadline,
                key_id) in enumerate(batch.rows()):
            plan = checkout_of(self._state, merchant_id, buyer_id, campaign_id, key,
                               self._carts_busy, self._stock.shard_of)
            if not isinstance(plan, CheckoutPlan):
                results[i] = plan
                continue
            rows.append((merchant_id, key, buyer_id, plan.lines, window_s, slot, deadline,
                         key_id, campaign_id))
            from_carts.append(plan.from_cart)
            positions.append(i)
        placements = PlaceBatch.of(rows)
        self._stock_calls_inflight += 1
        try:
            answers = await self._place_measured(placements, from_carts) if rows else []
        finally:
            self._stock_calls_inflight -= 1
        now = clock.now_ms()
        for i, row, (code, value) in zip(positions, rows, answers, strict=True):
            results[i] = (code, value)
            if code is ResultCode.OK:
                cart_key = (row[0], row[2], row[8])
                self._save_cart(cart_key, self._state.carts.take_ordered(
                    cart_key, [(sku_id, quantity) for sku_id, quantity, _ in value.lines],
                    now), now)
        return PlaceResults(results)

    # --- housekeeping -------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        journal = self._journal
        return {"index": self.index, "instance": self._instance,
                "orders": len(self._state.book.orders),
                "releases_due": len(self._releases_due),
                "journal_depth": journal.depth if journal else 0,
                "commits": journal.commits if journal else 0,
                "committed_entries": journal.committed_entries if journal else 0,
                "commit_failing": journal.failing if journal else False,
                "commit_seconds": journal.commit_seconds if journal else 0.0,
                "carts": len(self._state.carts.carts),
                "campaigns": len(self._state.campaigns),
                "place_calls": self._place_calls, "place_seconds": self._place_seconds,
                "reserve_seconds": self._reserve_seconds}

    async def check_invariants(self) -> bool:
        await self._ready
        self._state.book.check_invariants()
        return True

    async def _sweep_once(self) -> None:
        if self._moving:
            return
        if self._journal is not None:
            metrics.record(metrics.depth(), self._journal.depth, queue="journal",
                           actor=f"order-{self.index}")
        metrics.record(metrics.carts(), len(self._state.carts.carts),
                       actor=f"order-{self.index}")
        now = clock.now_ms()
        calls = StockCalls()
        # Paced: expiries and idle carts take at most the journal's background share, so an
        # expiry storm never takes the room new orders need; the rest waits a round.
        budget = self._config.expiry_sweep_items_max
        if self._journal is not None:
            budget = min(budget, self._journal.room(self._config.journal_background_share))
        if self._releases_full():
            budget = 0  # a stock shard is unreachable: expire once releases drain
        shard_of = self._stock.shard_of
        expired = self._state.expire_due(now, budget, self._busy, calls, shard_of)
        self._gone(self._state.drop_idle_carts(now, budget - expired, calls, shard_of))
        self._journal_changes()
        if calls.freeing() or self._releases_due:
            await self._durable()  # expiries and dropped carts first, then their stock
        # Retries are picked after that wait: a handover meanwhile settles them instead.
        retries, self._releases_due = self._releases_due, []
        for due in retries:
            if due.generation == self._generation(due.shard):
                (calls.releases if due.kind == "release" else calls.returns)[due.shard].append(
                    due.item)
        if calls.freeing():
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
