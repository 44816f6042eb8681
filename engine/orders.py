"""Orders of one shard: the state machine, idempotency keys and payment deadlines.

    RESERVED ──pay──▶ PAID ──fulfil──▶ FULFILLED
       │                │
       ├──cancel──▶ CANCELLED ◀──cancel (refunded)──┘
       └──expire──▶ EXPIRED

Placing an order is two-phase because its stock lives on other shards:
``begin`` settles idempotency and hands out an order id; the caller reserves stock;
``complete`` (stock held) or ``abandon`` (refused) finishes it. Every transition bumps the
order's sequence number and is journaled in ``changes``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Container, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from flashtx.engine.errors import InvalidTransition, NotFound, ResultCode, invariant
from flashtx.engine.expiry import ExpiryHeap

__all__ = [
    "Begin",
    "Order",
    "OrderBook",
    "OrderChange",
    "OrderSnapshot",
    "OrderStatus",
    "PlaceResults",
    "StockAction",
    "new_order_id",
    "order_slot",
    "transition",
]

Line = tuple[str, int]  # (sku_id, quantity)
PricedLine = tuple[str, int, int]  # (sku_id, quantity, unit_price_minor)


class OrderStatus(IntEnum):
    """Numbers equal flashtx.v1.OrderStatus."""

    RESERVED = 1
    PAID = 2
    FULFILLED = 3
    CANCELLED = 4
    EXPIRED = 5


class StockAction(IntEnum):
    """What a transition asks of the stock shards holding the order's lines."""

    NONE = 0
    COMMIT = 1  # the hold becomes a sale (payment)
    RELEASE = 2  # the hold returns to available (cancel, expiry)
    RETURN = 3  # the sale returns to available (refund)


# (from status, event) -> (to status, stock action). Anything else is refused.
_TRANSITIONS: dict[tuple[OrderStatus, str], tuple[OrderStatus, StockAction]] = {
    (OrderStatus.RESERVED, "pay"): (OrderStatus.PAID, StockAction.COMMIT),
    (OrderStatus.RESERVED, "cancel"): (OrderStatus.CANCELLED, StockAction.RELEASE),
    (OrderStatus.RESERVED, "expire"): (OrderStatus.EXPIRED, StockAction.RELEASE),
    (OrderStatus.PAID, "fulfil"): (OrderStatus.FULFILLED, StockAction.NONE),
    (OrderStatus.PAID, "cancel"): (OrderStatus.CANCELLED, StockAction.RETURN),
}
FINISHED = frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED})
# Repeating a step that already happened answers the order as it is.
_ALREADY = {("pay", OrderStatus.PAID), ("cancel", OrderStatus.CANCELLED),
            ("fulfil", OrderStatus.FULFILLED), ("expire", OrderStatus.EXPIRED)}


def transition(status: OrderStatus, event: str) -> tuple[OrderStatus, StockAction]:
    """The state machine as a pure function. Raises InvalidTransition."""
    step = _TRANSITIONS.get((status, event))
    if step is None:
        raise InvalidTransition(f"cannot {event} an order that is {status.name}",
                                status=status.name, event=event)
    return step


class OrderSnapshot(NamedTuple):
    """An order as it travels between actors and to clients."""

    order_id: str
    merchant_id: str
    buyer_id: str
    idempotency_key: str
    lines: tuple[PricedLine, ...]
    status: int
    total_minor: int
    created_at_ms: int
    payment_deadline_ms: int
    sequence: int
    refunded: bool
    updated_at_ms: int
    key_id: str = ""  # the API key that placed it
    campaign_id: str = ""
    # Per line, the stock counter it holds or bought from ("" = the SKU itself; a campaign
    # bucket's id otherwise). Internal: never shown to clients.
    stock_keys: tuple[str, ...] = ()
    currency: str = ""  # ISO 4217; "" for orders placed before currencies were recorded
    payment_reference: str = ""  # the paying PayOrder's


_CODES = {int(code): code for code in ResultCode}


