"""What an order shard holds in memory, and the decisions made on it that are not about
placing (engine.placing) or cart holds (engine.cart_plans): transitions and their stock
calls, expiry, and the handover of its holds and sales to a stock shard.

Pure: no I/O, no clock; the shard (actors.order_shard) awaits, persists and calls peers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from flashtx.engine.campaigns import BuyerUnits, Campaign, not_found
from flashtx.engine.carts import Cart, CartBook, CartKey, hold_id, line_hold_id
from flashtx.engine.config import Config
from flashtx.engine.errors import IdempotencyConflict, Unavailable
from flashtx.engine.messages import Holds, Line, Lines, Sales
from flashtx.engine.orders import Order, OrderBook, OrderSnapshot, OrderStatus, StockAction

RELEASES_WAITING = "a stock shard is unreachable and stock releases are waiting; retry"
# orders, and the position to continue from (None: the last page)
Page = tuple[list[OrderSnapshot], tuple[int, str] | None]
ShardOf = Callable[[str, str], int]  # (merchant_id, stock key) -> stock shard


def split_lines(shard_of: ShardOf, merchant_id: str,
                lines: Sequence[Line]) -> dict[int, list[Line]]:
    """An order's lines grouped by the stock shard that owns each."""
    parts: dict[int, list[Line]] = defaultdict(list)
    for line in lines:
        parts[shard_of(merchant_id, line[0])].append(line)
    return parts


def settled_buyer(order: Order) -> str:
    """Whose units a fulfilled order's sale counts as once it leaves memory: its buyer's
    in a campaign (the campaign's per-buyer limits count until it ends), else no one's:
    a SKU's per-buyer limit counts units in live orders (reserved or paid, or fulfilled
    and still in memory), so the history of fulfilled orders is summed per SKU, not per
    buyer (docs/operating.md, "History and retention")."""
    return order.buyer_id if order.campaign_id else ""


@dataclass(slots=True)
class StockCalls:
    """Stock calls, per stock shard: commits (payments, made before the state changes),
    releases (cancel, expiry, dropped carts) and returns (refunds), both made after the
    state that frees them is durable, and abandons (orders never placed)."""

    commits: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    abandons: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    releases: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    returns: dict[int, list[tuple[str, str, str, Lines]]] = field(
        default_factory=lambda: defaultdict(list))

    def freeing(self) -> bool:
        return bool(self.releases or self.returns or self.abandons)


