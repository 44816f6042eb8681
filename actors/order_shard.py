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
from typing import Any, NamedTuple

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
from actors.routing import ShardGroup, find_actors
from adapters.postgres import Store
from engine import errors
from engine.campaigns import BuyerUnits, Campaign, not_found
from engine.carts import Cart, CartBook, CartKey, CartSnapshot, hold_id
from engine.config import Config
from engine.errors import (
    DomainError,
    InvalidArgument,
    InvalidTransition,
    Overloaded,
    ResultCode,
    Unavailable,
    invariant,
)
from engine.orders import (
    Order,
    OrderBook,
    OrderSnapshot,
    OrderStatus,
    PlaceResults,
    StockAction,
)
from engine.sharding import RoutingTable, slot_of

log = logging.getLogger(__name__)

# (merchant_id, idempotency_key, buyer_id, lines, payment_window_s, slot, deadline_ms,
#  key_id, campaign_id). deadline_ms: the client's deadline (0: none); an order not begun
# by then is not placed. key_id: the API key placing it. campaign_id: "" or the campaign.
Placement = tuple[str, str, str, tuple[tuple[str, int], ...], int, int, int, str, str]
# A checkout's extra: (stock key per line for the first try, cart holds it takes over as
# {stock shard: [hold ids]}).
FromCart = tuple[tuple[str, ...], dict[int, list[str]]]
# (op, merchant_id, buyer_id, campaign_id, sku_id, quantity, hold_s): op is add | set |
# remove | get | clear; hold_s: the merchant's cart hold policy (0: reserve at checkout).
CartOp = tuple[str, str, str, str, str, int, int]
# (merchant_id, buyer_id, campaign_id, idempotency_key, payment_window_s, slot,
#  deadline_ms, key_id)
Checkout = tuple[str, str, str, str, int, int, int, str]
PlaceResult = tuple[ResultCode, Any]  # (OK | REPLAYED, OrderSnapshot) or (code, message)
# (op, merchant_id, order_id or buyer_id, argument, only_key): only_key set for a channel
# key, which sees only the orders it placed.
Action = tuple[str, str, str, Any, str]


