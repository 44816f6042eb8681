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
import contextlib
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flashtx.actors import clock, metrics, tracing
from flashtx.actors.batch_journal import materialize_pending
from flashtx.actors.cart_desk import CartDesk
from flashtx.actors.loops import every, until_done
from flashtx.actors.order_journal import DATABASE_DOWN, OrderJournal
from flashtx.actors.persistence import (
    campaign_from_row,
    cart_from_row,
    open_store,
    restore_order,
)
from flashtx.actors.ports import MerchantPeer, StockPeer, find_peers
from flashtx.actors.stock_link import StockLink
from flashtx.adapters.postgres import DATABASE_ERRORS, Store
from flashtx.engine import order_snapshots
from flashtx.engine.campaigns import Campaign
from flashtx.engine.cart_plans import (
    CheckoutPlan,
    checkout_of,
)
from flashtx.engine.config import Config
from flashtx.engine.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    ResultCode,
    Unavailable,
    invariant,
)
from flashtx.engine.messages import (
    ActionBatch,
    CartBatch,
    CheckoutBatch,
    Handover,
    PlaceBatch,
)
from flashtx.engine.order_state import OrderState, StockCalls
from flashtx.engine.orders import (
    FINISHED,
    KEY_UNCHECKED,
    Order,
    OrderBook,
    OrderSnapshot,
    PlaceResults,
)
from flashtx.engine.placing import FromCart, Placing
from flashtx.engine.sharding import RoutingTable, slot_of

log = logging.getLogger(__name__)

PlaceResult = tuple[ResultCode, Any]  # (OK | REPLAYED, OrderSnapshot) or (code, reason)
RESHARDING = "stock is being resharded; retry with the same key"
STORE_UNAVAILABLE = "the database is unavailable; retry"


