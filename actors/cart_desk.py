"""An order shard's carts: cart operations and the stock holds of their lines.

The decisions are engine.cart_plans; this awaits the stock shards (through the order
shard's StockLink) and journals carts (OrderJournal). A line that gives units back does so
only once the cart's new state is durable; a line that takes more holds them first.
"""

from __future__ import annotations

from typing import Any

from flashtx.actors.order_journal import OrderJournal
from flashtx.actors.persistence import cart_entry
from flashtx.actors.stock_link import StockLink
from flashtx.engine.cart_plans import (
    CartHold,
    after_hold,
    apply_change,
    hold_batches,
    plan_change,
    replayed_add,
    snapshot_of,
)
from flashtx.engine.carts import Cart, CartKey, CartSnapshot
from flashtx.engine.config import Config
from flashtx.engine.errors import DomainError, Overloaded, ResultCode, Unavailable
from flashtx.engine.messages import CartBatch, PlaceBatch
from flashtx.engine.order_state import RELEASES_WAITING, OrderState, StockCalls
from flashtx.engine.orders import OrderSnapshot


class CartDesk:
    def __init__(self, state: OrderState, stock: StockLink, journal: OrderJournal,
                 config: Config) -> None:
        self._state, self._stock, self._journal, self._config = state, stock, journal, config
        self.busy: set[tuple[CartKey, str]] = set()  # lines with a stock call out

    async def cart(self, batch: CartBatch, now: int) -> list[Any]:
        """A batch of cart operations; each answer is a CartSnapshot or a DomainError."""
        state = self._state
        results: list[Any] = [None] * len(batch)
        pending: list[CartHold] = []
        room = self._journal.has_room(len(batch))
        for i, (op, merchant_id, buyer_id, campaign_id, sku_id, quantity, hold_s,
                request_id) in enumerate(batch.rows()):
            key = (merchant_id, buyer_id, campaign_id)
            try:
                if op == "get":
                    cart = state.carts.get(key)
                    results[i] = (cart.snapshot(now) if cart is not None
                                  else state.carts.empty(key, now))
                    continue
                if not room:
                    code, message = self._journal.full_refusal()
                    raise (Unavailable(message) if code is ResultCode.UNAVAILABLE
                           else Overloaded(message, self._config.overload_retry_after_ms))
                if op == "clear":
                    results[i] = self._clear_cart(key, now)
                    continue
                if request_id:
                    replayed = replayed_add(state, key, sku_id, quantity, request_id, now)
                    if replayed is not None:
                        results[i] = replayed
                        continue
                change = plan_change(state, i, op, key, sku_id, quantity, hold_s, now,
                                     self.busy, self._config.quantity_per_line_max, request_id)
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
            await self._journal.committed()
            await self._stock.hold(hold_batches(changes, self._stock.owner, self._stock.shard_of))
        finally:
            for change in changes:
                self.busy.discard((change.key, change.sku_id))

    async def _hold_cart_lines(self, pending: list[CartHold], results: list[Any],
                               now: int) -> list[CartHold]:
        """Takes or grows the stock holds of cart lines (one call per stock shard), then
        changes the lines; a new campaign hold refused for stock tries the buyer's next
        bucket (the changes answered)."""
        batches = hold_batches(pending, self._stock.owner, self._stock.shard_of)
        replies: dict[tuple[int, str], tuple[ResultCode, Any]] = {}
        for shard, answers in (await self._stock.hold(batches)).items():
            replies.update(zip(((shard, hold) for hold in batches[shard].hold_ids), answers,
                               strict=True))
        again: list[CartHold] = []
        for change in pending:
            shard = self._stock.shard_of(change.key[0], change.stock_key)
            code, value = replies[(shard, change.hold_id)]
            outcome = after_hold(self._state, change, code, value)
            if isinstance(outcome, CartHold):
                again.append(outcome)
                continue
            self.busy.discard((change.key, change.sku_id))
            results[change.position] = (outcome if outcome is not None
                                        else self._apply(change, now))
        return again

    def _apply(self, change: CartHold, now: int) -> CartSnapshot:
        return self.save(change.key, apply_change(self._state, change, now), now)

    def take_ordered(self, batch: PlaceBatch, i: int, order: OrderSnapshot) -> Any:
        """Empties checkout i's cart of what its order took; answers the cart's journal
        entry (to commit with the order)."""
        key = (batch.merchant_ids[i], batch.buyer_ids[i], batch.campaign_ids[i])
        cart = self._state.carts.take_ordered(
            key, [(sku_id, quantity) for sku_id, quantity, _ in order.lines], order.created_at_ms)
        return cart_entry(key, cart, self._journal.slot(key))

    def save(self, key: CartKey, cart: Cart | None, now: int) -> CartSnapshot:
        """Journals the cart (written behind: the answer does not wait) and answers it."""
        self._journal.cart(key, cart)
        return snapshot_of(self._state, key, cart, now)

    def _clear_cart(self, key: CartKey, now: int) -> CartSnapshot:
        cart = self._state.carts.get(key)
        if cart is not None:
            if any((key, sku_id) in self.busy for sku_id in cart.lines):
                raise Unavailable("this cart is changing; retry")
            if self._stock.full():
                raise Unavailable(RELEASES_WAITING)
            self._state.carts.remove(key)
            calls = StockCalls()
            self._journal.carts_gone([self._state.cart_gone(cart, calls, self._stock.shard_of)])
            self._stock.queue(calls)  # its holds return once it is durably gone (sweeper)
        return self._state.carts.empty(key, now)
