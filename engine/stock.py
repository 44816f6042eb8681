"""Stock ledger of one shard: on-hand, reserved and sold per SKU, and the reservations
that explain them.

    available = on_hand - reserved - sold >= 0          (no oversell)
    reserved  = sum of quantities of the holds (reservations)
    reserved + sold = sum over buyers of units held or bought

A reservation belongs to one order and holds all of that order's lines on this shard,
all or nothing. ``commit`` turns it into a sale (payment) and forgets it, ``release``
returns a hold (cancel, expiry), ``return_sold`` takes back a sale (refund), and a hold
nobody commits returns by itself at its expiry. Each hold and each sale records which
order shard owns its order, so an order shard that restarts (or a stock shard that
restarts and asks them) can replace everything it owns with what it knows: holds and
sales are facts about orders, and orders live on the order shards.

Per-buyer limits count the units a buyer holds in live reservations and sales
(tracked for every SKU, so a limit set later counts earlier purchases).

Hot-path methods return result codes instead of raising: a batch of a thousand orders
is answered per item.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from flashtx.engine.campaigns import BUCKET_SEPARATOR
from flashtx.engine.errors import (
    FailedPrecondition,
    NotFound,
    Refusal,
    ResultCode,
    invariant,
    refusal,
)
from flashtx.engine.expiry import ExpiryHeap

__all__ = ["Reservation", "SkuKey", "SkuState", "StockChange", "StockLedger", "StockLevel"]

SkuKey = tuple[str, str]  # (merchant_id, sku_id)
Line = tuple[str, int]  # (sku_id, quantity)


class StockLevel(NamedTuple):
    merchant_id: str
    sku_id: str
    name: str
    price_minor: int
    on_hand: int
    available: int
    reserved: int
    sold: int
    per_buyer_limit: int
    as_of_ms: int


# A hold as an order shard hands it over: (order_id, merchant_id, buyer_id, lines,
# expires_at_ms).
HandedHold = tuple[str, str, str, tuple[Line, ...], int]


class StockChange(NamedTuple):
    """A ledger entry, journaled for persistence and events."""

    # "adjusted" | "reserved" | "committed" | "released" | "expired" | "refunded" |
    # "resynced" | "sold_out" (this reservation took the last available unit)
    kind: str
    merchant_id: str
    sku_id: str
    delta: int
    reason: str
    order_id: str
    at_ms: int


@dataclass(slots=True)
class SkuState:
    name: str
    price_minor: int
    on_hand: int = 0
    reserved: int = 0
    sold: int = 0
    per_buyer_limit: int = 0
    held_by_buyer: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Reservation:
    merchant_id: str
    buyer_id: str
    lines: tuple[Line, ...]
    expires_at_ms: int
    owner: int = 0  # index of the order shard that placed the order
    # Cart holds a checkout's order took over: (hold_id, sku_id, quantity, expires_at_ms).
    replaced: tuple[tuple[str, str, int, int], ...] = ()


class StockLedger:
    def __init__(self, skus_max: int = 2_000_000, settled_max: int = 100_000) -> None:
        self.skus: dict[SkuKey, SkuState] = {}
        self.reservations: dict[str, Reservation] = {}
        self.changes: list[StockChange] = []
        # owner -> {(merchant_id, sku_id, buyer_id): units sold}
        self.sold_by_owner: dict[int, dict[tuple[str, str, str], int]] = {}
        self._skus_max = skus_max
        self._expiry_heap: ExpiryHeap[str] = ExpiryHeap(self._expires_at,
                                                         lambda: len(self.reservations))
        # Units announced to arrive here (moved from another counter), until when: while
        # they are on their way, a refusal for stock says "retry", not "sold out".
        self.incoming: dict[SkuKey, tuple[int, int]] = {}
        # What happened last to recent orders here ("committed", "released", "returned"),
        # so a call repeated after its answer was lost does not act twice: a repeated
        # commit answers OK, a repeated refund returns nothing, and a release after a
        # commit whose answer was lost (the order never became paid) undoes the sale.
        self.settled: OrderedDict[str, tuple[str, Reservation]] = OrderedDict()
        # Holds handed over at a restart that were not restored because their units were
        # gone (``restore_holds``): only a clock that stepped back makes any.
        self.holds_without_units = 0
        self._settled_max = settled_max

    # --- catalogue --------------------------------------------------------------------------

    def check_on_hand(self, merchant_id: str, sku_id: str, on_hand: int) -> int:
        """Checks that on-hand may become `on_hand`; answers the units to hold back from
        memory until the write is durable (0 for an increase or a new SKU)."""
        sku = self.skus.get((merchant_id, sku_id))
        if sku is None:
            if len(self.skus) >= self._skus_max:
                raise FailedPrecondition("this stock shard holds its maximum number of SKUs")
            return 0
        if on_hand < sku.reserved + sku.sold:
            raise FailedPrecondition(
                f"on_hand {on_hand} is below reserved + sold ({sku.reserved + sku.sold})",
                sku_id=sku_id)
        return max(0, sku.on_hand - on_hand)

    def check_adjust(self, merchant_id: str, sku_id: str, delta: int) -> int:
        """Checks an adjustment; answers the units to hold back until it is durable."""
        sku = self._sku(merchant_id, sku_id)
        if sku.on_hand + delta < sku.reserved + sku.sold:
            raise FailedPrecondition(
                f"on_hand would fall below reserved + sold ({sku.reserved + sku.sold})",
                sku_id=sku_id)
        return max(0, -delta)

    def hold_back(self, merchant_id: str, sku_id: str, units: int) -> None:
        sku = self.skus.get((merchant_id, sku_id))
        if sku is not None and units:
            sku.on_hand -= units

    def settle(self, merchant_id: str, sku_id: str, delta: int, held_back: int,
               now_ms: int, meta: tuple[str, int, int] | None = None) -> StockLevel:
        """A durable write added `delta` to on-hand (`held_back` of it is out already);
        `meta`: (name, price_minor, per_buyer_limit) of an upsert, creating a new SKU."""
        key = (merchant_id, sku_id)
        sku = self.skus.get(key)
        if sku is None:
            invariant(meta is not None, f"settling unknown SKU {sku_id}")
            assert meta is not None
            invariant(len(self.skus) < self._skus_max, "stock shard full of SKUs")
            sku = self.skus[key] = SkuState(name=meta[0], price_minor=meta[1])
        if meta is not None:
            sku.name, sku.price_minor, sku.per_buyer_limit = meta
        # Below reserved + sold only when memory already lagged (an earlier unknown
        # outcome): stay at the floor, which Postgres covers.
        sku.on_hand = max(sku.on_hand + delta + held_back, sku.reserved + sku.sold)
        return self.level(merchant_id, sku_id, now_ms)

    def level(self, merchant_id: str, sku_id: str, now_ms: int) -> StockLevel:
        sku = self._sku(merchant_id, sku_id)
        return StockLevel(merchant_id, sku_id, sku.name, sku.price_minor, sku.on_hand,
                          sku.on_hand - sku.reserved - sku.sold, sku.reserved, sku.sold,
                          sku.per_buyer_limit, now_ms)

    def levels(self, merchant_id: str, sku_ids: Iterable[str],
               now_ms: int) -> list[StockLevel | None]:
        return [self.level(merchant_id, sku_id, now_ms)
                if (merchant_id, sku_id) in self.skus else None for sku_id in sku_ids]

    # --- reservations (hot path) ----------------------------------------------------------

    def reserve(self, order_id: str, merchant_id: str, buyer_id: str,
                lines: Sequence[Line], expires_at_ms: int, now_ms: int,
                owner: int = 0, force: bool = False
                ) -> tuple[ResultCode, tuple[int, ...] | str | Refusal]:
        """Holds every line or none. Returns (OK, unit prices) or (code, message).

        Idempotent: reserving an order that already holds the same lines answers OK.
        """
        existing = self.reservations.get(order_id)
        if existing is not None:
            if existing.lines != tuple(lines):
                return ResultCode.IDEMPOTENCY_CONFLICT, "order id reserved with other lines"
            return ResultCode.OK, tuple(self.skus[(merchant_id, s)].price_minor for s, _ in lines)
        skus = self.skus
        if len(lines) == 1 and not force:  # most orders: one line, no lists
            (sku_id, quantity), = lines
            sku = skus.get((merchant_id, sku_id))
            if sku is None:
                return ResultCode.NOT_FOUND, f"unknown sku {sku_id}"
            left = sku.on_hand - sku.reserved - sku.sold - quantity
            if left < 0:
                if self._arriving((merchant_id, sku_id), now_ms):
                    return ResultCode.UNAVAILABLE, "units are moving here; retry"
                return ResultCode.OUT_OF_STOCK, _too_few(sku_id, sku, quantity)
            held = sku.held_by_buyer
            if sku.per_buyer_limit and (
                    held.get(buyer_id, 0) + quantity > sku.per_buyer_limit):
                return ResultCode.LIMIT_EXCEEDED, _over_limit(sku_id, sku, buyer_id)
            sku.reserved += quantity
            held[buyer_id] = held.get(buyer_id, 0) + quantity
            self.reservations[order_id] = Reservation(
                merchant_id, buyer_id, lines if type(lines) is tuple else tuple(lines),
                expires_at_ms, owner)
            self._expiry_heap.push(expires_at_ms, order_id)
            if left == 0 and BUCKET_SEPARATOR not in sku_id:
                self.changes.append(StockChange("sold_out", merchant_id, sku_id, 0, "",
                                                order_id, now_ms))
            return ResultCode.OK, (sku.price_minor,)
        states = []
        for sku_id, quantity in lines:
            sku = skus.get((merchant_id, sku_id))
            if sku is None:
                return ResultCode.NOT_FOUND, f"unknown sku {sku_id}"
            if force:
                pass  # restoring holds that were granted before a restart
            elif sku.on_hand - sku.reserved - sku.sold < quantity:
                if self._arriving((merchant_id, sku_id), now_ms):
                    return ResultCode.UNAVAILABLE, "units are moving here; retry"
                return ResultCode.OUT_OF_STOCK, _too_few(sku_id, sku, quantity)
            elif sku.per_buyer_limit and (
                    sku.held_by_buyer.get(buyer_id, 0) + quantity > sku.per_buyer_limit):
                return ResultCode.LIMIT_EXCEEDED, _over_limit(sku_id, sku, buyer_id)
            states.append(sku)
        for sku, (_, quantity) in zip(states, lines, strict=True):
            sku.reserved += quantity
            held = sku.held_by_buyer
            held[buyer_id] = held.get(buyer_id, 0) + quantity
        line_tuple = tuple(lines)
        self.reservations[order_id] = Reservation(merchant_id, buyer_id, line_tuple,
                                                  expires_at_ms, owner)
        self._expiry_heap.push(expires_at_ms, order_id)
        # A hold is derived from its order (nothing to journal here); only a sell-out is
        # news, announced as an event.
        for (sku_id, _), sku in zip(line_tuple, states, strict=True):
            if sku.on_hand - sku.reserved - sku.sold == 0 and not force and (
                    BUCKET_SEPARATOR not in sku_id):  # a bucket: the campaign tells
                self.changes.append(StockChange("sold_out", merchant_id, sku_id, 0, "",
                                                order_id, now_ms))
        return ResultCode.OK, tuple(sku.price_minor for sku in states)

    def check_out(self, order_id: str, merchant_id: str, buyer_id: str, lines: Sequence[Line],
                  expires_at_ms: int, now_ms: int, owner: int,
                  holds: Sequence[str]) -> tuple[ResultCode, tuple[int, ...] | str | Refusal]:
        """Reserves an order made from a cart in one step with releasing the cart's holds
        (`holds`), so the order gets the units they held. If the order is not reserved the
        holds are taken again as they were; if it is, its reservation remembers them, and
        abandoning it (``abandon``) or its expiry gives them back to the cart: the cart
        never loses its holds to an order that does not exist."""
        replaced = []
        for hold_id in holds:
            held = self.reservations.get(hold_id)
            if held is not None:
                replaced.append((hold_id, held.lines[0][0], held.lines[0][1],
                                 held.expires_at_ms))
                self.release(hold_id, now_ms)
        code, value = self.reserve(order_id, merchant_id, buyer_id, lines, expires_at_ms,
                                   now_ms, owner)
        reservation = self.reservations.get(order_id)
        if code is ResultCode.OK and reservation is not None:
            reservation.replaced += tuple(replaced)
        else:
            self._give_holds_back(merchant_id, buyer_id, owner, replaced, now_ms)
        return code, value

    def abandon(self, order_id: str, now_ms: int) -> bool:
        """Releases an order that was never placed (its reserve failed elsewhere, or its
        answer was lost); cart holds it took over go back to the cart."""
        reservation = self.reservations.get(order_id)
        released = self.release(order_id, now_ms, kind="abandoned")
        if reservation is not None:
            self._give_holds_back(reservation.merchant_id, reservation.buyer_id,
                                  reservation.owner, reservation.replaced, now_ms)
        return released

    def _give_holds_back(self, merchant_id: str, buyer_id: str, owner: int,
                         replaced: Sequence[tuple[str, str, int, int]], now_ms: int) -> None:
        """Cart holds an order took over, back to the cart as far as their units are free.
        Checked, not forced: a hold may have been larger than the order's line (a shrink
        that did not arrive), and units the order freed may have been taken since; a hold
        that does not fit is dropped (the cart's checkout looks for units again)."""
        for hold_id, sku_id, quantity, expires_at_ms in replaced:
            if expires_at_ms > now_ms:
                self.hold(hold_id, merchant_id, buyer_id, sku_id, quantity, expires_at_ms,
                          now_ms, owner)

    def hold(self, hold_id: str, merchant_id: str, buyer_id: str, sku_id: str, quantity: int,
             expires_at_ms: int, now_ms: int, owner: int = 0,
             force: bool = False) -> tuple[ResultCode, int | str | Refusal]:
        """Holds `quantity` units of one SKU under `hold_id` (a cart line), resizing an
        existing hold: only the difference must be available. 0 releases it. Returns
        (OK, unit price) or (code, message)."""
        existing = self.reservations.get(hold_id)
        if existing is not None and (existing.lines[0][0] != sku_id or quantity == 0):
            self.release(hold_id, now_ms)
            existing = None
        if quantity == 0:
            return ResultCode.OK, 0
        sku = self.skus.get((merchant_id, sku_id))
        if sku is None:
            return ResultCode.NOT_FOUND, f"unknown sku {sku_id}"
        delta = quantity - (existing.lines[0][1] if existing is not None else 0)
        if delta > 0 and not force:
            if sku.on_hand - sku.reserved - sku.sold < delta:
                return ResultCode.OUT_OF_STOCK, _too_few(sku_id, sku, delta)
            if sku.per_buyer_limit and (
                    sku.held_by_buyer.get(buyer_id, 0) + delta > sku.per_buyer_limit):
                return ResultCode.LIMIT_EXCEEDED, _over_limit(sku_id, sku, buyer_id)
        sku.reserved += delta
        if delta >= 0:
            sku.held_by_buyer[buyer_id] = sku.held_by_buyer.get(buyer_id, 0) + delta
        else:
            _give_back(sku, buyer_id, -delta)
        self.reservations[hold_id] = Reservation(merchant_id, buyer_id, ((sku_id, quantity),),
                                                 expires_at_ms, owner)
        self._expiry_heap.push(expires_at_ms, hold_id)
        self._log("reserved", (merchant_id, sku_id), delta, "cart", hold_id, now_ms)
        return ResultCode.OK, sku.price_minor

    @property
    def expiry_entries(self) -> int:
        """Entries of the hold-expiry heap: about the holds, at most twice."""
        return len(self._expiry_heap)

    def _expires_at(self, expires_at_ms: int, reservation_id: str) -> bool:
        reservation = self.reservations.get(reservation_id)
        return reservation is not None and reservation.expires_at_ms == expires_at_ms

    def withdraw(self, merchant_id: str, sku_id: str, units: int) -> int:
        """Takes `units` available units out of on-hand (0: every available unit), to move
        them elsewhere (a campaign's buckets). Returns how many; raises if too few."""
        sku = self._sku(merchant_id, sku_id)
        available = sku.on_hand - sku.reserved - sku.sold
        taken = available if units == 0 else units
        if taken > available or taken == 0:
            raise FailedPrecondition(f"sku {sku_id} has {available} units available",
                                     sku_id=sku_id)
        sku.on_hand -= taken
        return taken

    def expect(self, merchant_id: str, sku_id: str, units: int, until_ms: int) -> None:
        """Units are about to move here (``deposit`` follows, or `until_ms` passes)."""
        self.incoming[(merchant_id, sku_id)] = (units, until_ms)

    def _arriving(self, key: SkuKey, now_ms: int) -> bool:
        expected = self.incoming.get(key)
        if expected is None:
            return False
        if expected[1] <= now_ms:
            del self.incoming[key]
            return False
        return True

    def deposit(self, merchant_id: str, sku_id: str, name: str, price_minor: int,
                units: int) -> None:
        """Adds units moved here (creating the counter on first use: a campaign bucket)."""
        self.incoming.pop((merchant_id, sku_id), None)
        sku = self.skus.get((merchant_id, sku_id))
        if sku is None:
            invariant(len(self.skus) < self._skus_max, "stock shard full of SKUs")
            sku = self.skus[(merchant_id, sku_id)] = SkuState(name, price_minor)
        sku.on_hand += units

    def commit(self, order_id: str, now_ms: int) -> tuple[ResultCode, str]:
        """Turns a hold into a sale and forgets the hold."""
        reservation = self.reservations.pop(order_id, None)
        if reservation is None:
            if self._last(order_id) == "committed":
                return ResultCode.OK, ""  # a repeat
            return ResultCode.NOT_FOUND, (f"order {order_id} holds no stock here (its hold"
                                          " lapsed): it cannot be paid for")
        self._remember(order_id, "committed", reservation)
        sold = self.sold_by_owner.setdefault(reservation.owner, {})
        for sku_id, quantity in reservation.lines:
            sku = self.skus[(reservation.merchant_id, sku_id)]
            sku.reserved -= quantity
            sku.sold += quantity
            key = (reservation.merchant_id, sku_id, reservation.buyer_id)
            sold[key] = sold.get(key, 0) + quantity
            self._log("committed", (reservation.merchant_id, sku_id), quantity, "", order_id,
                      now_ms)
        return ResultCode.OK, ""

    def release(self, order_id: str, now_ms: int, kind: str = "released") -> bool:
        """Returns a hold to available. Idempotent: False when there was none."""
        reservation = self.reservations.pop(order_id, None)
        if reservation is None:
            if self._last(order_id) != "committed":
                return False
            sale = self.settled[order_id][1]  # sold, but the order never became paid
            self._remember(order_id, kind, sale)
            self._return(order_id, sale, now_ms, kind)
            return True
        self._remember(order_id, kind, reservation)
        for sku_id, quantity in reservation.lines:
            sku = self.skus[(reservation.merchant_id, sku_id)]
            sku.reserved -= quantity
            _give_back(sku, reservation.buyer_id, quantity)
            self._log(kind, (reservation.merchant_id, sku_id), quantity, "", order_id, now_ms)
        return True

    def return_sold(self, order_id: str, merchant_id: str, buyer_id: str,
                    lines: Sequence[Line], now_ms: int, owner: int = 0) -> None:
        """A refund: sold units of a paid order go back to available (once)."""
        if self._last(order_id) == "returned":
            return  # a repeat
        sale = Reservation(merchant_id, buyer_id, tuple(lines), 0, owner)
        self._remember(order_id, "returned", sale)
        self._return(order_id, sale, now_ms, "refunded")

    def _return(self, order_id: str, sale: Reservation, now_ms: int, kind: str) -> None:
        """Sold units of `sale` go back to available."""
        merchant_id, buyer_id = sale.merchant_id, sale.buyer_id
        sold = self.sold_by_owner.get(sale.owner, {})
        for sku_id, quantity in sale.lines:
            sku = self.skus.get((merchant_id, sku_id))
            key = (merchant_id, sku_id, buyer_id)
            invariant(sku is not None and sold.get(key, 0) >= quantity,
                      "refund of units never sold")
            assert sku is not None
            sku.sold -= quantity
            _give_back(sku, buyer_id, quantity)
            if sold[key] == quantity:
                del sold[key]
            else:
                sold[key] -= quantity
            self._log(kind, (merchant_id, sku_id), quantity, "", order_id, now_ms)

    def _last(self, order_id: str) -> str | None:
        done = self.settled.get(order_id)
        return done[0] if done is not None else None

    def _remember(self, order_id: str, what: str, reservation: Reservation) -> None:
        self.settled[order_id] = (what, reservation)
        self.settled.move_to_end(order_id)
        if len(self.settled) > self._settled_max:
            self.settled.popitem(last=False)

    def expire(self, now_ms: int, items_max: int) -> list[str]:
        """Releases holds whose expiry has passed; returns their orders."""
        expired: list[str] = []
        heap = self._expiry_heap
        while heap.due(now_ms) and len(expired) < items_max:
            expires_at_ms, order_id = heap.pop()
            reservation = self.reservations.get(order_id)
            if reservation is not None and reservation.expires_at_ms == expires_at_ms:
                self.release(order_id, now_ms, kind="expired")
                expired.append(order_id)
                # An order never confirmed to its shard (a checkout whose answer was lost
                # and whose abandon did not arrive): its cart still counts on the holds.
                self._give_holds_back(reservation.merchant_id, reservation.buyer_id,
                                      reservation.owner, reservation.replaced, now_ms)
        return expired

    # --- recovery -------------------------------------------------------------------------

    def restore_sku(self, merchant_id: str, sku_id: str, name: str, price_minor: int,
                    per_buyer_limit: int, on_hand: int) -> None:
        self.skus[(merchant_id, sku_id)] = SkuState(name, price_minor, on_hand, 0, 0,
                                                    per_buyer_limit)

    def replace_owned(self, owner: int, holds: Iterable[HandedHold],
                      sold: Iterable[tuple[str, str, str, int]] | None,
                      now_ms: int) -> int:
        """Replaces every hold (and, when `sold` is given, every sale) of order shard
        `owner` with what that shard knows: holds (order_id, merchant_id, buyer_id, lines,
        expires_at_ms) and sales (merchant_id, sku_id, buyer_id, units). Holds are
        restored as ``restore_holds`` does. Returns how many holds were dropped."""
        return self.replace_all_owned([(owner, holds, sold)], now_ms)

    def replace_all_owned(self, states: Iterable[tuple[
            int, Iterable[HandedHold], Iterable[tuple[str, str, str, int]] | None]],
            now_ms: int) -> int:
        """``replace_owned`` for several order shards at once, (owner, holds, sold) each:
        every shard's sales first, then every hold by its expiry (``restore_holds``).
        Returns how many holds were dropped."""
        dropped, holds = 0, list[tuple[int, HandedHold]]()
        for owner, owned_holds, sold in states:
            dropped += self.drop_owned(owner, sold is not None, now_ms)
            if sold is not None:
                self.restore_sales(owner, sold)
            holds.extend((owner, hold) for hold in owned_holds)
        self.restore_holds(holds, now_ms)
        return dropped

    def unknown_skus(self, states: Iterable[tuple[
            int, Iterable[HandedHold], Iterable[tuple[str, str, str, int]] | None]]
                     ) -> set[tuple[str, str]]:
        """SKUs named by handed-over holds or sales (as ``replace_all_owned`` takes them)
        that this ledger does not hold: the order shard routes by a table this shard has
        not loaded (yet). Nothing may be replaced then."""
        named: set[tuple[str, str]] = set()
        for _, holds, sold in states:
            for _, merchant_id, _, lines, _ in holds:
                named.update((merchant_id, sku_id) for sku_id, _ in lines)
            for merchant_id, sku_id, _, _ in sold or ():
                named.add((merchant_id, sku_id))
        return named - self.skus.keys()

    def drop_owned(self, owner: int, with_sales: bool, now_ms: int) -> int:
        """Forgets every hold (and, `with_sales`, every sale) of order shard `owner`, whose
        state is about to replace them. Returns how many holds were dropped."""
        dropped = [order_id for order_id, r in self.reservations.items() if r.owner == owner]
        for order_id in dropped:
            self.release(order_id, now_ms, kind="resynced")
        for order_id in [o for o, (_, r) in self.settled.items() if r.owner == owner]:
            del self.settled[order_id]  # the owner's state replaces what they did
        if with_sales:
            for (merchant_id, sku_id, buyer_id), units in self.sold_by_owner.pop(owner,
                                                                                 {}).items():
                sku = self.skus[(merchant_id, sku_id)]
                sku.sold -= units
                _give_back(sku, buyer_id, units)
        return len(dropped)

    def restore_sales(self, owner: int, sold: Iterable[tuple[str, str, str, int]]) -> None:
        """Counts the sales of order shard `owner` (merchant_id, sku_id, buyer_id, units):
        units paid for are restored whatever else is counted (a sale past on-hand is an
        oversell, which ``check_invariants`` refuses)."""
        owned = self.sold_by_owner.setdefault(owner, {})
        for merchant_id, sku_id, buyer_id, units in sold:
            sold_sku = self.skus.get((merchant_id, sku_id))
            invariant(sold_sku is not None, f"sale of unknown sku {sku_id}")
            assert sold_sku is not None
            sku = sold_sku
            sku.sold += units
            sku.held_by_buyer[buyer_id] = sku.held_by_buyer.get(buyer_id, 0) + units
            key = (merchant_id, sku_id, buyer_id)
            owned[key] = owned.get(key, 0) + units

    def restore_holds(self, holds: Iterable[tuple[int, HandedHold]],
                      now_ms: int) -> list[str]:
        """Restores holds that order shards granted before a restart: (owner, (order_id,
        merchant_id, buyer_id, lines, expires_at_ms)). Answers the ids of those not restored
        because they lapsed.

        A hold past its expiry is not restored: this shard freed it (or its sweep would
        now), its units may have been sold or moved since, and its order can no longer be
        paid (the deadline comes before the hold's expiry). Nor is a hold whose units are
        no longer there: that happens only when the clock stepped back after this shard
        freed holds at their expiry (their orders look within their deadline again), and
        counting it would hold units twice. Later expiries are restored first (the holds
        granted last, which took the units such a lapsed hold left). A hold not restored
        cannot be paid for (the stock shard refuses the sale) and its order expires at its
        deadline; an oversell is never the way out."""
        lapsed = []
        for owner, (order_id, merchant_id, buyer_id, lines, expires_at_ms) in sorted(
                holds, key=lambda hold: -hold[1][4]):
            if expires_at_ms <= now_ms:
                lapsed.append(order_id)
                continue
            if not self._fits(merchant_id, lines):
                lapsed.append(order_id)
                self.holds_without_units += 1
                continue
            code, _ = self.reserve(order_id, merchant_id, buyer_id, lines, expires_at_ms,
                                   now_ms, owner, force=True)
            invariant(code is ResultCode.OK, f"hold of {order_id} cannot be restored: {code}")
        return lapsed

    def _fits(self, merchant_id: str, lines: Sequence[Line]) -> bool:
        """Are `lines` still available (a SKU unknown here is left to ``reserve``)?"""
        wanted: dict[str, int] = {}
        for sku_id, quantity in lines:
            wanted[sku_id] = wanted.get(sku_id, 0) + quantity
        for sku_id, quantity in wanted.items():
            sku = self.skus.get((merchant_id, sku_id))
            if sku is not None and sku.on_hand - sku.reserved - sku.sold < quantity:
                return False
        return True

    def drain_changes(self) -> list[StockChange]:
        changes, self.changes = self.changes, []
        return changes

    # --- invariants -----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Counters equal what the holds imply, and nothing is oversold."""
        reserved: dict[SkuKey, int] = {}
        for reservation in self.reservations.values():
            for sku_id, quantity in reservation.lines:
                key = (reservation.merchant_id, sku_id)
                reserved[key] = reserved.get(key, 0) + quantity
        sold: dict[SkuKey, int] = {}
        for owned in self.sold_by_owner.values():
            for (merchant_id, sku_id, _), units in owned.items():
                sold[(merchant_id, sku_id)] = sold.get((merchant_id, sku_id), 0) + units
        for key, sku in self.skus.items():
            invariant(sku.reserved == reserved.get(key, 0), f"{key}: reserved counter drifted")
            invariant(sku.sold == sold.get(key, 0), f"{key}: sold counter drifted")
            invariant(sku.reserved + sku.sold <= sku.on_hand, f"{key}: oversold")
            invariant(sum(sku.held_by_buyer.values()) == sku.reserved + sku.sold,
                      f"{key}: per-buyer counts drifted")

    # --- helpers --------------------------------------------------------------------------

    def _sku(self, merchant_id: str, sku_id: str) -> SkuState:
        sku = self.skus.get((merchant_id, sku_id))
        if sku is None:
            raise NotFound(f"unknown sku {sku_id}", sku_id=sku_id)
        return sku

    def _log(self, kind: str, key: SkuKey, delta: int, reason: str, order_id: str,
             now_ms: int) -> None:
        self.changes.append(StockChange(kind, key[0], key[1], delta, reason, order_id, now_ms))


def _give_back(sku: SkuState, buyer_id: str, quantity: int) -> None:
    left = sku.held_by_buyer.get(buyer_id, 0) - quantity
    if left > 0:
        sku.held_by_buyer[buyer_id] = left
    else:
        sku.held_by_buyer.pop(buyer_id, None)


def _too_few(counter: str, sku: SkuState, wanted: int) -> Refusal:
    """OUT_OF_STOCK, with what a client needs to act on it. A campaign bucket is named by
    its SKU and campaign (the bucket itself is internal); its availability is one
    bucket's, not the campaign's, so it is not given."""
    sku_id, sep, rest = counter.partition(BUCKET_SEPARATOR)
    if sep:
        campaign_id = rest.partition(BUCKET_SEPARATOR)[0]
        return refusal(f"sku {sku_id} has too few units available in campaign {campaign_id}",
                       sku_id=sku_id, campaign_id=campaign_id, requested=str(wanted))
    available = max(0, sku.on_hand - sku.reserved - sku.sold)
    return refusal(f"sku {sku_id} has too few units available ({available})",
                   sku_id=sku_id, available=str(available), requested=str(wanted))


def _over_limit(sku_id: str, sku: SkuState, buyer_id: str) -> Refusal:
    return refusal(f"sku {sku_id} allows {sku.per_buyer_limit} units per buyer",
                   sku_id=sku_id, limit=str(sku.per_buyer_limit),
                   held=str(sku.held_by_buyer.get(buyer_id, 0)))
