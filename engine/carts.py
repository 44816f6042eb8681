"""Carts: one per (merchant, buyer, campaign), bounded, dropped after an idle time.

A cart line may hold stock (the merchant's policy holds stock when an item enters a
cart): the hold lives on a stock shard under the line's ``hold_id`` until
``held_until_ms``; the cart only records where (``stock_key``: the SKU, or a campaign
bucket) and until when. Checkout releases the holds and reserves the order's stock in
the same stock-shard call, so the order gets exactly the units the cart held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from flashtx.engine.errors import FailedPrecondition, InvalidArgument, Overloaded
from flashtx.engine.expiry import ExpiryHeap

__all__ = ["Cart", "CartBook", "CartKey", "CartLine", "CartSnapshot", "hold_id", "line_hold_id"]

CartKey = tuple[str, str, str]  # (merchant_id, buyer_id, campaign_id)


def hold_id(key: CartKey, sku_id: str, nonce: str = "") -> str:
    """The stock hold of one cart line. Resizing the line keeps its hold; a line that
    starts holding again (after a release, a clear, a checkout) gets a new `nonce`, so a
    late release of its old hold never frees the new one."""
    merchant_id, buyer_id, campaign_id = key
    return f"cart:{merchant_id}:{buyer_id}:{campaign_id}:{sku_id}{':' if nonce else ''}{nonce}"


def line_hold_id(key: CartKey, line: CartLine) -> str:
    """The hold of a held line (lines saved before nonces existed: the plain id)."""
    return line.hold_id or hold_id(key, line.sku_id)


@dataclass(slots=True)
class CartLine:
    sku_id: str
    quantity: int
    stock_key: str = ""  # where its hold is (set while held)
    held_until_ms: int = 0
    hold_id: str = ""  # set while held

    def held(self, now_ms: int) -> bool:
        return self.held_until_ms > now_ms


class CartSnapshot(NamedTuple):
    buyer_id: str
    campaign_id: str
    lines: tuple[tuple[str, int, int], ...]  # (sku_id, quantity, held_until_ms or 0)
    updated_at_ms: int
    expires_at_ms: int
    replayed: bool = False  # an add retried with its request id: nothing was added


ADDS_REMEMBERED = 32  # request ids of adds a cart remembers (AddItem.request_id)


@dataclass(slots=True)
class Cart:
    key: CartKey
    lines: dict[str, CartLine] = field(default_factory=dict)
    updated_at_ms: int = 0
    expires_at_ms: int = 0
    # Its latest adds with a request id: request id -> (sku_id, quantity), oldest first.
    adds: dict[str, tuple[str, int]] = field(default_factory=dict)

    def remember_add(self, request_id: str, sku_id: str, quantity: int) -> None:
        self.adds[request_id] = (sku_id, quantity)
        while len(self.adds) > ADDS_REMEMBERED:
            del self.adds[next(iter(self.adds))]

    def snapshot(self, now_ms: int) -> CartSnapshot:
        return CartSnapshot(self.key[1], self.key[2],
                            tuple((line.sku_id, line.quantity,
                                   line.held_until_ms if line.held(now_ms) else 0)
                                  for line in self.lines.values()),
                            self.updated_at_ms, self.expires_at_ms)

    def order_lines(self) -> tuple[tuple[str, int], ...]:
        """The cart as an order's lines (sorted: the canonical form)."""
        return tuple(sorted((line.sku_id, line.quantity) for line in self.lines.values()))


