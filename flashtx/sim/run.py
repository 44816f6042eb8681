"""One simulated run: two stock shards and two order shards (the real classes) under
buyers who place, pay and cancel with idempotent retries, an operator who adjusts and
sets stock with retries, shards that crash, calls that get lost, and a database that
fails, loses answers and lags. After every step the run is checked against what the
database says happened (an independent account, not the shards' memory):

- no oversell: units in live orders never exceed a SKU's on-hand;
- every acknowledged order is durable when it is acknowledged, with one order per key;
- per-buyer limits hold;
- a stock shard's memory never counts more on-hand than the database holds;
- once faults stop and every deadline and grace time has passed, no unit is held by an
  order that does not hold it, and every sale is counted.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flashtx.actors.merchant_shard import MerchantShard
from flashtx.actors.order_shard import OrderShard
from flashtx.actors.resharding import ReshardFailed, reshard_stock, spread
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.carts import CartSnapshot
from flashtx.engine.config import Config, load_config
from flashtx.engine.errors import DomainError, ResultCode
from flashtx.engine.messages import (
    ActionBatch,
    CampaignSkus,
    CartBatch,
    CheckoutBatch,
    PlaceBatch,
    SkuBatch,
)
from flashtx.engine.orders import OrderStatus, order_slot
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.sim import vtime
from flashtx.sim.world import Faults, Lost, SimPeer, World, installed

MERCHANT = "sim-shop"
RETRYABLE = (ResultCode.UNAVAILABLE, ResultCode.OVERLOADED)
DONE = object()  # a final refusal
RESHARD_SHARE = 0.3  # of runs that reshard the stock shards once
CAMPAIGN_SHARE = 0.4  # of runs with a flash-sale campaign (buckets on the stock shards)
CART_HOLD_S = 2  # cart lines hold their stock this long (shorter than the settle wait)
CLOCK_STEP_SHARE = 0.3  # of runs whose shards' clock steps forward, then back


@dataclass
class Outcome:
    seed: int
    steps: int
    failures: list[str]
    acked: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    writes: int = 0
    virtual_s: float = 0.0
    reshards: dict[str, int] = field(default_factory=dict)
    clock_steps: int = 0
    shared_keys: bool = False  # buyers shared idempotency keys in this run
    host_skew_ms: int = 0  # hosts' clocks differed by up to this much in this run

    @property
    def ok(self) -> bool:
        return not self.failures


def sim_config(**changes: Any) -> Config:
    return load_config(environ={}, **{
        "stock_shards": 2, "order_shards": 2, "slots_total": 64, "postgres_dsn": "sim",
        "redis_url": "none", "expiry_sweep_interval_ms": 50, "journal_entries_max": 300,
        "commit_orders_max": 40, "commit_delay_ms_max": 2.0, "reservation_grace_ms": 1_000,
        "commit_retry_delay_ms_max": 200,
        # Finished orders leave memory soon, and keys leave the window within a run: reads,
        # replays and recoveries go to the database for them.
        "finished_order_linger_s": 0.1, "idempotency_window_s": 1,
        # Snapshots often: most recoveries start from one and replay what came after.
        "order_snapshot_interval_s": 0.2, **changes})


class Run:
    def __init__(self, seed: int, steps: int, faults: Faults) -> None:
        self.world = World(seed, faults)
        self.rng = self.world.rng
        keys = random.Random(f"shared-keys-{seed}")
        self.shared_keys = keys if keys.random() < faults.shared_key_runs else None
        self.shared_key_orders = faults.shared_key_orders
        self.steps = steps
        self.config = sim_config()
        self.faults_on = faults
        self.stock_table = RoutingTable.uniform(self.config.slots_total, 2)
        self.order_table = RoutingTable.uniform(self.config.slots_total, 2)
        self.skus: dict[str, int] = {}  # sku_id -> per-buyer limit (0: none)
        # campaign_id -> {sku_id: per-buyer limit (0: none)}, as asked for at creation
        self.campaigns: dict[str, dict[str, int]] = {}
        self.acked: dict[str, str] = {}  # idempotency key -> order id
        self.refused: dict[str, int] = defaultdict(int)
        self.counter = itertools.count()
        self.add_ids = itertools.count()  # request ids of cart adds (retried: applied once)
        self.done_steps = 0
        self.resharding = False
        self.reshards: dict[str, int] = defaultdict(int)
        self.clock_steps = 0
        self.clock_step_ms_max = 0
        self._seen: set[str] = set()
        self.placed: dict[int, list[tuple[str, tuple[tuple[str, int], ...], str]]] = {}

    # --- wiring -------------------------------------------------------------------------------

    def build(self) -> None:
        config, world = self.config, self.world
        order_names = [f"order-{i}" for i in range(2)]
        for i in range(2):
            world.add(f"stock-{i}", functools.partial(
                StockShard, i, config, self.stock_table.slots_of(i), order_names))
        for i in range(2):
            world.add(f"order-{i}", functools.partial(
                OrderShard, i, config, self.stock_table, self.order_table))
        world.add("merchant-0", functools.partial(
            MerchantShard, 0, config, range(config.slots_total), order_names))

    async def until_answered(self, name: str | Callable[[], str], method: str,
                             *args: Any) -> Any:
        """Calls until an answer that is not "retry": a client with idempotent retries.
        `name` may be a function: the actor is looked up again on every try (a stock
        shard, as routing says now)."""
        delay_s = 0.01
        for _ in range(200):
            try:
                target = name() if callable(name) else name
                answer = await getattr(SimPeer(target), method)(*args)
            except Lost:
                answer = None
            except DomainError as error:
                if error.code not in RETRYABLE:
                    return error
                answer = None
            except Exception:  # anything else reaches a client as UNAVAILABLE / INTERNAL
                answer = None
            if answer is not None and not _retry(answer):
                return answer
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.5)
        self.fail(f"{name}.{method}{args!r}: no answer after 200 tries")
        return DONE

    def fail(self, what: str) -> None:
        """Records a failure once (the first time it is seen)."""
        if what not in self._seen:
            self._seen.add(what)
            self.world.failures.append(f"t={asyncio.get_running_loop().time():.3f}s {what}")

    # --- workload -------------------------------------------------------------------------------

    async def setup(self) -> None:
        created = await self.until_answered("merchant-0", "create", MERCHANT, "sim shop", 0)
        if isinstance(created, DomainError) or created is DONE:
            self.fail(f"creating the merchant: {created!r}")
        for n in range(self.rng.randint(1, 3)):
            sku_id, limit = f"s{n}", self.rng.choice((0, 0, 2))
            self.skus[sku_id] = limit
            shard = self.stock_table.shard_of_slot[slot_of(MERCHANT, sku_id, 64)]
            answer = await self.until_answered(f"stock-{shard}", "upsert", SkuBatch.of([(
                MERCHANT, sku_id, sku_id, 100, self.rng.randint(2, 12), limit)]))
            if not isinstance(answer, list) or isinstance(answer[0], DomainError):
                self.fail(f"setting up {sku_id}: {answer!r}")

    async def buyer(self, buyer: int) -> None:
        while self.done_steps < self.steps:
            self.done_steps += 1
            n = next(self.counter)
            campaign_id = ""
            offer = sorted(self.skus)
            if self.campaigns and self.rng.random() < 0.5:  # a campaign order
                campaign_id = self.rng.choice(sorted(self.campaigns))
                offer = sorted(self.campaigns[campaign_id])
            chosen = self.rng.sample(offer, self.rng.randint(1, len(offer)))
            lines = tuple(sorted((sku_id, self.rng.randint(1, 2)) for sku_id in chosen))
            key = f"key-{buyer}-{n}"
            if self.shared_keys and self.shared_keys.random() < self.shared_key_orders:
                # A key shared by buyers (one caller's keys for all its buyers, or a key
                # reused): buyers on other order shards race for it; one order per key.
                key = f"shared-{self.shared_keys.randint(0, 9)}"
            if self.rng.random() < 0.3:  # through a cart whose lines hold stock
                order_id = await self.shop(key, f"buyer-{buyer}", lines, campaign_id)
            else:
                order_id = await self.place(key, f"buyer-{buyer}", lines, campaign_id)
            if order_id is not None:
                roll = self.rng.random()
                if roll < 0.35:
                    await self.act("pay", order_id)
                    after = self.rng.random()
                    if after < 0.3:
                        await self.act("cancel", order_id)  # a refund
                    elif after < 0.7:
                        await self.act("fulfil", order_id)
                elif roll < 0.6:
                    await self.act("cancel", order_id)
            placed = self.placed.setdefault(buyer, [])
            if self.rng.random() < 0.15 and placed:  # a late retry: its order may be gone
                key, lines, campaign_id = self.rng.choice(placed)
                await self.place(key, f"buyer-{buyer}", lines, campaign_id)
            if self.rng.random() < 0.15:
                await self.reread()
            await asyncio.sleep(self.rng.randint(0, 50) / 1000)

    async def reread(self) -> None:
        """Reads back a finished order (it may have left memory): answered, as durable."""
        store = self.world.store
        finished = sorted(order_id for order_id in self.acked.values()
                          if store.orders[order_id].get("finished_at_ms") is not None)
        if not finished:
            return
        order_id = self.rng.choice(finished)
        shard = self.order_table.shard_of_slot[order_slot(order_id)]
        answer = await self.until_answered(f"order-{shard}", "act", ActionBatch.of(
            [("get", MERCHANT, order_id, None, "")]))
        if answer is DONE:
            return
        [found] = answer
        if isinstance(found, DomainError):
            if found.code not in RETRYABLE:
                self.fail(f"reading finished order {order_id}: {found!r}")
        elif found.status != store.status(order_id):
            self.fail(f"order {order_id} read as {found.status}, the database says"
                      f" {store.status(order_id)}")

    async def place(self, key: str, buyer_id: str, lines: tuple[tuple[str, int], ...],
                    campaign_id: str = "") -> str | None:
        slot = slot_of(MERCHANT, buyer_id, self.config.slots_total)
        shard = self.order_table.shard_of_slot[slot]
        window_s = self.rng.randint(1, 3)
        placement = (MERCHANT, key, buyer_id, lines, window_s, slot, 0, "key", campaign_id,
                     "USD")
        answer = await self.until_answered(f"order-{shard}", "place", PlaceBatch.of([placement]))
        self.placed.setdefault(int(buyer_id.split("-")[1]), []).append(
            (key, lines, campaign_id))
        return self.acknowledged(key, answer)

    def acknowledged(self, key: str, answer: Any) -> str | None:
        """Checks an order's acknowledgement: one order per key, durable when answered."""
        if answer is DONE or isinstance(answer, DomainError):
            return None
        [(code, value)] = answer
        if code not in (ResultCode.OK, ResultCode.REPLAYED):
            self.refused[code.name] += 1
            return None
        order_id: str = value.order_id
        if self.acked.setdefault(key, order_id) != order_id:
            self.fail(f"key {key}: two orders, {self.acked[key]} and {order_id}")
        if order_id not in self.world.store.orders:
            self.fail(f"order {order_id} ({key}) acknowledged but not durable")
        return order_id

    async def shop(self, key: str, buyer_id: str, lines: tuple[tuple[str, int], ...],
                   campaign_id: str = "") -> str | None:
        """Fills a cart (each line holds its stock), changes a line, then checks out, or
        clears the cart and leaves."""
        for sku_id, quantity in lines:
            await self.cart(buyer_id, "add", sku_id, quantity, campaign_id)
        if self.rng.random() < 0.4:  # a smaller line, or none: units go back
            sku_id, quantity = self.rng.choice(lines)
            await self.cart(buyer_id, "set", sku_id, self.rng.randint(0, quantity - 1),
                            campaign_id)
        if self.rng.random() < 0.15:
            await self.cart(buyer_id, "clear", "", 0, campaign_id)
            return None
        cart = await self.cart(buyer_id, "get", "", 0, campaign_id)
        if not (isinstance(cart, list) and isinstance(cart[0], CartSnapshot) and cart[0].lines):
            return None  # every line was refused or removed: nothing to check out
        slot = slot_of(MERCHANT, buyer_id, self.config.slots_total)
        shard = self.order_table.shard_of_slot[slot]
        answer = await self.until_answered(f"order-{shard}", "checkout", CheckoutBatch.of(
            [(MERCHANT, buyer_id, campaign_id, key, self.rng.randint(1, 3), slot, 0, "key",
              "USD")]))
        return self.acknowledged(key, answer)

    async def cart(self, buyer_id: str, op: str, sku_id: str, quantity: int,
                   campaign_id: str = "") -> Any:
        shard = self.order_table.shard_of_slot[slot_of(MERCHANT, buyer_id,
                                                       self.config.slots_total)]
        request_id = f"add-{next(self.add_ids)}" if op == "add" else ""
        return await self.until_answered(f"order-{shard}", "cart", CartBatch.of(
            [(op, MERCHANT, buyer_id, campaign_id, sku_id, quantity, CART_HOLD_S,
              request_id)]))

    async def act(self, op: str, order_id: str) -> None:
        shard = self.order_table.shard_of_slot[order_slot(order_id)]
        reference = f"pay-{order_id}" if op == "pay" else ""  # retried: the same one
        await self.until_answered(f"order-{shard}", "act",
                                  ActionBatch.of([(op, MERCHANT, order_id, reference, "")]))

    async def operator(self) -> None:
        n = 0
        while self.done_steps < self.steps:
            await asyncio.sleep(self.rng.randint(50, 400) / 1000)
            n += 1
            sku_id = self.rng.choice(sorted(self.skus))
            shard = functools.partial(self.stock_shard_of, sku_id)
            if self.rng.random() < 0.5:
                delta = self.rng.choice((-2, -1, 1, 2, 3))
                await self.until_answered(shard, "adjust", MERCHANT, sku_id, delta, "sim",
                                          f"adjust-{n}")
            else:
                on_hand = self.world.store.on_hand(MERCHANT, sku_id) + self.rng.randint(-2, 3)
                await self.until_answered(shard, "upsert", SkuBatch.of([(
                    MERCHANT, sku_id, sku_id, 100, max(0, on_hand), self.skus[sku_id])]))

    async def campaigner(self) -> None:
        """In some runs: a flash-sale campaign over some SKUs (their units move into
        buckets spread over the stock shards, and back when it ends), created while
        buyers buy and shards crash; sometimes ended early."""
        if self.rng.random() >= CAMPAIGN_SHARE:
            return
        await asyncio.sleep(self.rng.randint(0, 800) / 1000)
        chosen = self.rng.sample(sorted(self.skus), self.rng.randint(1, len(self.skus)))
        limits = {sku_id: self.rng.choice((0, 1, 2)) for sku_id in chosen}
        campaign_id = "c1"
        restock = {sku_id: self.rng.randint(2, 8) for sku_id in chosen}
        for sku_id, units in restock.items():  # stock for the sale (buyers may take it)
            await self.until_answered(functools.partial(self.stock_shard_of, sku_id),
                                      "adjust", MERCHANT, sku_id, units, "sim",
                                      f"restock-{sku_id}")
        now_ms = 1_800_000_000_000 + int(asyncio.get_running_loop().time() * 1000)
        ends_at_ms = now_ms + self.rng.randint(1000, 4000)
        skus = CampaignSkus.of((sku_id, 50, self.rng.choice((0, restock[sku_id] // 2)),
                                limit) for sku_id, limit in limits.items())
        self.campaigns[campaign_id] = limits  # buyers may try it from now on
        answer = await self.until_answered("merchant-0", "create_campaign", MERCHANT,
                                           campaign_id, "sale", now_ms, ends_at_ms,
                                           self.rng.randint(1, 3), skus)
        if isinstance(answer, DomainError):
            self.refused[f"campaign {answer.code.name}"] += 1
        if self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.randint(100, 1000) / 1000)
            await self.until_answered("merchant-0", "end_campaign", MERCHANT, campaign_id)

    async def clock_stepper(self) -> None:
        """In some runs the shards' clock steps forward (past some or every deadline and
        grace time), then back, as a host's clock set right by NTP: holds the stock shards
        freed at their expiry, and units a campaign's end returned, belong to orders that
        look within their deadline again."""
        if self.rng.random() >= CLOCK_STEP_SHARE:
            return
        await asyncio.sleep(self.rng.randint(100, 1500) / 1000)
        step_ms = self.config.reservation_grace_ms + self.rng.randint(500, 5000)
        self.clock_step_ms_max = max(self.clock_step_ms_max, step_ms)
        self.clock_steps += 1
        self.world.step_clock(step_ms)
        await asyncio.sleep(self.rng.randint(10, 600) / 1000)
        self.world.step_clock(0)

    def stock_shard_of(self, sku_id: str) -> str:
        return f"stock-{self.stock_table.shard_of_slot[slot_of(MERCHANT, sku_id, 64)]}"

    async def resharder(self) -> None:
        """Once in some runs: more stock shards, while buyers buy and shards crash. Some
        reshards are made to fail (a step tried once), so they roll back."""
        if self.rng.random() >= RESHARD_SHARE:
            return
        await asyncio.sleep(self.rng.randint(50, 1500) / 1000)
        old, old_names = self.stock_table, self.stock_names()
        table = spread(old, len(old_names) + self.rng.randint(1, 2))
        tries = 1 if self.rng.random() < 0.3 else 5
        order_names = [f"order-{i}" for i in range(2)]
        added = []
        for i in range(len(old_names), table.shards):
            added.append(self.world.add(f"stock-{i}", functools.partial(
                StockShard, i, self.config, table.slots_of(i), order_names)))
        self.resharding = True
        try:
            self.stock_table = await reshard_stock(
                [SimPeer(name) for name in order_names], [SimPeer(n) for n in old_names],
                added, old, table, tries=tries)
            self.reshards["done"] += 1
        except ReshardFailed as failed:
            self.stock_table = failed.table
            self.reshards["rolled back"] += 1
        except Exception as error:  # the rollback failed too: paused, never unsafe
            self.reshards["left paused"] += 1
            self.fail(f"reshard and its rollback failed: {error!r}")
        finally:
            self.resharding = False

    def stock_names(self) -> list[str]:
        return [f"stock-{i}" for i in range(self.stock_table.shards)]

    async def crasher(self) -> None:
        low, high = self.world.faults.crash_every_ms
        if low >= Faults.none().crash_every_ms[0]:
            return  # no crashes in this run
        while self.done_steps < self.steps:
            await asyncio.sleep(self.rng.randint(low, high) / 1000)
            self.world.crash(self.rng.choice(sorted(self.world.actors)))

    async def checker(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self.check()

    # --- invariants ------------------------------------------------------------------------------

    def live_units(self) -> tuple[dict[str, int], dict[tuple[str, str], int],
                                  dict[tuple[str, str, str], int]]:
        """Units of orders that hold stock, as the database says (paid or fulfilled, or
        reserved and not yet past deadline + grace): by stock counter (a SKU or a campaign
        bucket), by (buyer, counter), and by (buyer, campaign, SKU) for campaign orders.
        Deadlines are read against the latest time the shards' clock has shown: once an
        order's deadline and grace time have passed, its hold may have been freed, and a
        clock stepped back does not give the units back to it."""
        store = self.world.store
        self.world.now_ms()
        now_ms = self.world.clock_high_ms
        by_counter: dict[str, int] = defaultdict(int)
        by_buyer: dict[tuple[str, str], int] = defaultdict(int)
        by_campaign: dict[tuple[str, str, str], int] = defaultdict(int)
        for order_id, row in store.orders.items():
            if not store.transitions[order_id]:
                continue
            status = store.status(order_id)
            holding = status in (OrderStatus.PAID, OrderStatus.FULFILLED) or (
                status == OrderStatus.RESERVED
                and now_ms < row["payment_deadline_ms"] + self.config.reservation_grace_ms)
            # A SKU's per-buyer limit counts live orders: a fulfilled order counts for its
            # buyer while it is in its shard's memory (engine.order_state.settled_buyer),
            # or while that shard is down (the stock shards still count it until the
            # shard's next incarnation hands its state over; the buyer's orders all go to
            # that shard). A restarted shard does not load finished orders back.
            counts_for_buyer = status != OrderStatus.FULFILLED or self.in_memory(order_id)
            if holding:
                for _, sku_id, quantity, _, stock_key in store.lines[order_id]:
                    by_counter[stock_key or sku_id] += quantity
                    if counts_for_buyer:
                        by_buyer[(row["buyer_id"], stock_key or sku_id)] += quantity
                    if row["campaign_id"]:
                        by_campaign[(row["buyer_id"], row["campaign_id"], sku_id)] += quantity
        return by_counter, by_buyer, by_campaign

    def in_memory(self, order_id: str) -> bool:
        """Is the order in its order shard's memory: the live incarnation's, or while
        that one is down or starting, the one before as it was when it crashed (the stock
        shards count what it handed over until the next one hands its state over)?"""
        actor = self.world.actors[f"order-{self.order_table.shard_of_slot[order_slot(order_id)]}"]
        shard = actor.instance
        if shard is None or not shard._ready.done():
            shard = actor.previous
        return shard is None or order_id in shard._state.book.orders

    def check(self) -> None:
        store = self.world.store
        for name, actor in self.world.actors.items():  # a shard that cannot start is a finding
            ready = getattr(actor.instance, "_ready", None)
            # (UNAVAILABLE: a stock shard that waits for a reshard to rebuild it, which
            # replaces this start; anything else is a start that failed for good.)
            if ready is not None and ready.done() and not ready.cancelled() and not (
                    ready.exception() is None or isinstance(ready.exception(), DomainError)):
                self.fail(f"{name} cannot start: {ready.exception()!r}")
        by_counter, by_buyer, by_campaign = self.live_units()
        for counter, units in by_counter.items():
            on_hand = store.on_hand(MERCHANT, counter)
            if units > on_hand:
                self.fail(f"oversold {counter}: {units} units in live orders, {on_hand} on"
                          " hand")
        for (buyer_id, counter), units in by_buyer.items():
            limit = self.skus.get(counter, 0)  # campaign buckets have no limit of their own
            if limit and units > limit:
                self.fail(f"{buyer_id} holds {units} of {counter}, limit {limit}")
        for (buyer_id, campaign_id, sku_id), units in by_campaign.items():
            limit = self.campaigns.get(campaign_id, {}).get(sku_id, 0)
            if limit and units > limit:
                self.fail(f"{buyer_id} holds {units} of {sku_id} in campaign {campaign_id},"
                          f" limit {limit}")
        if self.resharding:  # stock shards rebuild; order shards sell nothing meanwhile
            return
        self.check_generations()
        for name, shard, owned in self.stock_ledgers():
            if (shard._ledger.holds_without_units and not self.clock_steps
                    and not self.world.host_skew_ms):
                self.fail(f"{name} found {shard._ledger.holds_without_units} holds handed"
                          " over without their units, though no clock stepped back and"
                          " every host's clock agreed")
            if not shard._ready.done() or shard._ready.exception():
                continue
            for (merchant_id, sku_id), sku in owned:
                durable = store.on_hand(merchant_id, sku_id)
                if sku.on_hand > durable:
                    self.fail(f"{name} counts {sku.on_hand} of {sku_id} on hand, the"
                              f" database {durable}")
            try:
                shard._ledger.check_invariants()
            except AssertionError as error:
                self.fail(f"{name}: {error}")

    def check_generations(self) -> None:
        """No stock shard takes the calls of an order shard's live incarnation for stale:
        the generation a stock shard last took over from an order shard is never newer
        than the one that shard's incarnation alive now sends (else its releases and
        refunds are dropped: units come back only at expiry, refunds never)."""
        for i, name in enumerate(self.stock_names()):
            stock = self.world.instance(name)
            if stock is None:
                continue
            for owner, seen in stock._generations.items():
                order = self.world.instance(f"order-{owner}")
                if order is None or not order._ready.done() or order._ready.exception():
                    continue
                sends = order._stock.generation(i)
                if seen > sends:
                    self.fail(f"{name} takes order-{owner}'s calls for stale: it took over"
                              f" generation {tuple(seen)}, the live incarnation sends"
                              f" {tuple(sends)}")

    def stock_ledgers(self) -> list[tuple[str, Any, list[tuple[Any, Any]]]]:
        """(name, shard, its SKUs it owns by the routing table now), of live shards."""
        found = []
        for i, name in enumerate(self.stock_names()):
            shard = self.world.instance(name)
            if shard is None:
                continue
            owned = [(key, sku) for key, sku in shard._ledger.skus.items()
                     if self.stock_table.shard_of_slot[slot_of(key[0], key[1], 64)] == i]
            found.append((name, shard, owned))
        return found

    async def settle_and_check(self) -> None:
        """Faults stop; every deadline and grace time passes; then memory and database
        agree on every held and sold unit."""
        world = self.world
        world.faults = Faults.none()
        for name, actor in world.actors.items():
            if actor.instance is None:
                world.start(name)
        # The longest payment window (3 s), the stock shards' grace, and a sweep or two
        # (and the clock's step back: deadlines set during it are that much further; and
        # a deadline set on a host ahead, read on a host behind).
        await asyncio.sleep(3 + self.config.reservation_grace_ms / 1000 + 1
                            + self.clock_step_ms_max / 1000
                            + 2 * self.world.host_skew_ms / 1000)
        store = world.store
        sold = store.held((OrderStatus.PAID, OrderStatus.FULFILLED))
        reserved = store.held((OrderStatus.RESERVED,))
        if any(reserved.values()):
            self.fail(f"orders still reserved after every deadline: {dict(reserved)}")
        for name, shard, owned in self.stock_ledgers():
            await shard._ready
            for (merchant_id, sku_id), sku in owned:
                if sku.reserved:
                    self.fail(f"{name} still holds {sku.reserved} of {sku_id} after every"
                              " deadline and grace time (leaked)")
                if sku.sold != sold[(merchant_id, sku_id)]:
                    self.fail(f"{name} counts {sku.sold} of {sku_id} sold, the database"
                              f" {sold[(merchant_id, sku_id)]}")
        self.check()

    async def main(self) -> None:
        self.build()
        world = self.world
        world.faults = Faults.none()
        await self.setup()
        world.faults = self.faults_on
        checker = asyncio.ensure_future(self.checker())
        buyers = [self.buyer(b) for b in range(self.rng.randint(3, 12))]
        await asyncio.gather(*buyers, self.operator(), self.crasher(), self.resharder(),
                             self.campaigner(), self.clock_stepper())
        checker.cancel()  # settle_and_check checks once more at its end
        await self.settle_and_check()


def run_seed(seed: int, steps: int = 60, faults: Faults | None = None) -> Outcome:
    """One run; the same seed and steps give the same run, failures included."""
    run = Run(seed, steps, faults or Faults())
    loop = vtime.new_event_loop()
    loop.set_task_factory(run.world.task_factory)
    try:
        with installed(run.world):
            loop.run_until_complete(asyncio.wait_for(run.main(), timeout=3600))
            virtual_s = loop.time()
    except Exception as error:  # the run itself broke: that is a finding too
        run.world.failures.append(f"run failed: {type(error).__name__}: {error}")
        virtual_s = loop.time()
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return Outcome(seed, steps, run.world.failures, len(run.acked), dict(run.refused),
                   sum(a.crashes for a in run.world.actors.values()), run.world.store.writes,
                   virtual_s, dict(run.reshards), run.clock_steps,
                   run.shared_keys is not None, run.world.host_skew_ms)


def _retry(answer: Any) -> bool:
    """Does this answer say "retry with the same key"?"""
    if isinstance(answer, list):
        return any((isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[0], ResultCode) and item[0] in RETRYABLE)
                   or (isinstance(item, DomainError) and item.code in RETRYABLE)
                   for item in answer)
    return False