class PlaceResults(list[tuple[ResultCode, Any]]):
    """The answers to a batch of placements, one per order in order: (OK or REPLAYED,
    OrderSnapshot) or (code, reason: str or DomainError).

    Crosses actor boundaries as two plain columns (codes, rows): pickling a batch makes
    one call into the pickler's Python hooks instead of one per order (measured: 3.1 µs
    of CPU per order for a list of named tuples, 0.5 µs as plain rows)."""

    def __reduce__(self) -> tuple[Any, ...]:
        codes = [int(code) for code, _ in self]
        rows = [tuple(value) if isinstance(value, OrderSnapshot) else value
                for _, value in self]
        return (_rebuild_place_results, (codes, rows))


_REPLAYED = int(ResultCode.REPLAYED)  # OK and REPLAYED carry an order, the others a reason


def _rebuild_place_results(codes: list[int], rows: list[Any]) -> PlaceResults:
    make = OrderSnapshot._make
    return PlaceResults((_CODES[code], make(row) if code <= _REPLAYED else row)
                        for code, row in zip(codes, rows, strict=True))


def new_order_id(slot: int, epoch: str, counter: int) -> str:
    """An order id: its slot (4 hex digits: every order of a buyer sits on the same order
    shard, found from the id alone), the shard incarnation's epoch, a counter."""
    return f"{slot:04x}{epoch}{counter:09x}"


def order_slot(order_id: str) -> int:
    """The slot an order id names; NotFound when it names none."""
    head = order_id[:4]
    if len(head) == 4 and head.isascii() and head.isalnum():  # no sign, space or "_"
        try:
            return int(head, 16)
        except ValueError:
            pass
    raise NotFound(f"no order {order_id}", order_id=order_id)


class OrderChange(NamedTuple):
    """A journaled transition: what persistence and the outbox record."""

    order_id: str
    merchant_id: str
    sequence: int
    status: int
    event: str
    at_ms: int


_new_snapshot = tuple.__new__  # a named tuple from a whole tuple: no argument parsing


def _placed_change(order_id: str, merchant_id: str, at_ms: int) -> OrderChange:
    """The change that places an order (sequence 1, RESERVED)."""
    return _new_snapshot(OrderChange, (order_id, merchant_id, 1, 1, "placed", at_ms))


@dataclass(slots=True)
class Order:
    order_id: str
    merchant_id: str
    buyer_id: str
    idempotency_key: str
    lines: tuple[PricedLine, ...]
    status: OrderStatus
    total_minor: int
    created_at_ms: int
    payment_deadline_ms: int
    sequence: int = 1
    refunded: bool = False
    updated_at_ms: int = 0
    key_id: str = ""
    campaign_id: str = ""
    stock_keys: tuple[str, ...] = ()
    currency: str = ""
    payment_reference: str = ""

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(self.order_id, self.merchant_id, self.buyer_id,
                             self.idempotency_key, self.lines, int(self.status),
                             self.total_minor, self.created_at_ms, self.payment_deadline_ms,
                             self.sequence, self.refunded, self.updated_at_ms, self.key_id,
                             self.campaign_id, self.stock_keys, self.currency,
                             self.payment_reference)

    @property
    def unpriced_lines(self) -> tuple[Line, ...]:
        return tuple((sku_id, quantity) for sku_id, quantity, _ in self.lines)

    @property
    def stock_lines(self) -> tuple[Line, ...]:
        """The lines as the stock shards know them (campaign lines: by bucket)."""
        if not self.stock_keys:
            return self.unpriced_lines
        return tuple((key or sku_id, quantity)
                     for (sku_id, quantity, _), key in zip(self.lines, self.stock_keys,
                                                            strict=True))

    @property
    def live(self) -> bool:
        """Holds or bought its stock (not cancelled or expired)."""
        return self.status not in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)


class Begin(NamedTuple):
    """Outcome of ``OrderBook.begin``: exactly one of the fields tells what to do."""

    code: ResultCode  # OK: reserve stock for order_id; REPLAYED: answer `order`;
    order_id: str  # IDEMPOTENCY_CONFLICT: refuse; UNAVAILABLE: wait for `order_id`
    order: OrderSnapshot | None
    message: str


KEY_UNCHECKED = "the idempotency key is being looked up; retry with the same key"
IdempotencyKey = tuple[str, str]  # (merchant_id, idempotency_key)
Fingerprint = tuple[str, tuple[Line, ...], str]  # (buyer_id, lines, campaign_id)


MERCHANT_ORDERS_FULL = ("this merchant holds its quota of orders on this order shard"
                        " (merchant_orders_per_shard_max)")