class CartBook:
    def __init__(self, idle_ms: int, lines_max: int, carts_max: int,
                 merchant_carts_max: int | None = None) -> None:
        self.carts: dict[CartKey, Cart] = {}
        self._idle_ms = idle_ms
        self._lines_max = lines_max
        self._carts_max = carts_max
        # Carts per merchant, and its quota (one merchant cannot fill the shard's carts).
        self.per_merchant: dict[str, int] = {}
        self._merchant_carts_max = carts_max if merchant_carts_max is None else (
            merchant_carts_max)
        self._expiry: ExpiryHeap[CartKey] = ExpiryHeap(self._expires_at, lambda: len(self.carts))

    @property
    def expiry_entries(self) -> int:
        """Entries of the idle-expiry heap: about the carts held, at most twice."""
        return len(self._expiry)

    def _expires_at(self, expires_at_ms: int, key: CartKey) -> bool:
        cart = self.carts.get(key)
        return cart is not None and cart.expires_at_ms == expires_at_ms

    def _counted(self, merchant_id: str, change: int) -> None:
        count = self.per_merchant.get(merchant_id, 0) + change
        if count:
            self.per_merchant[merchant_id] = count
        else:
            del self.per_merchant[merchant_id]

    def get(self, key: CartKey) -> Cart | None:
        return self.carts.get(key)

    def empty(self, key: CartKey, now_ms: int) -> CartSnapshot:
        return CartSnapshot(key[1], key[2], (), now_ms, 0)

    def quantity(self, key: CartKey, sku_id: str) -> int:
        cart = self.carts.get(key)
        line = cart.lines.get(sku_id) if cart else None
        return line.quantity if line else 0

    def check_room(self, key: CartKey, sku_id: str) -> None:
        """Raises unless a line for `sku_id` may exist in this cart."""
        cart = self.carts.get(key)
        if cart is None:
            if len(self.carts) >= self._carts_max:
                raise FailedPrecondition("this order shard holds its maximum number of carts")
            if self.per_merchant.get(key[0], 0) >= self._merchant_carts_max:
                raise Overloaded("this merchant holds its quota of carts on this order shard"
                                 " (merchant_carts_per_shard_max)", 1000,
                                 quota="merchant_carts_per_shard_max")
            return
        if sku_id not in cart.lines and len(cart.lines) >= self._lines_max:
            raise InvalidArgument("sku_id", f"a cart holds at most {self._lines_max} lines")

    def set_line(self, key: CartKey, sku_id: str, quantity: int, now_ms: int,
                 stock_key: str = "", held_until_ms: int = 0, hold: str = "") -> Cart:
        """Sets a line (0 removes it); the cart's idle clock restarts."""
        self.check_room(key, sku_id)
        cart = self.carts.get(key)
        if cart is None:
            cart = self.carts[key] = Cart(key)
            self._counted(key[0], 1)
        if quantity <= 0:
            cart.lines.pop(sku_id, None)
        else:
            cart.lines[sku_id] = CartLine(sku_id, quantity, stock_key, held_until_ms, hold)
        self.touch(cart, now_ms)
        return cart

    def touch(self, cart: Cart, now_ms: int) -> None:
        cart.updated_at_ms = now_ms
        cart.expires_at_ms = now_ms + self._idle_ms
        self._expiry.push(cart.expires_at_ms, cart.key)

    def remove(self, key: CartKey) -> Cart | None:
        cart = self.carts.pop(key, None)
        if cart is not None:
            self._counted(key[0], -1)
        return cart

    def take_ordered(self, key: CartKey, ordered: Iterable[tuple[str, int]],
                     now_ms: int) -> Cart | None:
        """Removes what an order took from the cart (lines changed meanwhile keep the
        difference); drops the cart when nothing is left."""
        cart = self.carts.get(key)
        if cart is None:
            return None
        for sku_id, quantity in ordered:
            line = cart.lines.get(sku_id)
            if line is None:
                continue
            if line.quantity <= quantity:
                del cart.lines[sku_id]
            else:
                line.quantity -= quantity
                line.stock_key, line.held_until_ms, line.hold_id = "", 0, ""
        if not cart.lines:
            del self.carts[key]
            self._counted(key[0], -1)
            return None
        self.touch(cart, now_ms)
        return cart

    def restore(self, cart: Cart) -> None:
        if cart.key not in self.carts:
            self._counted(cart.key[0], 1)
        self.carts[cart.key] = cart
        self._expiry.push(cart.expires_at_ms, cart.key)

    def idle(self, now_ms: int, items_max: int) -> list[Cart]:
        """Removes and returns carts unchanged for the idle time."""
        gone: list[Cart] = []
        while self._expiry.due(now_ms) and len(gone) < items_max:
            expires_at_ms, key = self._expiry.pop()
            cart = self.carts.get(key)
            if cart is not None and cart.expires_at_ms == expires_at_ms:
                del self.carts[key]
                self._counted(key[0], -1)
                gone.append(cart)
        return gone