@dataclass(slots=True)
class OrderState:
    book: OrderBook
    carts: CartBook
    campaigns: dict[tuple[str, str], Campaign] = field(default_factory=dict)
    units: BuyerUnits = field(default_factory=BuyerUnits)  # per buyer: orders and carts
    holds_made: int = 0  # cart holds started by this incarnation (their nonces)
    # Units of fulfilled orders that left memory, per (merchant, stock key, buyer or "":
    # settled_buyer): still sold, handed to the stock shards with the sales of orders in
    # memory.
    settled: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @classmethod
    def empty(cls, config: Config, epoch: str) -> OrderState:
        return cls(OrderBook(epoch, config.orders_per_shard_max,
                             config.idempotency_keys_per_shard_max,
                             config.merchant_orders_per_shard_max),
                   CartBook(config.cart_idle_s * 1000, config.cart_lines_max,
                            config.carts_per_shard_max, config.merchant_carts_per_shard_max))

    # --- restoring ----------------------------------------------------------------------

    def add_campaign(self, campaign: Campaign) -> None:
        self.campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign

    def restore_order(self, order: Order) -> None:
        self.book.restore(order)
        if order.campaign_id and order.live:
            self.count_units(order.merchant_id, order.campaign_id, order.buyer_id,
                             order.unpriced_lines, 1)

    def restore_settled(self, merchant_id: str, buyer_id: str, stock_key: str, sku_id: str,
                        campaign_id: str, units: int) -> None:
        """Units of fulfilled orders, from the database (settled_sales)."""
        key = (merchant_id, stock_key, buyer_id)
        self.settled[key] = self.settled.get(key, 0) + units
        if campaign_id:
            self.count_units(merchant_id, campaign_id, buyer_id, ((sku_id, units),), 1)

    def evict(self, finished_before_ms: int, window_start_ms: int,
              not_durable: Container[str], items_max: int) -> int:
        """Finished orders leave memory (``OrderBook.evict``); a fulfilled one's units
        stay sold (and, in a campaign, counted for its buyer: they are not given back).
        Answers how many left."""
        gone = self.book.evict(finished_before_ms, window_start_ms, not_durable, items_max)
        settled = self.settled
        for order in gone:
            if order.status == OrderStatus.FULFILLED:
                buyer_id = settled_buyer(order)
                for stock_key, quantity in order.stock_lines:
                    key = (order.merchant_id, stock_key, buyer_id)
                    settled[key] = settled.get(key, 0) + quantity
        return len(gone)

    def discard(self, order_ids: Collection[str], calls: StockCalls,
                shard_of: ShardOf) -> int:
        """Orders the database refused (another shard committed their idempotency key
        first) leave memory; their stock is freed (a hold released, a sale returned) and
        a campaign buyer's units given back: nothing durable names them. Answers how many
        were found."""
        gone = self.book.discard(order_ids)
        for order in gone:
            if order.campaign_id and order.live:
                self.count_units(order.merchant_id, order.campaign_id, order.buyer_id,
                                 order.unpriced_lines, -1)
            if order.status == OrderStatus.RESERVED:
                action = StockAction.RELEASE
            elif order.status in (OrderStatus.PAID, OrderStatus.FULFILLED):
                action = StockAction.RETURN
            else:
                continue  # cancelled or expired: freed already
            self._freed(order, split_lines(shard_of, order.merchant_id, order.stock_lines),
                        action, calls)
        return len(gone)

    def new_hold_id(self, key: CartKey, sku_id: str) -> str:
        """A cart line's new hold: unique to this shard incarnation (epoch + count)."""
        self.holds_made += 1
        return hold_id(key, sku_id, f"{self.book.epoch}{self.holds_made:x}")

    # --- campaigns ------------------------------------------------------------------------

    def campaign(self, merchant_id: str, campaign_id: str) -> Campaign:
        campaign = self.campaigns.get((merchant_id, campaign_id))
        if campaign is None:
            raise not_found(campaign_id)
        return campaign

    def count_units(self, merchant_id: str, campaign_id: str, buyer_id: str,
                    lines: Sequence[Line], sign: int) -> None:
        """Adds (sign 1) or gives back (-1) a buyer's units of limited campaign SKUs."""
        campaign = self.campaigns.get((merchant_id, campaign_id)) if campaign_id else None
        if campaign is None:
            return
        limited = [(sku_id, quantity) for sku_id, quantity in lines
                   if sku_id in campaign.skus and campaign.skus[sku_id].per_buyer_limit]
        if sign > 0:
            self.units.add(merchant_id, campaign_id, buyer_id, limited)
        else:
            self.units.give_back(merchant_id, campaign_id, buyer_id, limited)

    # --- transitions ------------------------------------------------------------------------

    def act(self, op: str, merchant_id: str, target: str, argument: Any, only_key: str,
            now: int, busy: set[str], calls: StockCalls, shard_of: ShardOf,
            releases_full: bool) -> OrderSnapshot | Order | Page:
        """One read or transition. A payment answers its Order (to apply once its stock
        commit succeeds; it is marked busy meanwhile); anything else answers what the
        client gets. Stock calls go into `calls`. `releases_full`: too many releases wait
        for an unreachable stock shard, so stock-freeing work waits too."""
        book = self.book
        if op == "get":
            return book.get(merchant_id, target, only_key).snapshot()
        if op == "list":
            before, limit = argument  # a PageRequest
            return book.list_for_buyer(merchant_id, target, before, limit, only_key)
        order, action = book.check(merchant_id, target, op, now, only_key)
        if op == "pay" and argument and order.payment_reference not in ("", argument):
            raise IdempotencyConflict("the order was paid with another payment reference",
                                      order_id=order.order_id)
        if action is None:
            return order.snapshot()
        if order.order_id in busy:
            raise Unavailable("the order is changing; retry", order_id=order.order_id)
        parts = split_lines(shard_of, order.merchant_id, order.stock_lines)
        if action is not StockAction.COMMIT and releases_full:
            raise Unavailable(RELEASES_WAITING)
        if action is StockAction.COMMIT:  # stock first, then the state
            busy.add(order.order_id)
            for shard in parts:
                calls.commits[shard].append(order.order_id)
            return order
        snapshot = book.apply(order, op, now)  # state first, then the stock
        self._freed(order, parts, action, calls)
        return snapshot

    def expire_due(self, now: int, budget: int, busy: Container[str], calls: StockCalls,
                   shard_of: ShardOf) -> int:
        """Expires unpaid orders past their deadline (at most `budget`); an order being
        paid right now is looked at again later. Answers how many expired."""
        expired = 0
        for order in self.book.due_for_expiry(now, budget):
            if order.order_id in busy:
                self.book.remind(order)
                continue
            self.book.apply(order, "expire", now)
            expired += 1
            self._freed(order, split_lines(shard_of, order.merchant_id, order.stock_lines),
                        StockAction.RELEASE, calls)
        return expired

    def _freed(self, order: Order, parts: dict[int, list[Line]], action: StockAction,
               calls: StockCalls) -> None:
        if order.campaign_id and not order.live:
            self.count_units(order.merchant_id, order.campaign_id, order.buyer_id,
                             order.unpriced_lines, -1)
        for shard, part in parts.items():
            if action is StockAction.RELEASE:
                calls.releases[shard].append(order.order_id)
            elif action is StockAction.RETURN:
                calls.returns[shard].append((order.order_id, order.merchant_id,
                                             order.buyer_id, tuple(part)))

    def drop_idle_carts(self, now: int, budget: int, calls: StockCalls,
                        shard_of: ShardOf) -> list[CartKey]:
        """Idle carts dropped: their holds return, their units no longer count. Answers
        their keys (to journal them gone)."""
        return [self.cart_gone(cart, calls, shard_of) for cart in self.carts.idle(now, budget)]

    def cart_gone(self, cart: Cart, calls: StockCalls, shard_of: ShardOf) -> CartKey:
        """A cart removed (cleared or idle): its holds return, its units no longer count."""
        key = cart.key
        merchant_id, buyer_id, campaign_id = key
        self.count_units(merchant_id, campaign_id, buyer_id, cart.order_lines(), -1)
        for line in cart.lines.values():
            if line.stock_key:
                calls.releases[shard_of(merchant_id, line.stock_key)].append(
                    line_hold_id(key, line))
        return key

    # --- handover ---------------------------------------------------------------------------

    def stock_state(self, stock_shard: int, shard_of: ShardOf, not_durable: Container[str],
                    grace_ms: int, now: int) -> tuple[Holds, Sales]:
        """The holds and sales of this shard's orders and carts on one stock shard. An
        order cancelled or expired whose change is not durable yet still holds (or, for
        a refund, is still sold): its stock is freed only once that is durable."""
        holds: list[tuple[str, str, str, Lines, int]] = []
        sold: list[tuple[str, str, str, int]] = []
        for cart in self.carts.carts.values():
            merchant_id, buyer_id, _ = cart.key
            for line in cart.lines.values():
                if line.held(now) and shard_of(merchant_id, line.stock_key) == stock_shard:
                    holds.append((line_hold_id(cart.key, line), merchant_id, buyer_id,
                                  ((line.stock_key, line.quantity),), line.held_until_ms))
        for order in self.book.orders.values():
            status = order.status
            if status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                if order.order_id not in not_durable:
                    continue
                status = OrderStatus.PAID if order.refunded else OrderStatus.RESERVED
            part = split_lines(shard_of, order.merchant_id, order.stock_lines).get(stock_shard)
            if not part:
                continue
            if status == OrderStatus.RESERVED:
                holds.append((order.order_id, order.merchant_id, order.buyer_id, tuple(part),
                              order.payment_deadline_ms + grace_ms))
            else:
                sold.extend((order.merchant_id, sku_id, order.buyer_id, quantity)
                            for sku_id, quantity in part)
        for (merchant_id, stock_key, buyer_id), units in self.settled.items():
            if shard_of(merchant_id, stock_key) == stock_shard:
                sold.append((merchant_id, stock_key, buyer_id, units))
        return Holds.of(holds), Sales.of(sold)