class OrderBook:
    def __init__(self, epoch: str, orders_max: int = 5_000_000,
                 keys_max: int = 5_000_000, merchant_orders_max: int = 5_000_000) -> None:
        self.orders: dict[str, Order] = {}
        # Orders in memory per merchant, and its quota of them (one merchant cannot fill
        # the shard for the others).
        self.per_merchant: dict[str, int] = {}
        self._merchant_orders_max = merchant_orders_max
        self.changes: list[OrderChange] = []
        self._epoch = epoch
        self._counter = 0
        self._orders_max = orders_max
        self._keys_max = keys_max
        self._by_key: dict[IdempotencyKey, str] = {}
        self._pending: dict[IdempotencyKey, tuple[str, Fingerprint]] = {}
        self._by_buyer: dict[tuple[str, str], list[str]] = {}
        self._deadlines: ExpiryHeap[str] = ExpiryHeap(self._reserved_until,
                                                      lambda: len(self.orders))
        # Orders that left memory: their keys within the idempotency window (order id and
        # a hash of what was ordered, to tell a replay from a conflict), oldest first.
        self._retained: dict[IdempotencyKey, tuple[str, int]] = {}
        self._retained_by_age: ExpiryHeap[IdempotencyKey] = ExpiryHeap(  # by placed at
            lambda _, key: key in self._retained, lambda: len(self._retained))
        self._finished: deque[tuple[int, str]] = deque()  # (finished at, order_id)
        # True once a key may be known to the database alone (it left memory, or was
        # never loaded): a key not in memory is then looked up before it places an order.
        self.forgot = False
        # True once some order may be in the database alone: reads look there too.
        self.partial = False
        self.evicted = 0
        self.evicting = False  # finished orders are queued to leave memory (a database)
        self.discarded = 0  # orders that left without a trace (``discard``), ever

    def _left(self, merchant_id: str) -> None:
        left = self.per_merchant[merchant_id] - 1
        if left:
            self.per_merchant[merchant_id] = left
        else:
            del self.per_merchant[merchant_id]

    @property
    def expiry_entries(self) -> int:
        """Entries of the payment-deadline and retained-key heaps: about the orders and
        keys held, at most twice."""
        return len(self._deadlines) + len(self._retained_by_age)

    def _reserved_until(self, deadline_ms: int, order_id: str) -> bool:
        order = self.orders.get(order_id)
        return (order is not None and order.status == OrderStatus.RESERVED
                and order.payment_deadline_ms == deadline_ms)

    # --- placing ---------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """Part of every order id this book makes: one per shard incarnation."""
        return self._epoch

    def begin(self, merchant_id: str, idempotency_key: str, buyer_id: str,
              lines: tuple[Line, ...], slot: int, campaign_id: str = "",
              looked_up: bool = False) -> Begin:
        """`looked_up`: the database was asked for the key since it was last unknown here
        (needed once `forgot` is set; else the answer is UNAVAILABLE with no order id)."""
        key = (merchant_id, idempotency_key)
        fingerprint = (buyer_id, lines, campaign_id)
        order_id = self._by_key.get(key)
        if order_id is not None:
            order = self.orders[order_id]
            if (order.buyer_id, order.unpriced_lines, order.campaign_id) != fingerprint:
                return Begin(ResultCode.IDEMPOTENCY_CONFLICT, order_id, None,
                             "idempotency key was used with a different order")
            return Begin(ResultCode.REPLAYED, order_id, order.snapshot(), "")
        if self._retained:
            retained = self._retained.get(key)
            if retained is not None:  # its order left memory: the caller reads it back
                if retained[1] != hash(fingerprint):
                    return Begin(ResultCode.IDEMPOTENCY_CONFLICT, retained[0], None,
                                 "idempotency key was used with a different order")
                return Begin(ResultCode.REPLAYED, retained[0], None, "")
        pending = self._pending.get(key)
        if pending is not None:
            if pending[1] != fingerprint:
                return Begin(ResultCode.IDEMPOTENCY_CONFLICT, pending[0], None,
                             "idempotency key is in use by a different order")
            return Begin(ResultCode.UNAVAILABLE, pending[0], None, "order is being placed")
        if self.forgot and not looked_up:
            return Begin(ResultCode.UNAVAILABLE, "", None, KEY_UNCHECKED)
        if len(self.orders) + len(self._pending) >= self._orders_max:
            return Begin(ResultCode.OVERLOADED, "", None, "order shard is full")
        if self.per_merchant.get(merchant_id, 0) >= self._merchant_orders_max:
            return Begin(ResultCode.OVERLOADED, "", None, MERCHANT_ORDERS_FULL)
        if len(self._by_key) + len(self._pending) >= self._keys_max:
            return Begin(ResultCode.OVERLOADED, "", None,
                         "order shard holds its maximum of idempotency keys")
        self._counter += 1
        order_id = new_order_id(slot, self._epoch, self._counter)
        self._pending[key] = (order_id, fingerprint)
        return Begin(ResultCode.OK, order_id, None, "")

    def complete(self, order_id: str, merchant_id: str, idempotency_key: str, buyer_id: str,
                 lines: Sequence[Line], prices: Sequence[int], now_ms: int,
                 payment_deadline_ms: int, key_id: str = "", campaign_id: str = "",
                 stock_keys: tuple[str, ...] = (), currency: str = "") -> OrderSnapshot:
        """Stock is held: the order exists, RESERVED, from now on."""
        key = (merchant_id, idempotency_key)
        pending = self._pending.pop(key, None)
        invariant(pending is not None and pending[0] == order_id, "complete without begin")
        if len(lines) == 1:  # most orders: no generator
            (sku_id, quantity), = lines
            price = prices[0]
            priced: tuple[PricedLine, ...] = ((sku_id, quantity, price),)
            total = quantity * price
        else:
            invariant(len(lines) == len(prices), "one price per line")
            priced = tuple((sku_id, quantity, price)
                           for (sku_id, quantity), price in zip(lines, prices, strict=True))
            total = sum(q * p for _, q, p in priced)
        order = Order(order_id, merchant_id, buyer_id, idempotency_key, priced,
                      OrderStatus.RESERVED, total, now_ms, payment_deadline_ms, 1, False,
                      now_ms, key_id, campaign_id, stock_keys, currency)
        # As _add does, inline (the hot path).
        self.orders[order_id] = order
        per_merchant = self.per_merchant
        per_merchant[merchant_id] = per_merchant.get(merchant_id, 0) + 1
        self._by_key[key] = order_id
        by_buyer = self._by_buyer.get((merchant_id, buyer_id))
        if by_buyer is None:
            self._by_buyer[(merchant_id, buyer_id)] = [order_id]
        else:
            by_buyer.append(order_id)
        self._deadlines.push(payment_deadline_ms, order_id)
        self.changes.append(_placed_change(order_id, merchant_id, now_ms))
        return _new_snapshot(OrderSnapshot, (
            order_id, merchant_id, buyer_id, idempotency_key, priced, 1, total, now_ms,
            payment_deadline_ms, 1, False, now_ms, key_id, campaign_id, stock_keys, currency,
            ""))

    def abandon(self, merchant_id: str, idempotency_key: str) -> None:
        """Stock was refused: forget the attempt, so a retry may try again."""
        self._pending.pop((merchant_id, idempotency_key), None)

    def discard(self, order_ids: Collection[str]) -> list[Order]:
        """Orders that never became durable leave the book without a trace (the database
        refused their commit: another shard holds their key); answers those found."""
        gone: list[Order] = []
        for order_id in order_ids:
            order = self.orders.pop(order_id, None)
            if order is None:
                continue
            self._left(order.merchant_id)
            key = (order.merchant_id, order.idempotency_key)
            if self._by_key.get(key) == order_id:
                del self._by_key[key]
            by_buyer = self._by_buyer.get((order.merchant_id, order.buyer_id), [])
            if order_id in by_buyer:
                by_buyer.remove(order_id)
                if not by_buyer:
                    del self._by_buyer[(order.merchant_id, order.buyer_id)]
            gone.append(order)
        self.discarded += len(gone)
        if gone and self.changes:
            dropped = {order.order_id for order in gone}
            self.changes = [c for c in self.changes if c.order_id not in dropped]
        return gone

    def find(self, merchant_id: str, idempotency_key: str) -> Order | None:
        """The order placed with this key, if any."""
        order_id = self._by_key.get((merchant_id, idempotency_key))
        return None if order_id is None else self.orders[order_id]

    def knows(self, merchant_id: str, idempotency_key: str) -> bool:
        """Is the key's fate known here (an order in memory or its key retained, or a try
        under way)?"""
        key = (merchant_id, idempotency_key)
        return key in self._by_key or key in self._retained or key in self._pending

    def restore(self, order: Order) -> None:
        """Loads an order from durable state (recovery). One loaded finished (its row was
        not marked: written before migration 0012) leaves memory like any other."""
        self._add(order)
        if self.evicting and order.status in FINISHED:
            self._finished.append((order.updated_at_ms, order.order_id))

    def retain(self, merchant_id: str, idempotency_key: str, order_id: str, buyer_id: str,
               lines: tuple[Line, ...], campaign_id: str, created_at_ms: int) -> None:
        """Remembers the key of an order that is not in memory (it left, or recovery did
        not load it: finished)."""
        key = (merchant_id, idempotency_key)
        if key in self._by_key:
            return
        self._retained[key] = (order_id, hash((buyer_id, lines, campaign_id)))
        self._retained_by_age.push(created_at_ms, key)
        self.partial = True

    # --- bounded memory --------------------------------------------------------------------

    def evict(self, finished_before_ms: int, window_start_ms: int,
              not_durable: Container[str], items_max: int) -> list[Order]:
        """Finished orders leave memory once their last change is durable and they
        finished before `finished_before_ms` (at most `items_max`); their keys stay
        (``retain``) if placed at or after `window_start_ms`. Answers the orders that
        left."""
        gone: list[Order] = []
        finished, orders = self._finished, self.orders
        while finished and finished[0][0] < finished_before_ms and len(gone) < items_max:
            order_id = finished[0][1]
            if order_id in not_durable:
                break  # its commit is under way: the next sweep looks again
            finished.popleft()
            order = orders.pop(order_id, None)
            if order is None:
                continue
            self._left(order.merchant_id)
            key = (order.merchant_id, order.idempotency_key)
            del self._by_key[key]
            by_buyer = self._by_buyer[(order.merchant_id, order.buyer_id)]
            by_buyer.remove(order_id)
            if not by_buyer:
                del self._by_buyer[(order.merchant_id, order.buyer_id)]
            if order.created_at_ms >= window_start_ms:
                self.retain(order.merchant_id, order.idempotency_key, order_id,
                            order.buyer_id, order.unpriced_lines, order.campaign_id,
                            order.created_at_ms)
            else:
                self.forgot = True
            self.partial = True
            gone.append(order)
        self.evicted += len(gone)
        return gone

    def forget_keys(self, window_start_ms: int, keys_max: int) -> int:
        """Drops retained keys placed before the window, and the oldest beyond `keys_max`
        (the database still answers for them). Answers how many."""
        by_age, retained = self._retained_by_age, self._retained
        dropped = 0
        while by_age and (by_age.due(window_start_ms - 1) or len(retained) > keys_max):
            _, key = by_age.pop()
            if retained.pop(key, None) is not None:
                dropped += 1
        if dropped:
            self.forgot = True
        return dropped

    def retained_order(self, merchant_id: str, idempotency_key: str) -> str | None:
        """The id of the order placed with a retained key (it left memory), if any."""
        retained = self._retained.get((merchant_id, idempotency_key))
        return None if retained is None else retained[0]

    @property
    def retained_keys(self) -> int:
        return len(self._retained)

    def _add(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.per_merchant[order.merchant_id] = self.per_merchant.get(order.merchant_id, 0) + 1
        self._by_key[(order.merchant_id, order.idempotency_key)] = order.order_id
        self._by_buyer.setdefault((order.merchant_id, order.buyer_id), []).append(order.order_id)
        if order.status == OrderStatus.RESERVED:
            self._deadlines.push(order.payment_deadline_ms, order.order_id)

    # --- transitions -----------------------------------------------------------------------

    def get(self, merchant_id: str, order_id: str, only_key: str = "") -> Order:
        """`only_key`: when set, orders placed by other keys are not seen (channel keys)."""
        order = self.orders.get(order_id)
        # Another merchant's (or key's) order is reported exactly like a missing one.
        if order is None or order.merchant_id != merchant_id or (
                only_key and order.key_id != only_key):
            raise NotFound(f"no order {order_id}", order_id=order_id)
        return order

    def check(self, merchant_id: str, order_id: str, event: str, now_ms: int,
              only_key: str = "") -> tuple[Order, StockAction | None]:
        """Validates a step without taking it. Returns the stock action it needs, or None
        when the order is already where the step leads (a retry)."""
        order = self.get(merchant_id, order_id, only_key)
        if (event, order.status) in _ALREADY:
            return order, None
        if event == "pay" and order.status == OrderStatus.RESERVED and (
                now_ms >= order.payment_deadline_ms):
            raise InvalidTransition("the payment deadline has passed", order_id=order_id,
                                    status="EXPIRED")
        return order, transition(order.status, event)[1]

    def apply(self, order: Order, event: str, now_ms: int,
              payment_reference: str = "") -> OrderSnapshot:
        """Takes a step that ``check`` allowed (state may have moved since: checked again).
        A payment keeps its `payment_reference`."""
        if (event, order.status) in _ALREADY:
            return order.snapshot()
        previous = order.status
        order.status, _ = transition(order.status, event)
        if event == "pay" and payment_reference:
            order.payment_reference = payment_reference
        order.refunded = event == "cancel" and previous == OrderStatus.PAID
        order.sequence += 1
        order.updated_at_ms = now_ms
        if self.evicting and order.status in FINISHED:
            self._finished.append((now_ms, order.order_id))
        self.changes.append(OrderChange(order.order_id, order.merchant_id, order.sequence,
                                        int(order.status), event, now_ms))
        return order.snapshot()

    @staticmethod
    def answer_stored(order: Order, merchant_id: str, event: str, only_key: str = ""
                      ) -> OrderSnapshot:
        """A read or a step asked of a finished order read back from the database: the
        order as it is (a read, or a step that already happened), else the refusal."""
        if order.merchant_id != merchant_id or (only_key and order.key_id != only_key):
            raise NotFound(f"no order {order.order_id}", order_id=order.order_id)
        if event != "get" and (event, order.status) not in _ALREADY:
            transition(order.status, event)  # raises: a finished order takes no step
        return order.snapshot()

    def due_for_expiry(self, now_ms: int, items_max: int) -> list[Order]:
        """RESERVED orders whose payment deadline has passed (not yet transitioned)."""
        due: list[Order] = []
        while self._deadlines.due(now_ms) and len(due) < items_max:
            _, order_id = self._deadlines.pop()
            order = self.orders.get(order_id)
            if order is not None and order.status == OrderStatus.RESERVED:
                due.append(order)
        return due

    def remind(self, order: Order) -> None:
        """Puts an order back on the expiry schedule (its expiry was postponed)."""
        self._deadlines.push(order.payment_deadline_ms, order.order_id)

    def list_for_buyer(self, merchant_id: str, buyer_id: str,
                       before: tuple[int, str] | None, limit: int, only_key: str = ""
                       ) -> tuple[list[OrderSnapshot], tuple[int, str] | None]:
        """Newest first, by (created_at_ms, order_id): a keyset page of the orders placed
        before `before` (None: from the newest), and the position to continue from (None
        at the end). Orders placed while a client pages come before its first page, so
        they never shift a later page: every order that existed at the first page is
        listed exactly once."""
        orders = self.orders
        found = [orders[i] for i in self._by_buyer.get((merchant_id, buyer_id), ())]
        if only_key:
            found = [o for o in found if o.key_id == only_key]
        positions = sorted(((o.created_at_ms, o.order_id) for o in found), reverse=True)
        if before is not None:
            positions = [p for p in positions if p < before]
        page = [orders[order_id].snapshot() for _, order_id in positions[:limit]]
        return page, (positions[limit - 1] if len(positions) > limit else None)

    def drain_changes(self) -> list[OrderChange]:
        changes, self.changes = self.changes, []
        return changes

    def check_invariants(self) -> None:
        invariant(len(self._by_key) == len(self.orders), "one order per idempotency key")
        invariant(sum(self.per_merchant.values()) == len(self.orders),
                  "orders counted per merchant")
        invariant(not any(key in self._by_key for key in self._retained),
                  "a key both in memory and retained")
        for order in self.orders.values():
            invariant(order.total_minor == sum(q * p for _, q, p in order.lines),
                      f"{order.order_id}: total drifted")

