"""Stock ledger of one shard: on-hand, reserved and sold per SKU, and the reservations
that explain them.

    available = on_hand - reserved - sold >= 0          (no oversell)
    reserved  = sum of quantities of uncommitted reservations
    sold      = sum of quantities of committed reservations

A reservation belongs to one order and holds all of that order's lines on this shard,
all or nothing. ``commit`` turns it into a sale (payment), ``release`` returns it
(cancel, expiry, refund), and a reservation nobody commits returns by itself at its
expiry. Per-buyer limits count the units a buyer holds in live reservations and sales
(tracked for every SKU, so a limit set later counts earlier purchases).

Hot-path methods return result codes instead of raising: a batch of a thousand orders
is answered per item.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.errors import FailedPrecondition, NotFound, ResultCode, invariant

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


class StockChange(NamedTuple):
    """A ledger entry, journaled for persistence and events."""

    kind: str  # "adjusted" | "reserved" | "committed" | "released" | "expired"
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
    committed: bool = False


class StockLedger:
    def __init__(self, skus_max: int = 2_000_000) -> None:
        self.skus: dict[SkuKey, SkuState] = {}
        self.reservations: dict[str, Reservation] = {}
        self.changes: list[StockChange] = []
        self._skus_max = skus_max
        self._expiry_heap: list[tuple[int, str]] = []

    # --- catalogue --------------------------------------------------------------------------

    def upsert_sku(self, merchant_id: str, sku_id: str, name: str, price_minor: int,
                   on_hand: int, per_buyer_limit: int, now_ms: int) -> StockLevel:
        key = (merchant_id, sku_id)
        sku = self.skus.get(key)
        if sku is None:
            if len(self.skus) >= self._skus_max:
                raise FailedPrecondition("this stock shard holds its maximum number of SKUs")
            sku = self.skus[key] = SkuState(name=name, price_minor=price_minor)
        if on_hand < sku.reserved + sku.sold:
            raise FailedPrecondition(
                f"on_hand {on_hand} is below reserved + sold ({sku.reserved + sku.sold})",
                sku_id=sku_id)
        sku.name, sku.price_minor, sku.per_buyer_limit = name, price_minor, per_buyer_limit
        if on_hand != sku.on_hand:
            self._log("adjusted", key, on_hand - sku.on_hand, "upsert", "", now_ms)
            sku.on_hand = on_hand
        return self.level(merchant_id, sku_id, now_ms)

    def adjust(self, merchant_id: str, sku_id: str, delta: int, reason: str,
               now_ms: int) -> StockLevel:
        sku = self._sku(merchant_id, sku_id)
        if sku.on_hand + delta < sku.reserved + sku.sold:
            raise FailedPrecondition(
                f"on_hand would fall below reserved + sold ({sku.reserved + sku.sold})",
                sku_id=sku_id)
        sku.on_hand += delta
        self._log("adjusted", (merchant_id, sku_id), delta, reason, "", now_ms)
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
                lines: Sequence[Line], expires_at_ms: int,
                now_ms: int) -> tuple[ResultCode, tuple[int, ...] | str]:
        """Holds every line or none. Returns (OK, unit prices) or (code, message).

        Idempotent: reserving an order that already holds the same lines answers OK.
        """
        existing = self.reservations.get(order_id)
        if existing is not None:
            if existing.lines != tuple(lines):
                return ResultCode.IDEMPOTENCY_CONFLICT, "order id reserved with other lines"
            return ResultCode.OK, tuple(self.skus[(merchant_id, s)].price_minor for s, _ in lines)
        skus = self.skus
        states = []
        for sku_id, quantity in lines:
            sku = skus.get((merchant_id, sku_id))
            if sku is None:
                return ResultCode.NOT_FOUND, f"unknown sku {sku_id}"
            if sku.on_hand - sku.reserved - sku.sold < quantity:
                return ResultCode.OUT_OF_STOCK, f"sku {sku_id} has too few units available"
            if sku.per_buyer_limit and (
                    sku.held_by_buyer.get(buyer_id, 0) + quantity > sku.per_buyer_limit):
                return ResultCode.LIMIT_EXCEEDED, (
                    f"sku {sku_id} allows {sku.per_buyer_limit} units per buyer")
            states.append(sku)
        for sku, (_, quantity) in zip(states, lines, strict=True):
            sku.reserved += quantity
            held = sku.held_by_buyer
            held[buyer_id] = held.get(buyer_id, 0) + quantity
        line_tuple = tuple(lines)
        self.reservations[order_id] = Reservation(merchant_id, buyer_id, line_tuple, expires_at_ms)
        heapq.heappush(self._expiry_heap, (expires_at_ms, order_id))
        for sku_id, quantity in line_tuple:
            self.changes.append(StockChange("reserved", merchant_id, sku_id, quantity, "",
                                            order_id, now_ms))
        return ResultCode.OK, tuple(sku.price_minor for sku in states)

    def commit(self, order_id: str, now_ms: int) -> tuple[ResultCode, str]:
        """Turns a reservation into a sale. Idempotent."""
        reservation = self.reservations.get(order_id)
        if reservation is None:
            return ResultCode.NOT_FOUND, f"no reservation for order {order_id}"
        if not reservation.committed:
            reservation.committed = True
            for sku_id, quantity in reservation.lines:
                sku = self.skus[(reservation.merchant_id, sku_id)]
                sku.reserved -= quantity
                sku.sold += quantity
                self._log("committed", (reservation.merchant_id, sku_id), quantity, "",
                          order_id, now_ms)
        return ResultCode.OK, ""

    def release(self, order_id: str, now_ms: int, kind: str = "released") -> bool:
        """Returns the units of a reservation or sale to available. Idempotent: False when
        there was nothing to release."""
        reservation = self.reservations.pop(order_id, None)
        if reservation is None:
            return False
        for sku_id, quantity in reservation.lines:
            sku = self.skus[(reservation.merchant_id, sku_id)]
            if reservation.committed:
                sku.sold -= quantity
            else:
                sku.reserved -= quantity
            left = sku.held_by_buyer.get(reservation.buyer_id, 0) - quantity
            if left > 0:
                sku.held_by_buyer[reservation.buyer_id] = left
            else:
                sku.held_by_buyer.pop(reservation.buyer_id, None)
            self._log(kind, (reservation.merchant_id, sku_id), quantity, "", order_id, now_ms)
        return True

    def expire(self, now_ms: int, items_max: int) -> list[str]:
        """Releases uncommitted reservations whose expiry has passed; returns their orders."""
        expired: list[str] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now_ms and len(expired) < items_max:
            expires_at_ms, order_id = heapq.heappop(heap)
            reservation = self.reservations.get(order_id)
            if (reservation is not None and not reservation.committed
                    and reservation.expires_at_ms == expires_at_ms):
                self.release(order_id, now_ms, kind="expired")
                expired.append(order_id)
        return expired

    def drain_changes(self) -> list[StockChange]:
        changes, self.changes = self.changes, []
        return changes

    # --- invariants -----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Counters equal what the reservations imply, and nothing is oversold."""
        reserved: dict[SkuKey, int] = {}
        sold: dict[SkuKey, int] = {}
        held: dict[SkuKey, dict[str, int]] = {}
        for reservation in self.reservations.values():
            target = sold if reservation.committed else reserved
            for sku_id, quantity in reservation.lines:
                key = (reservation.merchant_id, sku_id)
                target[key] = target.get(key, 0) + quantity
                buyers = held.setdefault(key, {})
                buyers[reservation.buyer_id] = buyers.get(reservation.buyer_id, 0) + quantity
        for key, sku in self.skus.items():
            invariant(sku.reserved == reserved.get(key, 0), f"{key}: reserved counter drifted")
            invariant(sku.sold == sold.get(key, 0), f"{key}: sold counter drifted")
            invariant(0 <= sku.reserved + sku.sold <= sku.on_hand, f"{key}: oversold")
            invariant(sku.held_by_buyer == held.get(key, {}), f"{key}: per-buyer counts drifted")

    # --- helpers --------------------------------------------------------------------------

    def _sku(self, merchant_id: str, sku_id: str) -> SkuState:
        sku = self.skus.get((merchant_id, sku_id))
        if sku is None:
            raise NotFound(f"unknown sku {sku_id}", sku_id=sku_id)
        return sku

    def _log(self, kind: str, key: SkuKey, delta: int, reason: str, order_id: str,
             now_ms: int) -> None:
        self.changes.append(StockChange(kind, key[0], key[1], delta, reason, order_id, now_ms))
