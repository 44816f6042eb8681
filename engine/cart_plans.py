"""Cart line changes and their stock holds: the decisions, without I/O.

A change to a line that holds stock (or will) is a ``CartHold``: the hold is taken,
resized or released on its stock shard first when it grows, and after the cart's new
state is durable when it shrinks (the order of a cancel: commit, then release). A change
that needs no stock call is applied at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from flashtx.engine.campaigns import Campaign
from flashtx.engine.carts import Cart, CartKey, CartSnapshot, line_hold_id
from flashtx.engine.errors import (
    DomainError,
    IdempotencyConflict,
    InvalidArgument,
    ResultCode,
    Unavailable,
    error_for,
)
from flashtx.engine.messages import HoldBatch, Lines
from flashtx.engine.order_state import OrderState, ShardOf
from flashtx.engine.orders import Order
from flashtx.engine.placing import FromCart


class CartHold(NamedTuple):
    """A cart line change. `stock_key` "" : no stock call (applied at once)."""

    position: int  # in the batch
    key: CartKey
    sku_id: str
    old: int
    new: int
    stock_key: str
    held_until_ms: int
    campaign: Campaign | None
    attempt: int  # campaign bucket tried (a new hold refused for stock tries the next)
    hold_id: str = ""  # the line's hold (kept while it resizes; new when it starts)
    request_id: str = ""  # an add's: the cart remembers it once the add is applied

    @property
    def hold_quantity(self) -> int:
        return self.new if self.held_until_ms else 0

    @property
    def needs_stock(self) -> bool:
        return bool(self.stock_key)

    @property
    def frees(self) -> bool:
        return self.hold_quantity < self.old


def replayed_add(state: OrderState, key: CartKey, sku_id: str, quantity: int,
                 request_id: str, now: int) -> CartSnapshot | None:
    """The answer to an add whose request id this cart applied before (nothing is added
    again), or None when it did not. The same id for another add is a conflict."""
    cart = state.carts.get(key)
    earlier = cart.adds.get(request_id) if cart is not None and request_id else None
    if cart is None or earlier is None:
        return None
    if earlier != (sku_id, quantity):
        raise IdempotencyConflict(f"request_id {request_id} added another item",
                                  request_id=request_id)
    return cart.snapshot(now)._replace(replayed=True)


def plan_change(state: OrderState, position: int, op: str, key: CartKey, sku_id: str,
                quantity: int, hold_s: int, now: int, busy: set[tuple[CartKey, str]],
                quantity_max: int, request_id: str = "") -> CartHold:
    """Checks an add / set / remove and counts a campaign's units it adds; a change with a
    stock call marks its line busy until it is done."""
    merchant_id, buyer_id, campaign_id = key
    if (key, sku_id) in busy:
        raise Unavailable("this cart line is changing; retry", sku_id=sku_id)
    campaign = None
    if campaign_id:
        campaign = state.campaign(merchant_id, campaign_id)
        campaign.check_cart(now)
        campaign.sku(sku_id)
    old = state.carts.quantity(key, sku_id)
    new = old + quantity if op == "add" else quantity if op == "set" else 0
    if new > quantity_max:
        raise InvalidArgument("quantity", f"a line holds at most {quantity_max} units")
    if new:
        state.carts.check_room(key, sku_id)
    if campaign is not None and new > old:
        state.units.take(merchant_id, campaign_id, buyer_id,
                         campaign.limits([(sku_id, new - old)]))
    cart = state.carts.get(key)
    line = cart.lines.get(sku_id) if cart is not None else None
    holding = hold_s > 0 and new > 0 and (campaign is None or (
        campaign.starts_at_ms <= now < campaign.ends_at_ms and not campaign.ended))
    if not holding and (line is None or not line.stock_key):
        return CartHold(position, key, sku_id, old, new, "", 0, campaign, 0, "", request_id)
    if line is not None and line.stock_key:  # held: resized (or released) in place
        stock_key, hold = line.stock_key, line_hold_id(key, line)
    else:
        stock_key = (campaign.stock_lines(buyer_id, [(sku_id, new)], 0)[0][0] if campaign
                     else sku_id)
        hold = state.new_hold_id(key, sku_id)
    busy.add((key, sku_id))
    return CartHold(position, key, sku_id, old, new if holding else 0, stock_key,
                    now + hold_s * 1000 if holding else 0, campaign, 0, hold, request_id)


def apply_change(state: OrderState, change: CartHold, now: int) -> Cart:
    """Sets a line to its new quantity and hold, and gives back units a smaller line no
    longer counts."""
    merchant_id, buyer_id, campaign_id = change.key
    if change.new < change.old:
        state.count_units(merchant_id, campaign_id, buyer_id,
                          [(change.sku_id, change.old - change.new)], -1)
    held = change.hold_quantity > 0
    cart = state.carts.set_line(change.key, change.sku_id, change.new, now,
                                change.stock_key if held else "",
                                change.held_until_ms if held else 0,
                                change.hold_id if held else "")
    if change.request_id:
        cart.remember_add(change.request_id, change.sku_id, change.new - change.old)
    return cart


def hold_batches(changes: Iterable[CartHold], owner: int,
                 shard_of: ShardOf) -> dict[int, HoldBatch]:
    """The stock shards' `hold` calls that take, resize or release these lines' holds."""
    batches: dict[int, HoldBatch] = {}
    for change in changes:
        merchant_id, buyer_id, _ = change.key
        shard = shard_of(merchant_id, change.stock_key)
        batch = batches.get(shard)
        if batch is None:
            batch = batches[shard] = HoldBatch([], [], [], [], [], [], owner)
        batch.hold_ids.append(change.hold_id)
        batch.merchant_ids.append(merchant_id)
        batch.buyer_ids.append(buyer_id)
        batch.stock_keys.append(change.stock_key)
        batch.quantities.append(change.hold_quantity)
        batch.expires_ms.append(change.held_until_ms)
    return batches


def after_hold(state: OrderState, change: CartHold, code: ResultCode,
               value: Any) -> CartHold | DomainError | None:
    """A hold answered: None when it was taken (apply the change); the next try when a new
    campaign hold was refused for stock and the buyer has another bucket; else the error
    (the units the change counted are given back)."""
    if code is ResultCode.OK:
        return None
    campaign = change.campaign
    if (code is ResultCode.OUT_OF_STOCK and campaign is not None and change.old == 0
            and change.attempt + 1 < campaign.buckets):
        merchant_id, buyer_id, _ = change.key
        next_key = campaign.stock_lines(buyer_id, [(change.sku_id, change.new)],
                                        change.attempt + 1)[0][0]
        return change._replace(stock_key=next_key, attempt=change.attempt + 1)
    if campaign is not None and change.new > change.old:
        merchant_id, buyer_id, campaign_id = change.key
        state.count_units(merchant_id, campaign_id, buyer_id,
                          [(change.sku_id, change.new - change.old)], -1)
    return error_for(code, value)


class CheckoutPlan(NamedTuple):
    """What a checkout places: the cart's lines, and its holds to take over."""

    lines: Lines
    from_cart: FromCart


