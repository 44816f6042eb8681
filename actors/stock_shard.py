"""StockShard: owns the stock ledger for the slots routed to it (key: merchant + SKU).

Durable state of a SKU is its catalogue row and its adjustments (on_hand); holds and
sales are facts about orders, which the order shards own. On start it loads the first
from Postgres and asks every order shard for the holds and sales it owns, so after a
crash it counts exactly the orders that exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Sequence
from typing import Any

from flashtx.actors import clock, tracing
from flashtx.actors.loops import every, until_done
from flashtx.actors.persistence import campaign_row, open_store
from flashtx.actors.ports import OrderPeer, find_peers
from flashtx.adapters.events import stock_event
from flashtx.adapters.postgres import Store
from flashtx.engine.campaigns import Campaign
from flashtx.engine.config import Config
from flashtx.engine.errors import DomainError, Unavailable
from flashtx.engine.messages import (
    FIRST_GENERATION,
    Adjusted,
    Answers,
    Expected,
    Generation,
    Handover,
    HoldBatch,
    ReserveBatch,
    ReturnBatch,
    Shares,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.engine.stock import StockChange, StockLedger, StockLevel

log = logging.getLogger(__name__)



class StockShard(clock.ClockControl):
    def __init__(self, index: int, config: Config, slots: Sequence[int],
                 order_shard_names: Sequence[str]) -> None:
        self.index = index
        self._instance = secrets.token_hex(4)  # changes when Ray restarts the actor
        self._config = config
        tracing.configure(config, f"stock-{index}")
        self._slots = list(slots)
        self._owned = set(self._slots)  # catalogue writes land only on these slots
        # Started while a reshard runs (its table is saved but not settled): the order
        # shards may route by either table, so this shard takes no state and no write
        # until the reshard rebuilds it.
        self._awaiting_rebuild = False
        self._awaits_rebuild = asyncio.Event()  # set while _awaiting_rebuild
        self._rebuilding = False
        self._rebuild_requested = False
        self._reloading = False  # loading again (its ledger is being replaced)
        self._order_shard_names = list(order_shard_names)
        self._loaded_table: tuple[int, bool] | None = None  # the table the load read
        self._ledger = StockLedger(config.skus_per_shard_max)
        self._store: Store | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._catalogue = asyncio.Lock()  # one catalogue write (upsert, adjust, move) at a time
        # Per order shard, the generation of the state it last handed over: releases and
        # refunds it sent before that are stale (see OrderShard._handovers).
        self._generations: dict[int, Generation] = {}
        loop = asyncio.get_running_loop()
        # Loaded: catalogue and on_hand from Postgres. Ready: also the holds and sales of
        # every order shard; only then does this shard reserve.
        self._loaded = loop.create_task(self._load())
        self._ready = loop.create_task(self._start())
        self._sweeper = loop.create_task(every(config.expiry_sweep_interval_ms / 1000,
                                               self._sweep_once, "stock expiry sweep",
                                               after=self._ready))

    async def _start(self) -> None:
        await self._loaded
        await self._wait_for_rebuild()
        while not await until_done(self._take_owned_state, f"stock shard {self.index} recovery"):
            # A reshard saved a new table between the load and the handovers: the order
            # shards may have handed over by it, and catalogue writes may have landed on
            # the old owners after the load. Load again (and wait for that reshard if it
            # still runs), then take the state again.
            await self._reload()
            await self._wait_for_rebuild()

    async def _wait_for_rebuild(self) -> None:
        while self._awaiting_rebuild:
            # Started during a reshard: calls are refused (``_serving``) until it rebuilds
            # this shard (which ends this wait), or until the table is settled without
            # that (the shard restarted after its rebuild): then it loads by that table.
            await asyncio.sleep(0.5)
            if self._rebuild_requested:
                raise Unavailable("a stock reshard is rebuilding this shard")
            await self._reload()

    async def _reload(self) -> None:
        self._instance = secrets.token_hex(4)  # a reload: moves read before not applied
        self._reloading = True
        try:
            await until_done(self._load_once, f"stock shard {self.index} load")
        finally:
            self._reloading = False

    async def _take_owned_state(self) -> bool:
        """Takes the holds and sales of every order shard, unless the routing table moved
        since the load (False: nothing taken)."""
        order_shards: list[OrderPeer] = await find_peers(self._order_shard_names)
        states = await asyncio.gather(*(shard.stock_state_for(self.index)
                                        for shard in order_shards))
        if self._store is not None and _table_key(await self._store.stock_routing()) \
                != self._loaded_table:
            return False
        if self._ledger.unknown_skus([(h.owner, h.holds.rows(), h.sales.rows())
                                      for h in states]):
            return False  # an order shard routes by a table not loaded here: load again
        self._take(states, clock.now_ms())
        self._ledger.drain_changes()
        self._ledger.check_invariants()
        return True

    async def rebuild(self, slots: Sequence[int]) -> int:
        """Resharding: owns `slots` from now on. State is rebuilt the way recovery does it
        (catalogue and on-hand from Postgres, holds and sales from the order shards, which
        route by the new table already), so no order is lost or counted twice. Catalogue
        writes wait meanwhile, and none is in flight when the database is read. A rebuild
        that failed (the order shards' routing moved under it) is simply run again."""
        await _settled(self._loaded)
        self._rebuild_requested = True  # a start waiting for this very rebuild ends
        await _settled(self._ready)
        async with self._catalogue:
            self._slots = list(slots)
            self._owned = set(self._slots)
            self._instance = secrets.token_hex(4)  # a reload: moves in flight not applied
            self._ledger = StockLedger(self._config.skus_per_shard_max)
            self._rebuilding = True
            self._rebuild_requested = False
            try:
                self._loaded = asyncio.get_running_loop().create_task(self._load())
                self._ready = asyncio.get_running_loop().create_task(self._start())
                await self._ready
            finally:
                self._rebuilding = False
            return len(self._ledger.skus)

    async def narrow(self, slots: Sequence[int]) -> None:
        """Resharding, before any shard rebuilds: from now on only catalogue writes to
        slots this shard keeps (`slots`: those it owns in the new table) land here; the
        writes in flight finish first."""
        await _settled(self._loaded)  # then it knows whether it waits for this reshard
        if self._awaiting_rebuild:
            return  # started during the reshard: it takes no write until it is rebuilt
        # Not waiting for the start to end: a start that finds this reshard's table after
        # its load waits for the rebuild, which comes after this step. No write lands
        # before the start ends, and a reload only ever narrows what it owns further.
        async with self._catalogue:
            self._owned &= set(slots)

    async def _serving(self) -> None:
        """Waits until this shard serves. While it waits for a reshard to rebuild it,
        calls are refused at once (UNAVAILABLE, retry): the reshard itself waits for calls
        in flight to end before it goes on."""
        await _settled(self._loaded)
        if not self._ready.done() and not self._awaiting_rebuild:
            # Starting: wait for the start, unless it finds a reshard under way meanwhile
            # (a call waiting then would hold that reshard up, and the reshard this shard).
            waiting = asyncio.ensure_future(self._awaits_rebuild.wait())
            try:
                await asyncio.wait([self._ready, waiting], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
        if self._awaiting_rebuild:
            raise Unavailable("a stock reshard is under way: this shard waits for it")
        await self._ready

    def _check_owned(self, merchant_id: str, sku_id: str) -> None:
        if self._slot(merchant_id, sku_id) not in self._owned:
            raise Unavailable("this SKU's stock shard is changing; retry", sku_id=sku_id)

    async def _load(self) -> None:
        if self._store is None:
            self._store = await open_store(self._config, 2)
        if self._store is not None:  # a failed read is tried again, from scratch
            await until_done(self._load_once, f"stock shard {self.index} load")

    async def _load_once(self) -> None:
        assert self._store is not None
        ledger = StockLedger(self._config.skus_per_shard_max)
        stored = await self._store.stock_routing()
        self._loaded_table = _table_key(stored)
        if stored is not None and self.index < stored.shards:
            self._slots = stored.slots_of(self.index)  # resharded since this actor was made
            self._owned = set(self._slots)
        elif stored is not None:
            # Added by a reshard that has not rebuilt this shard yet: the holds of its
            # slots are still on their old shards, so no catalogue write or move lands
            # here (its counters do not yet count them) until the rebuild.
            self._owned = set()
        self._awaiting_rebuild = (stored is not None and not stored.settled
                                  and not self._rebuilding)
        if self._awaiting_rebuild:
            self._awaits_rebuild.set()
        else:
            self._awaits_rebuild.clear()
        if self._awaiting_rebuild:
            self._owned = set()
        skus = await self._store.load_skus(self._slots)
        for row in skus:
            ledger.restore_sku(row["merchant_id"], row["sku_id"], row["name"],
                               row["price_minor"], row["per_buyer_limit"], int(row["on_hand"]))
        self._ledger = ledger  # whole: nothing ever sees a ledger half loaded
        log.info("stock shard %d recovered %d skus", self.index, len(skus))

    # --- hot path ---------------------------------------------------------------------------

    async def reserve(self, batch: ReserveBatch) -> Answers:
        """All-or-nothing per order on this shard. `batch.replacing[i]`: holds (cart
        lines) that item i takes over: released just before it reserves, in the same step,
        so the order gets the units they held."""
        await self._serving()
        with tracing.span("stock_shard.reserve", batch.trace, shard=self.index,
                          orders=len(batch)):
            return self._reserve(batch)

    def _reserve(self, batch: ReserveBatch) -> Answers:
        now = clock.now_ms()
        ledger = self._ledger
        reserve, owner, replacing = ledger.reserve, batch.owner, batch.replacing
        codes = bytearray(len(batch))
        values: list[object] = []
        for i, (order_id, merchant_id, buyer_id, lines, expires_at_ms) in enumerate(
                batch.rows()):
            if replacing is not None and replacing[i]:
                code, value = ledger.check_out(order_id, merchant_id, buyer_id, lines,
                                               expires_at_ms, now, owner, replacing[i])
            else:
                code, value = reserve(order_id, merchant_id, buyer_id, lines, expires_at_ms,
                                      now, owner)
            codes[i] = code
            values.append(value)
        # Holds are derived from orders: nothing to persist, but a sell-out is an event.
        sold_out = [c for c in self._ledger.drain_changes() if c.kind == "sold_out"]
        if sold_out and self._store is not None:
            task = asyncio.get_running_loop().create_task(self._announce(sold_out))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return Answers(bytes(codes), values)

    async def _announce(self, sold_out: list[StockChange]) -> None:
        """stock.sold_out events, off the order path (best effort: a lost one is no harm
        to stock, and GetStock tells the truth)."""
        assert self._store is not None
        outbox = []
        for change in sold_out:
            event_id = f"sold_out:{change.merchant_id}:{change.sku_id}:{change.order_id}"
            outbox.append((event_id, change.merchant_id, "stock.sold_out", "", 0,
                           stock_event(event_id, change.merchant_id, "stock.sold_out",
                                       change.sku_id, 0, "", change.at_ms), change.at_ms))
        try:
            await self._store.save_skus([], [], outbox)
        except Exception:  # logged; the order path never waits for it
            log.warning("stock shard %d could not record sold-out events", self.index,
                        exc_info=True)

    async def hold(self, batch: HoldBatch) -> Answers:
        """Cart line holds; quantity 0 releases."""
        await self._serving()
        now = clock.now_ms()
        hold, owner = self._ledger.hold, batch.owner
        results = Answers.of(hold(hold_id, merchant_id, buyer_id, sku_id, quantity,
                                  expires_at_ms, now, owner)
                             for hold_id, merchant_id, buyer_id, sku_id, quantity, expires_at_ms
                             in batch.rows())
        self._ledger.changes.clear()
        return results

    # --- moving units (campaign buckets) ------------------------------------------------

    async def instance(self, expect: Expected | None = None) -> str:
        """Changes whenever this shard reloads its state from Postgres. `expect`:
        (merchant_id, sku_id, units) about to move here: until they arrive (or
        `move_timeout_ms` passes), refusals for stock of that counter say "retry"."""
        await self._serving()
        if expect is not None:
            self._ledger.expect(expect.merchant_id, expect.sku_id, expect.units,
                                clock.now_ms() + self._config.move_timeout_ms)
        return self._instance

    async def cancel_expected(self, merchant_id: str, sku_id: str) -> None:
        """A move announced by ``instance`` moved nothing."""
        self._ledger.incoming.pop((merchant_id, sku_id), None)

    async def transfer_out(self, merchant_id: str, sku_id: str, units: int,
                           to: Shares, new_skus: SkuBatch | None = None,
                           campaign: Campaign | None = None, at_most: bool = False) -> int:
        """Moves units of `sku_id` to other counters: takes them out of on-hand here, then
        records -units here and +share on each of `to` ((sku_id, share); shares add up to
        units, or to what was taken when `at_most`) in one transaction, with `new_skus`
        rows and the `campaign` row. Durable before it returns; restored here if the write
        fails. The receivers add their share with ``deposit``."""
        now = clock.now_ms()
        rows = [(m, s, self._slot(m, s), name, price, limit, now)
                for m, s, name, price, _, limit in (new_skus.rows() if new_skus else ())]
        await self._serving()
        async with self._catalogue:
            self._check_owned(merchant_id, sku_id)
            return await self._transfer_out(merchant_id, sku_id, units, list(to.rows()),
                                            rows, campaign_row(campaign) if campaign else None,
                                            at_most)

    async def _transfer_out(self, merchant_id: str, sku_id: str, units: int,
                            to: Sequence[tuple[Any, ...]], new_skus: Sequence[Any],
                            campaign: Any, at_most: bool) -> int:
        ledger = self._ledger
        if at_most:
            level = ledger.level(merchant_id, sku_id, 0)
            units = min(units, level.available)
            if units <= 0:
                return 0
            to = [(to[0][0], units)]
        taken = ledger.withdraw(merchant_id, sku_id, units)
        if self._store is None:
            return taken
        now = clock.now_ms()
        reason = f"transfer:{secrets.token_hex(6)}"
        adjustments = [(merchant_id, sku_id, self._slot(merchant_id, sku_id), -taken, reason,
                        now)]
        adjustments += [(merchant_id, key, self._slot(merchant_id, key), share, reason, now)
                        for key, share in to if share]
        try:
            await self._store.transfer(adjustments, list(new_skus), campaign)
        except Exception:
            written = await self._written(adjustments[0])
            if written:  # committed; only its answer was lost
                return taken
            if written is not None:
                ledger.deposit(merchant_id, sku_id, "", 0, taken)  # never left
            # Unknown: the units stay out of memory (never counted twice); Postgres has
            # them wherever they are, and the next reload counts them.
            raise
        return taken

    async def _written(self, adjustment: tuple[Any, ...], tries: int = 5) -> bool | None:
        """Whether a write whose answer was lost recorded `adjustment` (None: unknown,
        the database did not answer)."""
        assert self._store is not None
        merchant_id, sku_id, slot, _, reason, _ = adjustment
        for attempt in range(tries):
            try:
                return await self._store.has_adjustment(slot, merchant_id, sku_id, reason)
            except Exception:
                await asyncio.sleep(0.05 * 2 ** attempt)
        log.warning("could not learn whether a move of %s/%s was written", merchant_id, sku_id)
        return None

    async def deposit(self, merchant_id: str, sku_id: str, name: str, price_minor: int,
                      units: int, expected_instance: str) -> bool:
        """Adds units another shard moved here (already durable). Skipped when this shard
        reloaded since `expected_instance` was read: the reload counted them already (or
        the move came after it, and they wait in Postgres for the next reload)."""
        await self._serving()
        async with self._catalogue:  # never beside a catalogue write (see upsert)
            if self._instance != expected_instance:
                return False
            self._ledger.deposit(merchant_id, sku_id, name, price_minor, units)
            return True

    async def commit(self, order_ids: list[str]) -> Answers:
        await self._serving()
        now = clock.now_ms()
        results = Answers.of(self._ledger.commit(order_id, now) for order_id in order_ids)
        self._ledger.changes.clear()
        return results

    def _stale(self, owner: int, generation: Generation) -> bool:
        """A call its order shard sent before this shard took its state over: the state
        already says what the call would do."""
        return generation < self._generations.get(owner, FIRST_GENERATION)

    async def release(self, order_ids: list[str], owner: int,
                      generation: Generation) -> list[bool]:
        await self._serving()
        if self._stale(owner, generation):
            return [False] * len(order_ids)
        now = clock.now_ms()
        results = [self._ledger.release(order_id, now) for order_id in order_ids]
        self._ledger.changes.clear()
        return results

    async def abandon(self, order_ids: list[str], owner: int,
                      generation: Generation) -> list[bool]:
        """Orders never placed: their holds go; cart holds they took over come back."""
        await self._serving()
        if self._stale(owner, generation):
            return [False] * len(order_ids)
        now = clock.now_ms()
        results = [self._ledger.abandon(order_id, now) for order_id in order_ids]
        self._ledger.changes.clear()
        return results

    async def return_sold(self, batch: ReturnBatch) -> list[bool]:
        """Refunds: sold units go back on sale."""
        await self._serving()
        if self._stale(batch.owner, batch.generation):
            return [False] * len(batch)
        now = clock.now_ms()
        for order_id, merchant_id, buyer_id, lines in batch.rows():
            self._ledger.return_sold(order_id, merchant_id, buyer_id, lines, now, batch.owner)
        self._ledger.changes.clear()
        return [True] * len(batch)

    async def replace_owned(self, handover: Handover) -> int:
        """An order shard that restarted tells what it owns here (see StockLedger). While
        this shard loads by a new routing table, or waits for a reshard to rebuild it, or
        when the handover names a SKU it does not hold (the order shard routes by a table
        this shard has not loaded yet): UNAVAILABLE, nothing replaced; the order shard
        asks again."""
        await self._loaded
        if self._awaiting_rebuild or self._reloading:
            raise Unavailable("this stock shard is loading by a new routing table; retry")
        unknown = self._ledger.unknown_skus([(handover.owner, handover.holds.rows(),
                                              handover.sales.rows())])
        if unknown:
            merchant_id, sku_id = min(unknown)
            raise Unavailable(f"stock shard {self.index} does not hold sku {sku_id} (yet):"
                              " routing tables differ; retry", sku_id=sku_id)
        dropped = self._take([handover], clock.now_ms())
        if dropped:
            log.info("stock shard %d dropped %d holds of order shard %d", self.index,
                     dropped, handover.owner)
        return dropped

    def _take(self, handovers: Sequence[Handover], now: int) -> int:
        """Replaces what each order shard owns here by what it handed over (see
        ``StockLedger.replace_all_owned``). Returns how many holds were dropped."""
        ledger = self._ledger
        before = ledger.holds_without_units
        dropped = ledger.replace_all_owned(
            [(h.owner, h.holds.rows(), h.sales.rows()) for h in handovers], now)
        for handover in handovers:
            self._generations[handover.owner] = max(
                handover.generation, self._generations.get(handover.owner, FIRST_GENERATION))
        ledger.changes.clear()
        if ledger.holds_without_units > before:
            log.warning("stock shard %d did not restore %d holds whose units were gone (the"
                        " clock stepped back since they expired); their orders cannot be"
                        " paid for", self.index, ledger.holds_without_units - before)
        return dropped

    async def levels(self, keys: SkuKeys) -> list[StockLevel | None]:
        """None for an unknown SKU."""
        await self._serving()
        now = clock.now_ms()
        skus = self._ledger.skus
        level = self._ledger.level
        return [level(m, s, now) if (m, s) in skus else None for m, s in keys.rows()]

    # --- catalogue (persisted before the answer) -------------------------------------------
    # Persist, then apply: a decrease leaves memory before it is written, an increase
    # enters memory once it is durable (engine.stock: check_on_hand / settle). One
    # catalogue write at a time per shard, so memory and Postgres agree between writes.

    async def upsert(self, batch: SkuBatch) -> list[StockLevel | DomainError]:
        """Setting on-hand is idempotent: a retry after an unknown outcome writes nothing
        more."""
        await self._serving()
        items = list(batch.rows())
        async with self._catalogue:
            now = clock.now_ms()
            ledger = self._ledger
            results: list[StockLevel | DomainError] = [None] * len(items)  # type: ignore[list-item]
            valid: list[tuple[int, int]] = []  # (position, units held back)
            for i, (merchant_id, sku_id, _, _, on_hand, _) in enumerate(items):
                try:
                    self._check_owned(merchant_id, sku_id)
                    valid.append((i, ledger.check_on_hand(merchant_id, sku_id, on_hand)))
                except DomainError as error:
                    results[i] = error
            for i, held_back in valid:
                ledger.hold_back(items[i][0], items[i][1], held_back)
            if self._store is not None and valid:
                rows = [(m, s, self._slot(m, s), name, price, limit, now)
                        for m, s, name, price, _, limit in (items[i] for i, _ in valid)]
                targets = [(m, s, self._slot(m, s), on_hand, "upsert", now)
                           for m, s, _, _, on_hand, _ in (items[i] for i, _ in valid)]
                try:
                    await self._store.set_on_hand(rows, targets, _stock_event_row)
                except Exception as error:
                    log.warning("stock shard %d: catalogue write failed: %r", self.index, error)
                    # Maybe written: Postgres may now hold a target on-hand that already
                    # counts units moved here whose deposit has not arrived. Moves read
                    # before this point are not deposited (their units wait in Postgres
                    # for the next reload): memory never counts a unit twice.
                    self._instance = secrets.token_hex(4)
                    raise Unavailable("the catalogue write did not complete; retry") from error
                # Postgres now holds each target exactly, moves into these counters that it
                # already counted included: memory takes the target, and a move announced
                # before (its deposit not yet here) is not applied on top of it.
                if any((items[i][0], items[i][1]) in ledger.incoming for i, _ in valid):
                    self._instance = secrets.token_hex(4)
            deltas = [items[i][4] - self._on_hand(items[i][0], items[i][1]) - held_back
                      for i, held_back in valid]
            for (i, held_back), delta in zip(valid, deltas, strict=True):
                merchant_id, sku_id, name, price, _, limit = items[i]
                results[i] = ledger.settle(merchant_id, sku_id, delta, held_back, now,
                                           (name, price, limit))
            return results

    async def adjust(self, merchant_id: str, sku_id: str, delta: int, reason: str,
                     request_id: str = "") -> Adjusted:
        """Adds `delta` to on-hand; with a `request_id`, once. Answers the level and
        whether this call applied it (False: a retry of an adjustment applied before)."""
        await self._serving()
        async with self._catalogue:
            self._check_owned(merchant_id, sku_id)
            now = clock.now_ms()
            held_back = self._ledger.check_adjust(merchant_id, sku_id, delta)
            self._ledger.hold_back(merchant_id, sku_id, held_back)
            applied = True
            if self._store is not None:
                row = (merchant_id, sku_id, self._slot(merchant_id, sku_id), delta, reason, now)
                try:
                    applied = await self._store.adjust_once(row, request_id, _stock_event_row)
                except DomainError:
                    self._ledger.hold_back(merchant_id, sku_id, -held_back)  # not written
                    raise
                except Exception as error:  # unknown outcome: the decrease stays out
                    log.warning("stock shard %d: adjustment failed: %r", self.index, error)
                    raise Unavailable("the adjustment did not complete; retry with the same"
                                      " request_id") from error
            if not applied:  # written before: its decrease is out already, or was
                self._ledger.hold_back(merchant_id, sku_id, -held_back)
                return Adjusted(self._ledger.level(merchant_id, sku_id, now), False)
            return Adjusted(self._ledger.settle(merchant_id, sku_id, delta, held_back, now), True)

    def _on_hand(self, merchant_id: str, sku_id: str) -> int:
        sku = self._ledger.skus.get((merchant_id, sku_id))
        return sku.on_hand if sku is not None else 0

    def _slot(self, merchant_id: str, sku_id: str) -> int:
        return slot_of(merchant_id, sku_id, self._config.slots_total)

    # --- housekeeping -----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        return {"index": self.index, "instance": self._instance, "pid": os.getpid(),
                "skus": len(self._ledger.skus),
                "reservations": len(self._ledger.reservations),
                "expiry_entries": self._ledger.expiry_entries,
                "holds_without_units": self._ledger.holds_without_units}

    async def spans(self) -> list[dict[str, Any]]:
        """Spans this process kept (trace_exporter = "memory")."""
        return tracing.finished_spans()

    async def check_invariants(self) -> bool:
        await self._serving()
        self._ledger.check_invariants()
        return True

    async def _sweep_once(self) -> None:
        expired = self._ledger.expire(clock.now_ms(), self._config.expiry_sweep_items_max)
        self._ledger.changes.clear()
        if expired:
            log.info("stock shard %d freed %d expired holds", self.index, len(expired))


def _table_key(table: RoutingTable | None) -> tuple[int, bool] | None:
    return None if table is None else (table.version, table.settled)


async def _settled(task: asyncio.Task[None]) -> None:
    """Waits for `task` to end, whether or not it failed."""
    await asyncio.wait([task])


def _stock_event_row(merchant_id: str, sku_id: str, delta: int, reason: str,
                     at_ms: int) -> tuple[Any, ...]:
    """The outbox row of a stock.adjusted event."""
    event_id = f"stock:{merchant_id}:{sku_id}:{secrets.token_hex(8)}"
    return (event_id, merchant_id, "stock.adjusted", "", 0,
            stock_event(event_id, merchant_id, "stock.adjusted", sku_id, delta, reason, at_ms),
            at_ms)