class OrderShard(clock.ClockControl):
    def __init__(self, index: int, config: Config, stock_table: RoutingTable,
                 order_table: RoutingTable) -> None:
        # Stock shards are found by name when it starts (no actor handle among the
        # constructor's arguments: Ray keeps those in the object store, where a lost
        # node can take them and, with them, this actor's restart).
        self.index = index
        self._instance = secrets.token_hex(4)  # changes when Ray restarts the actor
        self._config = config
        tracing.configure(config, f"order-{index}")
        self._state = OrderState.empty(config, secrets.token_hex(3))
        self._stock = StockLink(index, [], stock_table, config.slots_total,
                                config.releases_due_max)
        # Order tables are uniform (slot % shards): fulfilled units are summed per shard.
        invariant(order_table.shard_of_slot == RoutingTable.uniform(
            len(order_table.shard_of_slot), order_table.shards).shard_of_slot,
                  "order shards own slot % shards")
        self._journal = OrderJournal(config, f"order-{index}", order_table.shards,
                                     on_refused=self._refused, owner=index)
        self._owners = order_table.shards
        self._carts = CartDesk(self._state, self._stock, self._journal, config)
        self._slots = order_table.slots_of(index)
        self._waiting: dict[tuple[str, str], asyncio.Future[PlaceResult]] = {}
        self._busy: set[str] = set()  # orders with a stock call in flight
        self._returning: set[asyncio.Task[Any]] = set()  # sales of refused orders
        self._moving = False  # resharding: stock-changing work is refused meanwhile
        self._stock_calls_inflight = 0
        self._place_calls = 0
        self._place_seconds = 0.0  # from a batch's arrival to its answer
        self._reserve_seconds = 0.0  # waiting for stock shards
        self._store: Store | None = None
        # Snapshots (engine.order_snapshots): the orders generation this shard recovered
        # with, where its live orders came from, and its last snapshot.
        self._generation = 0
        self._recovery: dict[str, Any] = {"source": "none", "orders": 0, "replayed": 0}
        self._snapshot: dict[str, Any] = {"taken_at_ms": 0, "orders": 0, "bytes": 0,
                                          "seconds": 0.0, "written": 0}
        self._snapshot_changes = -1  # journaled changes at the last snapshot
        self._recovery_seconds: dict[str, float] = {}  # the last start, by step
        self._recovery_materialized = 0  # journal rows the last start materialized
        loop = asyncio.get_running_loop()
        self._ready = loop.create_task(self._start())
        self._sweeper = loop.create_task(every(
            config.expiry_sweep_interval_ms / 1000, self._sweep_once, "order expiry sweep",
            after=self._ready))
        self._snapshotter = loop.create_task(every(
            config.order_snapshot_interval_s, self._snapshot_step, "order snapshot",
            after=self._ready)) if config.order_snapshot_interval_s > 0 else None

    # --- start and recovery -------------------------------------------------------------------

    async def _start(self) -> None:
        started = time.perf_counter()
        table = self._stock.group.table
        self._stock.group.update(await find_peers([f"stock-{i}" for i in range(table.shards)]),
                                 table)
        self._store = await open_store(self._config, self._config.postgres_pool_size)
        steps = self._recovery_seconds = {"peers_and_pool": time.perf_counter() - started}
        if self._store is not None:
            # A read that fails (the database restarting too) is tried again, never left
            # as a shard that cannot serve.
            await until_done(self._recover, f"order shard {self.index} recovery")
        else:  # nothing durable: the merchant shards hold the campaigns
            await until_done(self._load_campaigns, f"order shard {self.index} campaigns")
        steps["load"] = time.perf_counter() - started - steps["peers_and_pool"]
        if self._moving:  # a reshard is under way: its rebuild takes this shard's state
            return
        await until_done(lambda: self._stock.push_state(self._state, self._journal.not_committed,
                                                        self._config.reservation_grace_ms),
                         f"order shard {self.index} recovery")
        steps["handover"] = time.perf_counter() - started - sum(steps.values())

    async def _recover(self) -> None:
        """Rebuilds memory from the database (from scratch on every try)."""
        store = self._store
        assert store is not None
        state = self._state = OrderState.empty(self._config, self._state.book.epoch)
        self._carts = CartDesk(state, self._stock, self._journal, self._config)
        stored = await store.stock_routing()
        if stored is not None and stored.version > self._stock.group.table.version:
            peers = await find_peers([f"stock-{i}" for i in range(stored.shards)])
            self._stock.group.update(peers, stored)  # resharded since this actor was made
        if stored is not None and not stored.settled:
            self._moving = True  # a reshard is under way: paused until it resumes us
        self._journal.open(store)
        incarnation = await store.next_incarnation(clock.now_ms())
        self._stock.reborn(incarnation)
        self._journal.reborn(incarnation)
        # Batches committed but not materialized by the incarnation before (or by a shard
        # of a layout a reshard left): into the tables before they are read.
        self._recovery_materialized = await materialize_pending(
            store, self._owners, self.index, self._config.materialize_rows_max)
        # Read before the orders: a snapshot this shard writes covers this generation.
        generation = await store.orders_generation()
        # The reads are independent: made at once (the pool has connections for them).
        campaigns, orders, sales, finished, carts = await asyncio.gather(
            store.load_campaigns(), self._live_orders(store),
            store.load_settled(self._owners, self.index),
            store.has_finished_orders(self._slots), store.load_carts(self._slots))
        self._generation = generation
        for row in campaigns:
            state.add_campaign(campaign_from_row(row))
        book = state.book
        book.evicting = True
        for order in orders:
            state.restore_order(order)
        # Finished orders stay in the database, their sales counted (settled_sales); a key
        # memory does not know is looked up there when it comes.
        for sale in sales:
            state.restore_settled(*sale)
        if finished:
            book.forgot = book.partial = True
        book.check_invariants()
        for row in carts:
            cart = cart_from_row(row)
            state.carts.restore(cart)
            merchant_id, buyer_id, campaign_id = cart.key
            state.count_units(merchant_id, campaign_id, buyer_id, cart.order_lines(), 1)
        log.info("order shard %d recovered %d orders (%s), %d carts", self.index,
                 len(orders), self._recovery["source"], len(carts))

    async def _live_orders(self, store: Store) -> list[Order]:
        """The live orders: from the shard's snapshot and the orders changed after it
        when there is a usable one, else from the ledger."""
        found = await store.load_order_snapshot(self._owners, self.index)
        if found is not None:
            row, generation_now, pruned_through = found
            why = order_snapshots.unusable(row["format"], row["generation"],
                                           generation_now, row["outbox_id"],
                                           pruned_through)
            try:
                if why:
                    raise order_snapshots.SnapshotUnusable(why)
                orders = order_snapshots.decode(row["body"], row["checksum"])
                changed, pruned_through = await store.orders_changed_after(
                    row["outbox_id"], self._slots)
                if pruned_through > row["outbox_id"]:  # pruned while it was read
                    raise order_snapshots.SnapshotUnusable(
                        "outbox rows after it were pruned while it was read")
                self._recovery = {"source": "snapshot", "orders": len(orders),
                                  "replayed": len(changed)}
                return order_snapshots.merge(orders, [restore_order(row_, lines)
                                                      for row_, lines in changed])
            except order_snapshots.SnapshotUnusable as error:
                log.warning("order shard %d: its snapshot is not used (%s); reading"
                            " the ledger", self.index, error)
        rows = await store.load_orders(self._slots)  # live orders only
        self._recovery = {"source": "ledger", "orders": len(rows), "replayed": 0}
        return [restore_order(row, lines) for row, lines in rows]

    async def snapshot_now(self) -> dict[str, Any]:
        """Writes a snapshot of the live orders now (an operator's, or a test's, call);
        answers what `stats()["snapshot"]` shows."""
        await self._ready
        while not await self._snapshot_once(force=True):
            await asyncio.sleep(0.01)  # a batch was between steps: once it is journaled
        return dict(self._snapshot)

    async def _snapshot_step(self) -> None:
        await self._snapshot_once()

    async def _snapshot_once(self, force: bool = False) -> bool:
        """Writes a snapshot of the live orders if they changed since the last one: the
        outbox position first, then the orders at one instant (every change after it has
        a larger outbox id), then, once every change before that instant is durable, the
        snapshot (it never holds a change that might not commit). Answers False when a
        change was not journaled yet at that instant, or when an order captured left
        without a trace before it was durable (the database refused its key): no snapshot,
        try again."""
        store, book, journal = self._store, self._state.book, self._journal
        journaled = journal.changes_journaled
        if store is None or not (force or order_snapshots.due(
                journaled != self._snapshot_changes, self._snapshot["taken_at_ms"],
                clock.now_ms(), self._config.outbox_retention_s)):
            return True
        started = time.perf_counter()
        position = await store.outbox_position()
        if book.changes:  # a change not journaled yet (a batch between steps): next time
            return False
        journaled, discarded = journal.changes_journaled, book.discarded
        captured = order_snapshots.capture(book.orders.values())
        taken_at_ms = clock.now_ms()
        if len(captured.orders) > self._config.order_snapshot_orders_max:
            log.warning("order shard %d holds %d live orders, over order_snapshot_orders_max:"
                        " no snapshot", self.index, len(captured.orders))
            return True
        await journal.durable()
        if book.discarded != discarded:  # it holds an order that never became durable
            return False
        body, checksum = order_snapshots.encode(captured)
        await store.save_order_snapshot(self._owners, self.index, (
            order_snapshots.FORMAT, self._generation, position, taken_at_ms,
            len(captured.orders), checksum, body))
        self._snapshot_changes = journaled
        self._snapshot = {"taken_at_ms": taken_at_ms, "orders": len(captured.orders),
                          "bytes": len(body), "seconds": time.perf_counter() - started,
                          "written": self._snapshot["written"] + 1}
        return True

    async def _load_campaigns(self) -> None:
        merchants: list[MerchantPeer] = await find_peers(
            [f"merchant-{i}" for i in range(self._config.merchant_shards)])
        for campaigns in await asyncio.gather(*(m.campaigns_of() for m in merchants)):
            for campaign in campaigns:
                self._state.add_campaign(campaign)

    async def stock_state_for(self, stock_shard: int) -> Handover:
        """Asked by a stock shard when it starts or recovers."""
        await self._ready
        return self._stock.handover(stock_shard, self._state, self._journal.not_committed,
                                    self._config.reservation_grace_ms)

    # --- resharding ---------------------------------------------------------------------------

    async def reroute_stock(self, peers: Sequence[StockPeer], table: RoutingTable) -> None:
        """Stops taking stock-changing work, lets what is in flight finish, then routes by
        the new table. Work refused meanwhile gets UNAVAILABLE."""
        await self._ready
        if table.version < self._stock.group.table.version:
            raise FailedPrecondition(f"stock table {table.version} is older than the one in"
                                     f" place ({self._stock.group.table.version})")
        self._moving = True
        while self._stock_calls_inflight:
            await asyncio.sleep(0.005)
        self._stock.reroute(peers, table)

    async def resume(self) -> None:
        """The reshard (or its rollback) is complete and its table saved as settled."""
        group = self._stock.group
        if not group.table.settled:
            group.table = dataclasses.replace(group.table, settled=True)
        self._moving = False

    async def save_stock_routing(self, table: RoutingTable) -> None:
        """Makes a new stock table durable (before anyone routes by it)."""
        await self._ready
        if self._store is not None:
            await self._store.save_stock_routing(table)

    async def stock_routing(self) -> RoutingTable:
        await self._ready
        return self._stock.group.table

    async def campaign_changed(self, campaign: Campaign) -> None:
        """A campaign was created or ended (told by its merchant shard)."""
        await self._ready
        self._state.add_campaign(campaign)

    # --- placing (hot path) -------------------------------------------------------------------

    async def place(self, batch: PlaceBatch) -> list[PlaceResult]:
        await self._ready  # a shard restarted during a reshard learns so while it recovers
        if self._moving:
            return [(ResultCode.UNAVAILABLE, RESHARDING)] * len(batch)
        with self._changing_stock(), tracing.span("order_shard.place", batch.trace,
                                                  shard=self.index, orders=len(batch)):
            return PlaceResults(await self._place_measured(batch))

    async def _place_measured(self, batch: PlaceBatch,
                              from_carts: Sequence[FromCart | None] = (),
                              looked_up: set[tuple[str, str]] | None = None
                              ) -> list[PlaceResult]:
        started = time.perf_counter()
        try:
            results = await self._place(batch, from_carts, looked_up)
        finally:
            self._place_calls += 1
            self._place_seconds += time.perf_counter() - started
        outcomes: dict[ResultCode, int] = {}
        for code, _ in results:
            outcomes[code] = outcomes.get(code, 0) + 1
        for code, count in outcomes.items():
            metrics.record(metrics.orders(), count, outcome=code.name)
        return results

    async def _place(self, batch: PlaceBatch, from_carts: Sequence[FromCart | None] = (),
                     looked_up: set[tuple[str, str]] | None = None) -> list[PlaceResult]:
        """`looked_up`: keys the caller asked the database about already (a checkout)."""
        await self._ready
        journal = self._journal
        refused_before = journal.refused_total  # orders refused at commit, ever
        recalled: dict[str, OrderSnapshot] = {}
        if looked_up is None and self._state.book.forgot:
            looked_up, recalled = await self._look_up_keys(batch.merchant_ids, batch.keys)
        placing = Placing(self._state, batch, clock.now_ms(), self.index, self._stock.shard_of,
                          self._config.reservation_grace_ms, from_carts, looked_up or ())
        attempts = placing.begin(journal.has_room(len(batch)), journal.full_refusal())
        waits = [(i, self._waiter(batch.merchant_ids[i], batch.keys[i]))
                 for i in placing.waits]
        results = placing.results
        commits: list[asyncio.Future[None] | None] = []
        while attempts:  # campaign orders refused by their bucket try the next one
            round_ = placing.round(attempts)
            if tracing.enabled():  # the stock shards' spans are this one's children
                for request in round_.batches.values():
                    request.trace = tracing.carrier()
            reserving = time.perf_counter()
            replies = await self._stock.reserve(round_.batches)
            self._reserve_seconds += time.perf_counter() - reserving
            attempts, abandons, done = placing.settle(attempts, round_, replies)
            if self._waiting:
                for i in done:
                    waiter = self._waiting.pop((batch.merchant_ids[i], batch.keys[i]), None)
                    if waiter is not None:
                        waiter.set_result(results[i])
            # A checkout's order and its emptied cart commit together: after a crash,
            # never an order whose cart still holds the same units.
            commits.append(journal.orders(self._state.book, [
                self._carts.take_ordered(batch, i, results[i][1]) for i in done
                if results[i][0] is ResultCode.OK] if from_carts else ()))
            if abandons:  # before the next try: it may go to the same shard
                await self._stock.send(StockCalls(abandons=abandons))
        if placing.leftover_holds:  # released by the sweeper once the orders are durable
            self._stock.queue(StockCalls(releases=placing.leftover_holds))
        for i, waiter in waits:  # concurrent retries of a key get the first one's answer
            code, value = await waiter
            results[i] = (ResultCode.REPLAYED if code is ResultCode.OK else code, value)
        if self._state.book.forgot:  # keys are looked up: some lookups may have failed
            for i, (_, value) in enumerate(results):
                if value == KEY_UNCHECKED:  # as a failing commit answers
                    results[i] = (ResultCode.UNAVAILABLE, DATABASE_DOWN)
        if placing.replays_left_memory:
            await self._read_back(results, recalled)
        # Waiting for a concurrent try of a key: its order may be in another commit.
        results = await journal.settle(results, None if waits else commits)
        if journal.refused_total != refused_before:  # a commit meanwhile refused orders
            journal.answer_refused(results)
        return results

    def _refused(self, order_ids: list[str]) -> None:
        """Orders a commit refused (another shard committed their idempotency key first)
        leave memory, their stock freed: released holds wait for the sweeper, sales
        (memory acks only) are returned at once."""
        calls = StockCalls()
        self._state.discard(order_ids, calls, self._stock.shard_of)
        self._stock.queue(calls)
        if calls.returns:
            returns = StockCalls(returns=calls.returns)
            task = asyncio.get_running_loop().create_task(self._stock.send(returns))
            self._returning.add(task)
            task.add_done_callback(self._returning.discard)

    async def _look_up_keys(self, merchant_ids: Sequence[str], keys: Sequence[str]
                            ) -> tuple[set[tuple[str, str]], dict[str, OrderSnapshot]]:
        """Keys this shard may have forgotten, asked of the database: (the keys asked
        about, the orders found for some of them, now retained). While the database does
        not answer, the keys wait for it (retried with backoff, like a commit) within the
        journal's room, which they hold meanwhile: a new order is taken during an outage
        as far as it would have been without forgotten keys, and acknowledged once the
        database is back. Keys beyond that room are not asked about (refused, "retry")."""
        book, store = self._state.book, self._store
        unknown = sorted({(m, k) for m, k in zip(merchant_ids, keys, strict=True)
                          if not book.knows(m, k)})
        committer = self._journal.committer
        if not unknown or store is None or committer is None:
            return set(), {}
        held = 0
        delay_s = 0.05
        try:
            while True:
                try:
                    found = await store.orders_by_keys([m for m, _ in unknown],
                                                       [k for _, k in unknown])
                    committer.database_answered()
                    break
                except DATABASE_ERRORS as error:
                    committer.database_failed(error)
                    if not held:
                        if not committer.hold(len(unknown)):
                            return set(), {}
                        held = len(unknown)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, self._config.commit_retry_delay_ms_max / 1000)
        finally:
            committer.release(held)  # room the orders now take in the journal themselves
        recalled: dict[str, OrderSnapshot] = {}
        for row, lines in found:
            order = restore_order(row, lines)
            if not book.knows(order.merchant_id, order.idempotency_key):
                book.retain(order.merchant_id, order.idempotency_key, order.order_id,
                            order.buyer_id, order.unpriced_lines, order.campaign_id,
                            order.created_at_ms)
            recalled[order.order_id] = order.snapshot()
        return set(unknown), recalled

    async def _read_back(self, results: list[Any], recalled: dict[str, OrderSnapshot]) -> None:
        """Replays of orders that left memory name the order id: their answer is read
        back from the database."""
        for i, (code, value) in enumerate(results):
            if code is not ResultCode.REPLAYED or not isinstance(value, str):
                continue
            snapshot = recalled.get(value)
            if snapshot is None and self._store is not None:
                try:
                    found = await self._store.load_order(value)
                except DATABASE_ERRORS as error:
                    log.warning("order shard %d: reading order %s failed: %r", self.index,
                                value, error)
                    found = None
                if found is not None:
                    snapshot = restore_order(*found).snapshot()
            results[i] = ((ResultCode.REPLAYED, snapshot) if snapshot is not None else
                          (ResultCode.UNAVAILABLE, STORE_UNAVAILABLE))

    def _waiter(self, merchant_id: str, key: str) -> asyncio.Future[PlaceResult]:
        waiter = self._waiting.get((merchant_id, key))
        if waiter is None:
            waiter = self._waiting[(merchant_id, key)] = asyncio.get_running_loop().create_future()
        return waiter

    # --- reads and transitions ----------------------------------------------------------------

    async def act(self, batch: ActionBatch) -> list[Any]:
        """A batch of get / list / pay / cancel / fulfil / refund; each answer is a
        snapshot, a (page, next offset) pair, or a DomainError."""
        await self._ready
        if self._moving and any(op not in ("get", "list") for op in batch.ops):
            return [Unavailable("stock is being resharded; retry")] * len(batch)
        with self._changing_stock():
            return await self._act(batch)

    async def _act(self, batch: ActionBatch) -> list[Any]:
        await self._ready
        results: list[Any] = [None] * len(batch)
        calls = StockCalls()
        payments: list[tuple[int, Order, str, Any]] = []
        now = clock.now_ms()
        act, shard_of, full = self._state.act, self._stock.shard_of, self._stock.full()
        stored = self._state.book.partial and self._store is not None
        from_store: list[tuple[int, str, str, str, Any, str]] = []
        for i, (op, merchant_id, target, argument, only_key) in enumerate(batch.rows()):
            answer: Any
            if stored and op == "list":  # finished orders are in the database alone
                from_store.append((i, op, merchant_id, target, argument, only_key))
                continue
            try:
                answer = act(op, merchant_id, target, argument, only_key, now, self._busy,
                             calls, shard_of, full)
            except NotFound as error:
                if stored:  # it may have left memory, finished
                    from_store.append((i, op, merchant_id, target, argument, only_key))
                answer = error
            except DomainError as error:
                answer = error
            if isinstance(answer, Order):
                payments.append((i, answer, op, argument))
            else:
                results[i] = answer
        if payments:
            await self._placed_durably(payments, calls, results)
        # Stock is committed first, then the state; released (cancel, refund) only after
        # the state that frees it is durable: a crash in between must not bring back an
        # order whose units were sold again.
        failed = await self._stock.send(StockCalls(commits=calls.commits))
        for i, order, op, reference in payments:
            self._busy.discard(order.order_id)
            try:
                if order.order_id in failed:
                    raise failed[order.order_id]
                results[i] = self._state.book.apply(order, op, clock.now_ms(),
                                                    reference or "")
            except DomainError as error:
                results[i] = error
        self._journal.orders(self._state.book)
        if calls.freeing():
            await self._journal.committed()
            await self._stock.send(StockCalls(releases=calls.releases, returns=calls.returns))
        for i, op, merchant_id, target, argument, only_key in from_store:
            results[i] = await self._from_store(op, merchant_id, target, argument, only_key)
        return await self._journal.settle(results)

    async def _placed_durably(self, payments: list[tuple[int, Order, str, Any]],
                              calls: StockCalls, results: list[Any]) -> None:
        """A payment of an order whose placement is not durable yet waits for it: the
        commit may refuse the order (its key was another shard's first), and then there
        is nothing to pay. Such payments answer NOT_FOUND and sell nothing."""
        not_committed = self._journal.not_committed
        pending = {not_committed[o.order_id] for _, o, _, _ in payments
                   if o.order_id in not_committed}
        if pending:
            await asyncio.gather(*(asyncio.shield(f) for f in pending))
        book = self._state.book
        for payment in list(payments):
            i, order = payment[0], payment[1]
            if book.orders.get(order.order_id) is order:
                continue
            payments.remove(payment)
            self._busy.discard(order.order_id)
            results[i] = NotFound(f"no order {order.order_id}", order_id=order.order_id)
            for order_ids in calls.commits.values():
                if order.order_id in order_ids:
                    order_ids.remove(order.order_id)

    async def _from_store(self, op: str, merchant_id: str, target: str, argument: Any,
                          only_key: str) -> Any:
        """A read, or a step asked of an order not in memory, answered from the database
        (finished orders leave memory). A buyer's list merges both."""
        store, book = self._store, self._state.book
        assert store is not None
        try:
            if op == "list":
                before, limit = argument
                memory, _ = book.list_for_buyer(merchant_id, target, before, limit + 1,
                                                only_key)
                slot = slot_of(merchant_id, target, self._config.slots_total)
                rows = await store.buyer_orders(slot, merchant_id, target, before, limit + 1,
                                                only_key)
                found = {o.order_id: o for o in (restore_order(*r).snapshot() for r in rows)}
                found.update((o.order_id, o) for o in memory)  # memory is newer
                merged = sorted(found.values(), key=lambda o: (o.created_at_ms, o.order_id),
                                reverse=True)
                page = merged[:limit]
                more = len(merged) > limit
                return page, ((page[-1].created_at_ms, page[-1].order_id) if more else None)
            loaded = await store.load_order(target)
        except DATABASE_ERRORS as error:
            log.warning("order shard %d: reading %s failed: %r", self.index, target, error)
            return Unavailable(STORE_UNAVAILABLE)
        try:
            if loaded is None:
                raise NotFound(f"no order {target}", order_id=target)
            order = restore_order(*loaded)
            if order.merchant_id != merchant_id or (only_key and order.key_id != only_key):
                # Another tenant's order is no order to this caller, live or not: the
                # same answer as an id never used (no existence oracle).
                raise NotFound(f"no order {target}", order_id=target)
            in_memory = book.orders.get(order.order_id)
            if in_memory is not None or order.status not in FINISHED:
                # placed meanwhile, or live and not (yet) here: the client retries
                raise Unavailable("the order is changing; retry", order_id=target)
            return OrderBook.answer_stored(order, merchant_id, op, only_key)
        except DomainError as error:
            return error

    # --- carts --------------------------------------------------------------------------------

    async def cart(self, batch: CartBatch) -> list[Any]:
        """A batch of cart operations; each answer is a CartSnapshot or a DomainError."""
        await self._ready
        if self._moving and any(op != "get" for op in batch.ops):
            return [Unavailable("stock is being resharded; retry")] * len(batch)
        with self._changing_stock():
            return await self._carts.cart(batch, clock.now_ms())

    async def checkout(self, batch: CheckoutBatch) -> list[PlaceResult]:
        """Carts become orders through the placing path (which empties each cart of what
        its order took, in the same commit). A key that placed an order answers it
        (REPLAYED) even once the cart is empty."""
        await self._ready
        if self._moving:
            return [(ResultCode.UNAVAILABLE, RESHARDING)] * len(batch)
        results: list[Any] = [None] * len(batch)
        rows: list[tuple[Any, ...]] = []
        from_carts: list[FromCart | None] = []
        positions: list[int] = []
        book = self._state.book
        looked_up: set[tuple[str, str]] = set()
        recalled: dict[str, OrderSnapshot] = {}
        asked = list(batch.rows())
        if book.forgot:
            looked_up, recalled = await self._look_up_keys([r[0] for r in asked],
                                                           [r[3] for r in asked])
        stored: list[tuple[int, str, str]] = []  # replays of orders that left memory
        for i, (merchant_id, buyer_id, campaign_id, key, window_s, slot, deadline,
                key_id, currency) in enumerate(asked):
            stored_id = book.retained_order(merchant_id, key)
            if stored_id is not None:
                results[i] = (ResultCode.REPLAYED, stored_id)
                stored.append((i, buyer_id, campaign_id))
                continue
            if book.forgot and (merchant_id, key) not in looked_up and not book.knows(
                    merchant_id, key):
                results[i] = (ResultCode.UNAVAILABLE, KEY_UNCHECKED)
                continue
            plan = checkout_of(self._state, merchant_id, buyer_id, campaign_id, key,
                               self._carts.busy, self._stock.shard_of)
            if not isinstance(plan, CheckoutPlan):
                results[i] = plan
                continue
            rows.append((merchant_id, key, buyer_id, plan.lines, window_s, slot, deadline,
                         key_id, campaign_id, currency))
            from_carts.append(plan.from_cart)
            positions.append(i)
        with self._changing_stock():
            answers = (await self._place_measured(PlaceBatch.of(rows), from_carts,
                                                  looked_up) if rows else [])
        for i, answer in zip(positions, answers, strict=True):
            results[i] = answer
        if stored:
            await self._read_back(results, recalled)
            for i, buyer_id, campaign_id in stored:
                order = results[i][1]
                if isinstance(order, OrderSnapshot) and (
                        order.buyer_id, order.campaign_id) != (buyer_id, campaign_id):
                    results[i] = (ResultCode.IDEMPOTENCY_CONFLICT,
                                  "idempotency key was used with a different order")
        return PlaceResults(results)

    # --- housekeeping -------------------------------------------------------------------------

    async def database_failing_s(self) -> float | None:
        """How long the database has been failing this shard's commits (None: it
        answers): what a gateway whose queue to this shard grows old tells its callers."""
        committer = self._journal.committer
        return None if committer is None else committer.failing_for_s()

    async def stats(self) -> dict[str, Any]:
        committer = self._journal.committer
        return {"index": self.index, "instance": self._instance, "pid": os.getpid(),
                "orders": len(self._state.book.orders), "releases_due": len(self._stock.due),
                "orders_evicted": self._state.book.evicted,
                "keys_retained": self._state.book.retained_keys,
                "keys_looked_up": self._state.book.forgot,  # new keys are asked of Postgres
                "journal_depth": committer.depth + committer.held if committer else 0,
                "commits": committer.commits if committer else 0,
                "committed_entries": committer.committed_entries if committer else 0,
                "commit_failing": committer.failing if committer else False,
                "orders_refused_at_commit": self._journal.refused_total,
                "stock_routing": {"version": self._stock.group.table.version,
                                  "shards": self._stock.group.table.shards,
                                  "settled": self._stock.group.table.settled},
                "commit_seconds": committer.commit_seconds if committer else 0.0,
                **self._journal.materializer_stats(),
                "recovery_materialized": self._recovery_materialized,
                "carts": len(self._state.carts.carts),
                # Entries of the expiry heaps (deadlines, retained keys, idle carts):
                # bounded by about twice the live items, whatever churns.
                "expiry_entries": (self._state.book.expiry_entries
                                   + self._state.carts.expiry_entries),
                "campaigns": len(self._state.campaigns),
                "place_calls": self._place_calls, "place_seconds": self._place_seconds,
                "reserve_seconds": self._reserve_seconds,
                "recovered_from": self._recovery["source"],
                "recovered_orders": self._recovery["orders"],
                "recovered_replayed": self._recovery["replayed"],
                "recovery_seconds": {step: round(seconds, 3) for step, seconds
                                     in self._recovery_seconds.items()},
                "snapshot": dict(self._snapshot)}

    async def live_orders(self, merchant_id: str) -> list[tuple[Any, ...]]:
        """A merchant's live orders in memory with their state (as OrderSnapshot fields),
        and the campaign units counted for its buyers: what recovery rebuilds, to
        compare."""
        await self._ready
        state = self._state
        orders = sorted(tuple(order.snapshot()) for order in state.book.orders.values()
                        if order.status not in FINISHED and order.merchant_id == merchant_id)
        units = sorted(item for item in state.units.units.items() if item[0][0] == merchant_id)
        return [*orders, ("units", tuple(units))]

    async def spans(self) -> list[dict[str, Any]]:
        """Spans this process kept (trace_exporter = "memory")."""
        return tracing.finished_spans()

    async def check_invariants(self) -> bool:
        await self._ready
        self._state.book.check_invariants()
        return True

    @contextlib.contextmanager
    def _changing_stock(self) -> Iterator[None]:
        """Work that calls stock shards: a reroute waits until none is in flight."""
        self._stock_calls_inflight += 1
        try:
            yield
        finally:
            self._stock_calls_inflight -= 1

    def _evict(self, now: int) -> None:
        """Finished orders leave memory once durable and lingered; keys older than the
        idempotency window are forgotten (the database answers for them)."""
        config = self._config
        window_start = now - config.idempotency_window_s * 1000
        self._state.evict(now - int(config.finished_order_linger_s * 1000), window_start,
                          self._journal.not_materialized, config.expiry_sweep_items_max)
        book = self._state.book
        book.forget_keys(window_start, max(0, config.idempotency_keys_per_shard_max
                                           - len(book.orders)))

    async def _sweep_once(self) -> None:
        if self._moving:
            return
        with self._changing_stock():
            await self._sweep()

    async def _sweep(self) -> None:
        name, committer = f"order-{self.index}", self._journal.committer
        if committer is not None:
            metrics.record(metrics.depth(), committer.depth, queue="journal", actor=name)
        materializer = self._journal.materializer
        if materializer is not None:
            metrics.record(metrics.depth(), materializer.lag_batches, queue="materialize",
                           actor=name)
            metrics.record(metrics.lag_seconds(), materializer.lag_s(),
                           what=f"materialize:{name}")
        metrics.record(metrics.carts(), len(self._state.carts.carts), actor=name)
        now = clock.now_ms()
        calls = StockCalls()
        # Paced: expiries and idle carts take at most the journal's background share, so an
        # expiry storm never takes the room new orders need; the rest waits a round.
        budget = self._config.expiry_sweep_items_max
        room = self._journal.room(self._config.journal_background_share)
        if room is not None:
            budget = min(budget, room)
        if self._stock.full():
            budget = 0  # a stock shard is unreachable: expire once releases drain
        shard_of = self._stock.shard_of
        expired = self._state.expire_due(now, budget, self._busy, calls, shard_of)
        self._journal.carts_gone(self._state.drop_idle_carts(now, budget - expired, calls,
                                                             shard_of))
        self._journal.orders(self._state.book)
        if self._state.book.evicting:
            self._evict(now)
        covered = list(self._stock.due)  # queued before the wait: durable after it
        if calls.freeing() or covered:
            await self._journal.committed()  # expiries and dropped carts first, then stock
        # Retries are picked after that wait: a handover meanwhile settles them instead.
        self._stock.take_due(calls, covered)
        if calls.freeing():
            await self._stock.send(calls)


__all__ = ["OrderShard"]