def checkout_of(state: OrderState, merchant_id: str, buyer_id: str, campaign_id: str,
                key: str, busy: set[tuple[CartKey, str]],
                shard_of: ShardOf) -> CheckoutPlan | tuple[ResultCode, Any]:
    """What a checkout places, or its answer when it places nothing (a replay, a
    conflict, an empty or changing cart)."""
    order: Order | None = state.book.find(merchant_id, key)
    if order is not None:
        if (order.buyer_id, order.campaign_id) == (buyer_id, campaign_id):
            return (ResultCode.REPLAYED, order.snapshot())
        return (ResultCode.IDEMPOTENCY_CONFLICT,
                "idempotency key was used with a different order")
    cart_key = (merchant_id, buyer_id, campaign_id)
    cart = state.carts.get(cart_key)
    if cart is None or not cart.lines:
        return (ResultCode.FAILED_PRECONDITION, "the cart is empty")
    if any((cart_key, sku_id) in busy for sku_id in cart.lines):
        return (ResultCode.UNAVAILABLE, "the cart is changing; retry")
    lines = cart.order_lines()
    holds: dict[int, list[str]] = defaultdict(list)
    for line in cart.lines.values():
        if line.stock_key:
            holds[shard_of(merchant_id, line.stock_key)].append(line_hold_id(cart_key, line))
    return CheckoutPlan(lines, FromCart(tuple(cart.lines[sku_id].stock_key
                                              for sku_id, _ in lines), dict(holds)))


def snapshot_of(state: OrderState, key: CartKey, cart: Cart | None,
                now: int) -> CartSnapshot:
    """The answer for a cart after a change (an emptied cart is removed)."""
    if cart is None or not cart.lines:
        if cart is not None:
            state.carts.remove(key)
        return state.carts.empty(key, now)
    return cart.snapshot(now)