class OrderShard(clock.ClockControl):
    def __init__(self, index: int, config: Config, stock_handles: Sequence[Any],
                 stock_table: RoutingTable, order_table: RoutingTable) -> None:
        self.index = index
        self._instance = secrets.token_hex(4)  # changes when Ray restarts the actor
        self._config = config
        self._book = OrderBook(secrets.token_hex(3), config.orders_per_shard_max,
                               config.idempotency_keys_per_shard_max)
        self._stock = ShardGroup(stock_handles, stock_table, config.slots_total, by_sku=True)
        self._slots = order_table.slots_of(index)
        self._waiting: dict[tuple[str, str], asyncio.Future[PlaceResult]] = {}
        self._not_durable: dict[str, asyncio.Future[None]] = {}
        self._busy: set[str] = set()  # orders with a stock call in flight
        self._moving = False  # resharding: stock-changing work is refused meanwhile
        self._stock_calls_inflight = 0
        self._place_calls = 0
        self._place_seconds = 0.0  # from a batch's arrival to its answer
        self._reserve_seconds = 0.0  # waiting for stock shards
        # Stock calls to retry: (method, stock shard, item, handover generation). When a
        # stock shard takes this shard's state over (it restarted), the state it gets
        # already says what those calls would have done: they are dropped, not repeated.
        self._releases_due: list[tuple[str, int, Any, tuple[int, int]]] = []
        self._handovers: dict[int, int] = {}  # stock shard -> generation
        self._born_ms = clock.now_ms()  # generations of a later incarnation are greater
        self._campaigns: dict[tuple[str, str], Campaign] = {}
        self._units = BuyerUnits()  # campaign units per buyer: orders and carts
        self._carts = CartBook(config.cart_idle_s * 1000, config.cart_lines_max,
                               config.carts_per_shard_max)
        self._carts_busy: set[tuple[CartKey, str]] = set()  # lines with a stock call out
        self._store: Store | None = None
        self._journal: GroupCommitter | None = None
        self._ready = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(every(
            config.expiry_sweep_interval_ms / 1000, self._sweep_once, "order expiry sweep",
            after=self._ready))

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
        self._book = OrderBook(self._book.epoch, self._config.orders_per_shard_max,
                               self._config.idempotency_keys_per_shard_max)
        self._campaigns.clear()
        self._units = BuyerUnits()
        self._carts = CartBook(self._config.cart_idle_s * 1000, self._config.cart_lines_max,
                               self._config.carts_per_shard_max)
        stored = await store.stock_routing()
        if stored is not None and stored.version > self._stock.table.version:
            handles = await find_actors([f"stock-{i}" for i in range(stored.shards)])
            self._stock.update(handles, stored)  # resharded since this actor was made
        self._journal = self._journal or GroupCommitter(
            lambda entries, retry: commit_order_entries(store, entries, retry),
            batch_max=self._config.commit_orders_max,
            delay_s=self._config.commit_delay_ms_max / 1000,
            entries_max=self._config.journal_entries_max,
            retry_delay_s_max=self._config.commit_retry_delay_ms_max / 1000,
            name=f"order-{self.index}")
        for row in await store.load_campaigns():
            campaign = campaign_from_row(row)
            self._campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign
        rows = await self._store.load_orders(self._slots)
        for row, lines in rows:
            order = restore_order(row, lines)
            self._book.restore(order)
            if order.campaign_id and order.live:
                self._count_units(order.merchant_id, order.campaign_id, order.buyer_id,
                                  order.unpriced_lines, 1)
        self._book.check_invariants()
        carts = await store.load_carts(self._slots)
        for row in carts:
            cart = cart_from_row(row)
            self._carts.restore(cart)
            merchant_id, buyer_id, campaign_id = cart.key
            self._count_units(merchant_id, campaign_id, buyer_id, cart.order_lines(), 1)
        log.info("order shard %d recovered %d orders, %d carts", self.index, len(rows),
                 len(carts))

    async def _load_campaigns(self) -> None:
        merchants = await find_actors([f"merchant-{i}"
                                       for i in range(self._config.merchant_shards)])
        for campaigns in await asyncio.gather(*(m.campaigns_of.remote() for m in merchants)):
            for campaign in campaigns:
                self._campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign

    async def _push_stock_state(self) -> None:
        """Every stock shard learns the holds and sales this shard owns there (and drops
        any others it had from this shard: orders that never committed)."""
        await asyncio.gather(*(self._stock.call(shard, "replace_owned", self.index,
                                                *self._handover(shard))
                               for shard in range(len(self._stock.handles))))

    def _stock_state(self, stock_shard: int) -> tuple[list[Any], list[Any]]:
        """(holds, sales) of this shard's orders on one stock shard."""
        grace_ms = self._config.reservation_grace_ms
        holds: list[Any] = []
        sold: list[Any] = []
        now = clock.now_ms()
        for cart in self._carts.carts.values():
            merchant_id, buyer_id, _ = cart.key
            for line in cart.lines.values():
                if line.held(now) and self._stock.shard_of(merchant_id,
                                                           line.stock_key) == stock_shard:
                    holds.append((hold_id(cart.key, line.sku_id), merchant_id, buyer_id,
                                  ((line.stock_key, line.quantity),), line.held_until_ms))
        for order in self._book.orders.values():
            status = order.status
            if status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                if order.order_id not in self._not_durable:
                    continue
                # Its stock is freed only once that is durable (the release follows the
                # commit): until then it still holds, or is still sold (a refund).
                status = OrderStatus.PAID if order.refunded else OrderStatus.RESERVED
            part = self._parts(order.merchant_id, order.stock_lines).get(stock_shard)
            if not part:
                continue
            if status == OrderStatus.RESERVED:
                holds.append((order.order_id, order.merchant_id, order.buyer_id, tuple(part),
                              order.payment_deadline_ms + grace_ms))
            else:
                sold.extend((order.merchant_id, sku_id, order.buyer_id, quantity)
                            for sku_id, quantity in part)
        return holds, sold

    async def stock_state_for(self, stock_shard: int) -> tuple[list[Any], list[Any],
                                                                  tuple[int, int]]:
        """Asked by a stock shard when it starts or recovers."""
        await self._ready
        return self._handover(stock_shard)

    def _handover(self, stock_shard: int) -> tuple[list[Any], list[Any], tuple[int, int]]:
        """This shard's holds and sales on one stock shard, and the new generation: calls
        sent before it are stale there, and queued retries to it are dropped."""
        self._handovers[stock_shard] = self._handovers.get(stock_shard, 0) + 1
        self._releases_due = [due for due in self._releases_due if due[1] != stock_shard]
        return (*self._stock_state(stock_shard), self._generation(stock_shard))

    def _generation(self, stock_shard: int) -> tuple[int, int]:
        return (self._born_ms, self._handovers.get(stock_shard, 0))

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
            return PlaceResults(await self._place_measured(items))
        finally:
            self._stock_calls_inflight -= 1

    async def _place_measured(self, items: Sequence[Placement],
                              from_carts: Sequence[FromCart | None] = ()) -> list[PlaceResult]:
        started = time.perf_counter()
        try:
            results = await self._place(items, from_carts)
        finally:
            self._place_calls += 1
            self._place_seconds += time.perf_counter() - started
        outcomes: dict[str, int] = {}
        for code, _ in results:
            outcomes[code.name] = outcomes.get(code.name, 0) + 1
        for outcome, count in outcomes.items():
            metrics.record(metrics.orders(), count, outcome=outcome)
        return results

    async def _place(self, items: Sequence[Placement],
                     from_carts: Sequence[FromCart | None] = ()) -> list[PlaceResult]:
        await self._ready
        now = clock.now_ms()
        results: list[Any] = [None] * len(items)
        new: list[_Attempt] = []
        waits: list[tuple[int, asyncio.Future[PlaceResult]]] = []
        room = self._journal is None or self._journal.has_room(len(items))
        for i, item in enumerate(items):
            merchant_id, key, buyer_id, lines, window_s, slot, deadline, _, campaign_id = item
            if deadline and now >= deadline:
                results[i] = (ResultCode.UNAVAILABLE, "the call's deadline passed before the"
                              " order was placed; nothing was applied")
                continue
            begin = self._book.begin(merchant_id, key, buyer_id, lines, slot, campaign_id)
            if begin.code is ResultCode.OK and not room:
                self._book.abandon(merchant_id, key)
                try:  # an order refused anyway is told why, not that the shard is busy
                    if campaign_id:
                        self._campaign(merchant_id, campaign_id).check_open(now)
                    results[i] = (ResultCode.OVERLOADED, self._journal_full_message())
                except DomainError as error:
                    results[i] = (error.code, error)
            elif begin.code is ResultCode.OK:
                from_cart = from_carts[i] if from_carts else None
                try:
                    attempt = self._first_attempt(i, begin.order_id, item, now, from_cart)
                except DomainError as error:  # travels whole: its reason names the cause
                    self._book.abandon(merchant_id, key)
                    results[i] = (error.code, error)
                    continue
                new.append(attempt)
            elif begin.code is ResultCode.REPLAYED:
                results[i] = (ResultCode.REPLAYED, begin.order)
            elif begin.code is ResultCode.UNAVAILABLE:
                waits.append((i, self._waiter(merchant_id, key)))
            else:
                results[i] = (begin.code, begin.message)
        while new:  # campaign orders refused by their bucket try the next one
            new = await self._reserve_attempts(items, new, results, now)
        for i, waiter in waits:  # concurrent retries of a key get the first one's answer
            code, value = await waiter
            results[i] = (ResultCode.REPLAYED if code is ResultCode.OK else code, value)
        return await self._settle(results)

    def _first_attempt(self, i: int, order_id: str, item: Placement, now: int,
                       from_cart: FromCart | None) -> _Attempt:
        """Checks a new order against its campaign (window, SKUs, per-buyer limits: the
        units count from here on) and picks the stock counters of its first try."""
        merchant_id, _, buyer_id, lines, window_s, _, _, _, campaign_id = item
        deadline_ms = now + window_s * 1000
        if not campaign_id:
            return _Attempt(i, order_id, lines, deadline_ms, 0, None,
                            from_cart[1] if from_cart else {})
        campaign = self._campaign(merchant_id, campaign_id)
        campaign.check_open(now)
        limited = campaign.limits(lines)
        stock_lines = campaign.stock_lines(buyer_id, lines, 0)
        holds: dict[int, list[str]] = {}
        if from_cart is not None:  # a cart's units are counted already
            keys, holds = from_cart
            stock_lines = tuple((key or default[0], quantity) for key, default, (_, quantity)
                                in zip(keys, stock_lines, lines, strict=True))
        elif limited:
            self._units.take(merchant_id, campaign_id, buyer_id, limited)
        return _Attempt(i, order_id, stock_lines, deadline_ms, 0, campaign, holds,
                        counted=bool(limited) and from_cart is None)

    async def _reserve_attempts(self, items: Sequence[Placement], attempts: list[_Attempt],
                                results: list[Any], now: int) -> list[_Attempt]:
        """One reserve call per stock shard for these attempts; completes the orders whose
        lines were all held, releases partial holds, and returns the attempts to make
        next (campaign orders refused for stock, on their next bucket)."""
        requests: dict[int, list[Any]] = defaultdict(list)
        # Cart holds to take over, aligned with `requests` (only checkouts have any).
        replacing: dict[int, list[list[str]]] | None = (
            defaultdict(list) if any(a.holds for a in attempts) else None)
        grace_ms = self._config.reservation_grace_ms
        index, shard_of = self.index, self._stock.shard_of
        # Per attempt: (stock shard, position in its request) for each of its parts.
        placed_at: list[tuple[tuple[int, int], ...]] = []
        for attempt in attempts:
            merchant_id, _, buyer_id = items[attempt.index][:3]
            stock_lines = attempt.stock_lines
            if len(stock_lines) == 1 and replacing is None:  # most orders: one request
                shard = shard_of(merchant_id, stock_lines[0][0])
                request = requests[shard]
                placed_at.append(((shard, len(request)),))
                request.append((attempt.order_id, merchant_id, buyer_id, stock_lines,
                                attempt.deadline_ms + grace_ms, index))
                continue
            where = []
            for shard, part in self._parts(merchant_id, stock_lines).items():
                where.append((shard, len(requests[shard])))
                requests[shard].append((attempt.order_id, merchant_id, buyer_id, tuple(part),
                                        attempt.deadline_ms + grace_ms, index))
                if replacing is not None:
                    replacing[shard].append(attempt.holds.get(shard, []))
            placed_at.append(tuple(where))
        reserving = time.perf_counter()
        replies = await self._reserve(requests, replacing)
        self._reserve_seconds += time.perf_counter() - reserving
        releases: dict[tuple[str, int], list[Any]] = defaultdict(list)
        again: list[_Attempt] = []
        waiting = self._waiting
        for attempt, where in zip(attempts, placed_at, strict=True):
            i, order_id = attempt.index, attempt.order_id
            merchant_id, key, buyer_id, lines, _, _, _, key_id, campaign_id = items[i]
            shards = [shard for shard, _ in where]
            answers = [replies[shard][position] for shard, position in where]
            failed = next((a for a in answers if a[0] is not ResultCode.OK), None)
            if failed is None:
                prices = self._prices(merchant_id, attempt.stock_lines, shards, answers)
                stock_keys = (tuple(k for k, _ in attempt.stock_lines)
                              if attempt.campaign is not None else ())
                results[i] = (ResultCode.OK, self._book.complete(
                    order_id, merchant_id, key, buyer_id, lines, prices, now,
                    attempt.deadline_ms, key_id, campaign_id, stock_keys))
            else:
                for shard, answer in zip(shards, answers, strict=True):
                    if answer[0] is ResultCode.OK or answer[0] is ResultCode.UNAVAILABLE:
                        releases[("release", shard)].append(order_id)
                campaign = attempt.campaign
                uncertain = attempt.uncertain or failed[0] in _BUCKET_UNSURE
                if campaign is not None and failed[0] in _NEXT_BUCKET and (
                        attempt.number + 1 < campaign.buckets):
                    again.append(attempt._replace(
                        number=attempt.number + 1, holds={}, uncertain=uncertain,
                        stock_lines=campaign.stock_lines(buyer_id, lines, attempt.number + 1)))
                    continue
                self._book.abandon(merchant_id, key)
                if attempt.counted:
                    self._units.give_back(merchant_id, campaign_id, buyer_id, lines)
                if campaign is not None and uncertain:
                    # Some bucket could not answer: "sold out" might be false. Retry.
                    failed = (ResultCode.UNAVAILABLE, "a campaign stock bucket is unavailable;"
                              " retry with the same key")
                results[i] = failed
            if waiting:
                waiter = waiting.pop((merchant_id, key), None)
                if waiter is not None:
                    waiter.set_result(results[i])
        self._journal_changes()
        if releases:  # before the next try: it may go to the same shard
            await self._stock_calls(releases)
        return again

    def _campaign(self, merchant_id: str, campaign_id: str) -> Campaign:
        campaign = self._campaigns.get((merchant_id, campaign_id))
        if campaign is None:
            raise not_found(campaign_id)
        return campaign

    async def campaign_changed(self, campaign: Campaign) -> None:
        """A campaign was created or ended (told by its merchant shard)."""
        await self._ready
        self._campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign

    def _count_units(self, merchant_id: str, campaign_id: str, buyer_id: str,
                     lines: Sequence[tuple[str, int]], sign: int) -> None:
        """Adds (sign 1) or gives back (-1) a buyer's units of limited campaign SKUs."""
        campaign = self._campaigns.get((merchant_id, campaign_id)) if campaign_id else None
        if campaign is None:
            return
        limited = [(sku_id, quantity) for sku_id, quantity in lines
                   if sku_id in campaign.skus and campaign.skus[sku_id].per_buyer_limit]
        if sign > 0:
            self._units.add(merchant_id, campaign_id, buyer_id, limited)
        else:
            self._units.give_back(merchant_id, campaign_id, buyer_id, limited)

    def _parts(self, merchant_id: str,
               lines: Sequence[tuple[str, int]]) -> dict[int, list[tuple[str, int]]]:
        parts: dict[int, list[tuple[str, int]]] = defaultdict(list)
        shard_of = self._stock.shard_of
        for line in lines:
            parts[shard_of(merchant_id, line[0])].append(line)
        return parts

    async def _reserve(self, requests: dict[int, list[Any]],
                       replacing: dict[int, list[list[str]]] | None
                       ) -> dict[int, list[Any]]:
        """One call per stock shard; returns {shard: [(code, prices|message)]}, aligned
        with that shard's requests."""
        shards = list(requests)
        for shard in shards:
            metrics.record(metrics.batch_items(), len(requests[shard]), hop="order_to_stock")
        answers = await asyncio.gather(
            *(self._stock.call(shard, "reserve", requests[shard],
                               replacing[shard] if replacing else ())
              for shard in shards),
            return_exceptions=True)
        replies: dict[int, list[Any]] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock shard %d failed: %r", shard, answer)
                answer = [(ResultCode.UNAVAILABLE, "stock shard unavailable; retry")] * len(
                    requests[shard])
            invariant(len(answer) == len(requests[shard]), "one answer per reserve request")
            replies[shard] = answer
        return replies

    def _prices(self, merchant_id: str, lines: tuple[tuple[str, int], ...], shards: list[int],
                answers: list[Any]) -> list[int]:
        """Unit prices in line order (`lines` as the stock shards know them)."""
        if len(shards) == 1:
            return list(answers[0][1])
        by_key: dict[str, int] = {}
        parts = self._parts(merchant_id, lines)
        for shard, (_, prices) in zip(shards, answers, strict=True):
            by_key.update((key, price) for (key, _), price in zip(parts[shard], prices,
                                                                   strict=True))
        return [by_key[key] for key, _ in lines]

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
        orders = self._book.orders
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
        # Stock is committed first, then the state; released (cancel, refund) only after
        # the state that frees it is durable: a crash in between must not bring back an
        # order whose units were sold again.
        releases = {k: v for k, v in stock_calls.items() if k[0] != "commit"}
        failed = await self._stock_calls(
            {k: v for k, v in stock_calls.items() if k[0] == "commit"})
        for i, order, op in commits:
            self._busy.discard(order.order_id)
            try:
                if order.order_id in failed:
                    raise failed[order.order_id]
                results[i] = self._book.apply(order, op, clock.now_ms())
            except DomainError as error:
                results[i] = error
        self._journal_changes()
        if releases:
            await self._durable()
            await self._stock_calls(releases)
        return await self._settle(results)

    async def _durable(self) -> None:
        """Waits until every change journaled so far is committed."""
        if self._journal is not None:
            await asyncio.shield(self._journal.durable())

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
        parts = self._parts(order.merchant_id, order.stock_lines)
        if action is not StockAction.COMMIT:
            self._check_releases_room()
        if action is StockAction.COMMIT:  # stock first, then the state
            self._busy.add(order.order_id)
            commits.append((position, order, op))
            for shard in parts:
                stock_calls[("commit", shard)].append(order.order_id)
            return None
        snapshot = self._book.apply(order, op, now)  # state first, then the stock
        if order.campaign_id and not order.live:
            self._count_units(merchant_id, order.campaign_id, order.buyer_id,
                              order.unpriced_lines, -1)
        for shard, part in parts.items():
            if action is StockAction.RELEASE:
                stock_calls[("release", shard)].append(order.order_id)
            elif action is StockAction.RETURN:
                stock_calls[("return_sold", shard)].append(
                    (order.order_id, order.merchant_id, order.buyer_id, tuple(part),
                     self.index))
        return snapshot

    def _check_releases_room(self) -> None:
        """Stock-freeing work waits while too many releases wait for an unreachable shard."""
        if len(self._releases_due) >= self._config.releases_due_max:
            raise Unavailable("a stock shard is unreachable and stock releases are waiting;"
                              " retry")

    async def _stock_calls(self, calls: dict[tuple[str, int], list[Any]]) -> dict[str, Any]:
        """Commits, releases and returns on stock shards; returns {order_id: error} of failed
        commits. Failed releases and returns are queued and retried by the sweeper."""
        keys = list(calls)
        handovers = {shard: self._generation(shard) for _, shard in keys}  # as they leave
        answers = await asyncio.gather(*(
            self._stock.call(shard, method, calls[(method, shard)], *(
                () if method == "commit" else (self.index, handovers[shard])
                if method == "release" else (handovers[shard],)))
            for method, shard in keys), return_exceptions=True)
        failed: dict[str, Any] = {}
        for (method, shard), answer in zip(keys, answers, strict=True):
            items = calls[(method, shard)]
            if isinstance(answer, BaseException):
                if method == "commit":
                    failed.update((o, Unavailable("stock shard unavailable; retry"))
                                  for o in items)
                else:
                    generation = handovers.get(shard, 0)
                    self._releases_due.extend((method, shard, item, generation)
                                              for item in items)
                continue
            if method == "commit":
                for order_id, (code, message) in zip(items, answer, strict=True):
                    if code is not ResultCode.OK:
                        failed[order_id] = InvalidTransition(message, order_id=order_id)
        return failed

    # --- carts ------------------------------------------------------------------------------

    async def cart(self, items: Sequence[CartOp]) -> list[Any]:
        """A batch of cart operations; each answer is a CartSnapshot or a DomainError."""
        await self._ready
        now = clock.now_ms()
        results: list[Any] = [None] * len(items)
        pending: list[_CartHold] = []
        room = self._journal is None or self._journal.has_room(len(items))
        for i, (op, merchant_id, buyer_id, campaign_id, sku_id, quantity, hold_s) in (
                enumerate(items)):
            key = (merchant_id, buyer_id, campaign_id)
            try:
                if op == "get":
                    cart = self._carts.get(key)
                    results[i] = (cart.snapshot(now) if cart is not None
                                  else self._carts.empty(key, now))
                    continue
                if not room:
                    raise Overloaded(self._journal_full_message(),
                                     self._config.overload_retry_after_ms)
                if op == "clear":
                    results[i] = self._clear_cart(key, now)
                    continue
                change = self._cart_change(op, key, sku_id, quantity, hold_s, now)
                if isinstance(change, _CartHold):
                    pending.append(change._replace(index=i))
                else:
                    results[i] = change
            except DomainError as error:
                results[i] = error
        freeing = [change for change in pending if change.hold_quantity < change.old]
        if freeing:
            await self._free_cart_holds(freeing, results, now)
        pending = [change for change in pending if change.hold_quantity >= change.old]
        while pending:
            pending = await self._hold_cart_lines(pending, results, now)
        return results

    async def _free_cart_holds(self, changes: list[_CartHold], results: list[Any],
                               now: int) -> None:
        """Lines that hold fewer units after the change (smaller, removed, or no longer
        held): the cart's new state is committed first, then the holds shrink. A crash in
        between must not bring back a cart whose units were sold again (the same order as
        a cancel: commit, then release). A shrink that fails leaves the stock shard
        holding too much until the hold expires or the shard takes this one's state over:
        undersold for a while, never oversold."""
        calls: dict[int, list[Any]] = defaultdict(list)
        for change in changes:
            results[change.index] = self._apply_cart_change(change, now)
            calls[self._stock.shard_of(change.key[0], change.stock_key)].append(
                self._hold_request(change))
        try:
            await self._durable()
            answers = await asyncio.gather(*(self._stock.call(shard, "hold", items)
                                             for shard, items in calls.items()),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    log.warning("shrinking cart holds failed: %r", answer)
        finally:
            for change in changes:
                self._carts_busy.discard((change.key, change.sku_id))

    def _cart_change(self, op: str, key: CartKey, sku_id: str, quantity: int, hold_s: int,
                     now: int) -> CartSnapshot | _CartHold:
        """Applies an add / set / remove that needs no stock call, or says which hold to
        take or resize first (the line is busy until then)."""
        merchant_id, buyer_id, campaign_id = key
        if (key, sku_id) in self._carts_busy:
            raise Unavailable("this cart line is changing; retry", sku_id=sku_id)
        campaign = None
        if campaign_id:
            campaign = self._campaign(merchant_id, campaign_id)
            campaign.check_cart(now)
            campaign.sku(sku_id)
        old = self._carts.quantity(key, sku_id)
        new = old + quantity if op == "add" else quantity if op == "set" else 0
        if new > self._config.quantity_per_line_max:
            raise InvalidArgument("quantity", f"a line holds at most "
                                  f"{self._config.quantity_per_line_max} units")
        if new:
            self._carts.check_room(key, sku_id)
        if campaign is not None and new > old:
            self._units.take(merchant_id, campaign_id, buyer_id,
                             campaign.limits([(sku_id, new - old)]))
        cart = self._carts.get(key)
        line = cart.lines.get(sku_id) if cart is not None else None
        holding = hold_s > 0 and new > 0 and (campaign is None or (
            campaign.starts_at_ms <= now < campaign.ends_at_ms and not campaign.ended))
        if holding or (line is not None and line.stock_key):
            stock_key = line.stock_key if line is not None and line.stock_key else (
                campaign.stock_lines(buyer_id, [(sku_id, new)], 0)[0][0] if campaign
                else sku_id)
            self._carts_busy.add((key, sku_id))
            return _CartHold(0, key, sku_id, old, new if holding else 0, stock_key,
                             now + hold_s * 1000 if holding else 0, campaign, 0)
        if campaign is not None and new < old:
            self._count_units(merchant_id, campaign_id, buyer_id, [(sku_id, old - new)], -1)
        return self._save_cart(key, self._carts.set_line(key, sku_id, new, now), now)

    async def _hold_cart_lines(self, pending: list[_CartHold], results: list[Any],
                               now: int) -> list[_CartHold]:
        """Takes, resizes or releases the stock holds of cart lines (one call per stock
        shard), then changes the lines; a new campaign hold refused for stock tries the
        buyer's next bucket."""
        calls: dict[int, list[Any]] = defaultdict(list)
        for change in pending:
            calls[self._stock.shard_of(change.key[0], change.stock_key)].append(
                self._hold_request(change))
        shards = list(calls)
        answers = await asyncio.gather(*(self._stock.call(shard, "hold", calls[shard])
                                         for shard in shards), return_exceptions=True)
        replies: dict[tuple[int, str], Any] = {}
        for shard, answer in zip(shards, answers, strict=True):
            for request, reply in zip(calls[shard], answer if not isinstance(
                    answer, BaseException) else [(ResultCode.UNAVAILABLE, "stock shard"
                                                  " unavailable; retry")] * len(calls[shard]),
                                      strict=True):
                replies[(shard, request[0])] = reply
        again: list[_CartHold] = []
        for change in pending:
            merchant_id, buyer_id, campaign_id = change.key
            shard = self._stock.shard_of(merchant_id, change.stock_key)
            code, value = replies[(shard, hold_id(change.key, change.sku_id))]
            campaign = change.campaign
            if code is ResultCode.OK:
                self._carts_busy.discard((change.key, change.sku_id))
                results[change.index] = self._apply_cart_change(change, now)
                continue
            first_try = code is ResultCode.OUT_OF_STOCK and campaign is not None and (
                change.old == 0 and change.attempt + 1 < campaign.buckets)
            if first_try and campaign is not None:
                next_key = campaign.stock_lines(buyer_id, [(change.sku_id, change.new)],
                                                change.attempt + 1)[0][0]
                again.append(change._replace(stock_key=next_key, attempt=change.attempt + 1))
                continue
            self._carts_busy.discard((change.key, change.sku_id))
            if campaign is not None and change.new > change.old:
                self._count_units(merchant_id, campaign_id, buyer_id,
                                  [(change.sku_id, change.new - change.old)], -1)
            results[change.index] = errors.error_for(code, str(value))
        return again

    def _hold_request(self, change: _CartHold) -> tuple[Any, ...]:
        """The stock shard's `hold` item that takes, resizes or releases a line's hold."""
        merchant_id, buyer_id, _ = change.key
        return (hold_id(change.key, change.sku_id), merchant_id, buyer_id, change.stock_key,
                change.hold_quantity, change.held_until_ms, self.index)

    def _apply_cart_change(self, change: _CartHold, now: int) -> CartSnapshot:
        """Sets a line to its new quantity and hold, gives back units a smaller line no
        longer counts, and journals the cart."""
        merchant_id, buyer_id, campaign_id = change.key
        if change.new < change.old:
            self._count_units(merchant_id, campaign_id, buyer_id,
                              [(change.sku_id, change.old - change.new)], -1)
        held = change.hold_quantity > 0
        cart = self._carts.set_line(change.key, change.sku_id, change.new, now,
                                    change.stock_key if held else "",
                                    change.held_until_ms if held else 0)
        return self._save_cart(change.key, cart, now)

    def _save_cart(self, key: CartKey, cart: Cart | None, now: int) -> CartSnapshot:
        """Journals the cart (written behind: the answer does not wait) and answers it."""
        if self._journal is not None:
            slot = slot_of(key[0], key[1], self._config.slots_total)
            self._journal.append([cart_entry(key, cart if cart and cart.lines else None, slot)])
        if cart is None or not cart.lines:
            if cart is not None:
                self._carts.remove(key)
            return self._carts.empty(key, now)
        return cart.snapshot(now)

    def _clear_cart(self, key: CartKey, now: int) -> CartSnapshot:
        cart = self._carts.get(key)
        if cart is not None:
            if any((key, sku_id) in self._carts_busy for sku_id in cart.lines):
                raise Unavailable("this cart is changing; retry")
            self._check_releases_room()
            self._carts.remove(key)
            calls: dict[tuple[str, int], list[Any]] = defaultdict(list)
            self._cart_gone(cart, calls)  # journals it gone; its holds return (sweeper)
            self._releases_due.extend((method, shard, item, self._generation(shard))
                                      for (method, shard), items in calls.items()
                                      for item in items)
        return self._carts.empty(key, now)

    def _cart_gone(self, cart: Cart, calls: dict[tuple[str, int], list[Any]]) -> None:
        """A cart dropped (cleared or idle): its holds return, its units no longer count."""
        merchant_id, buyer_id, campaign_id = cart.key
        self._count_units(merchant_id, campaign_id, buyer_id, cart.order_lines(), -1)
        for line in cart.lines.values():
            if line.stock_key:
                calls[("release", self._stock.shard_of(merchant_id, line.stock_key))].append(
                    hold_id(cart.key, line.sku_id))
        if self._journal is not None:
            self._journal.append([cart_entry(cart.key, None, 0)])

    async def checkout(self, items: Sequence[Checkout]) -> list[PlaceResult]:
        """Carts become orders through the placing path. A key that placed an order
        answers it (REPLAYED) even once the cart is empty; a cart is emptied of what its
        order took only when the order exists (durable, in durable mode)."""
        if self._moving:
            return [(ResultCode.UNAVAILABLE, "stock is being resharded; retry with the same"
                     " key")] * len(items)
        await self._ready
        results: list[Any] = [None] * len(items)
        placements: list[Placement] = []
        from_carts: list[FromCart | None] = []
        positions: list[int] = []
        for i, (merchant_id, buyer_id, campaign_id, key, window_s, slot, deadline,
                key_id) in enumerate(items):
            order = self._book.find(merchant_id, key)
            if order is not None:
                results[i] = ((ResultCode.REPLAYED, order.snapshot())
                              if (order.buyer_id, order.campaign_id) == (buyer_id, campaign_id)
                              else (ResultCode.IDEMPOTENCY_CONFLICT,
                                    "idempotency key was used with a different order"))
                continue
            cart_key = (merchant_id, buyer_id, campaign_id)
            cart = self._carts.get(cart_key)
            if cart is None or not cart.lines:
                results[i] = (ResultCode.FAILED_PRECONDITION, "the cart is empty")
                continue
            if any((cart_key, sku_id) in self._carts_busy for sku_id in cart.lines):
                results[i] = (ResultCode.UNAVAILABLE, "the cart is changing; retry")
                continue
            lines = cart.order_lines()
            holds: dict[int, list[str]] = defaultdict(list)
            for line in cart.lines.values():
                if line.stock_key:
                    holds[self._stock.shard_of(merchant_id, line.stock_key)].append(
                        hold_id(cart_key, line.sku_id))
            keys = tuple(cart.lines[sku_id].stock_key for sku_id, _ in lines)
            placements.append((merchant_id, key, buyer_id, lines, window_s, slot, deadline,
                               key_id, campaign_id))
            from_carts.append((keys, dict(holds)))
            positions.append(i)
        self._stock_calls_inflight += 1
        try:
            answers = await self._place_measured(placements, from_carts) if placements else []
        finally:
            self._stock_calls_inflight -= 1
        now = clock.now_ms()
        for i, placement, (code, value) in zip(positions, placements, answers, strict=True):
            results[i] = (code, value)
            if code is ResultCode.OK:
                cart_key = (placement[0], placement[2], placement[8])
                self._save_cart(cart_key, self._carts.take_ordered(
                    cart_key, [(sku_id, quantity) for sku_id, quantity, _ in value.lines],
                    now), now)
        return PlaceResults(results)

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
                "carts": len(self._carts.carts), "campaigns": len(self._campaigns),
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
        metrics.record(metrics.carts(), len(self._carts.carts), actor=f"order-{self.index}")
        now = clock.now_ms()
        calls: dict[tuple[str, int], list[Any]] = defaultdict(list)
        # Paced: expiries and idle carts take at most the journal's background share, so an
        # expiry storm never takes the room new orders need; the rest waits a round.
        budget = self._config.expiry_sweep_items_max
        if self._journal is not None:
            budget = min(budget, self._journal.room(self._config.journal_background_share))
        if len(self._releases_due) >= self._config.releases_due_max:
            budget = 0  # a stock shard is unreachable: expire once releases drain
        expired = 0
        for order in self._book.due_for_expiry(now, budget):
            if order.order_id in self._busy:
                self._book.remind(order)  # being paid right now; look again later
                continue
            self._book.apply(order, "expire", now)
            expired += 1
            self._count_units(order.merchant_id, order.campaign_id, order.buyer_id,
                              order.unpriced_lines, -1)
            for shard in self._parts(order.merchant_id, order.stock_lines):
                calls[("release", shard)].append(order.order_id)
        for cart in self._carts.idle(now, budget - expired):
            self._cart_gone(cart, calls)
        self._journal_changes()
        if calls or self._releases_due:
            await self._durable()  # expiries and dropped carts first, then their stock
        # Retries are picked after that wait: a handover meanwhile settles them instead.
        retries, self._releases_due = self._releases_due, []
        for method, shard, item, generation in retries:
            if generation == self._generation(shard):
                calls[(method, shard)].append(item)
        if calls:
            await self._stock_calls(calls)


class _CartHold(NamedTuple):
    """A cart line change waiting for its stock hold."""

    index: int
    key: CartKey
    sku_id: str
    old: int
    new: int
    stock_key: str
    held_until_ms: int
    campaign: Campaign | None
    attempt: int

    @property
    def hold_quantity(self) -> int:
        return self.new if self.held_until_ms else 0


class _Attempt(NamedTuple):
    """One try at holding a new order's stock."""

    index: int  # in the batch
    order_id: str
    stock_lines: tuple[tuple[str, int], ...]  # (SKU or campaign bucket, quantity)
    deadline_ms: int
    number: int  # 0: the buyer's own bucket; then the next ones
    campaign: Campaign | None
    holds: dict[int, list[str]]  # cart holds it takes over, per stock shard
    counted: bool = False  # its campaign units were counted for the per-buyer limit
    uncertain: bool = False  # a bucket tried so far could not answer


# A campaign order refused by one bucket for these reasons tries the next bucket; when a
# bucket was unavailable or missing (its shard restarting), the final answer is
# UNAVAILABLE, never a sell-out that may be false.
_NEXT_BUCKET = frozenset({ResultCode.OUT_OF_STOCK, ResultCode.UNAVAILABLE,
                          ResultCode.NOT_FOUND})
_BUCKET_UNSURE = frozenset({ResultCode.UNAVAILABLE, ResultCode.NOT_FOUND})


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
