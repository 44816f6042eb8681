"""The messages that cross between shards (and from gateways to shards): one named batch
per call, stored as columns.

A batch is a few lists of equal length, one per field, plus the scalars that are the same
for every item (the owner shard, a handover generation). Pickling one batch is a handful of
list dumps, not one tuple or object per order, which is what the hot path needs; reading
one is ``zip`` over columns. Callers build the rows they have anyway and transpose once
with ``of``; shards read columns (or ``rows()``) and answer with ``Answers``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, ClassVar, NamedTuple, Self

from flashtx.engine.errors import ResultCode

Line = tuple[str, int]  # (SKU or campaign bucket, quantity)
Lines = tuple[Line, ...]


class Generation(NamedTuple):
    """An order shard's handover count on one stock shard, within one incarnation
    (``born_ms``: a number from the database that only grows, and is at least the wall
    clock at the start): calls sent with an older generation are stale there."""

    born_ms: int
    handovers: int


FIRST_GENERATION = Generation(0, 0)


class _Columns:
    """Equal-length column fields first, then scalar fields (``SCALARS`` of them)."""

    SCALARS: ClassVar[int] = 0
    __slots__ = ()

    @classmethod
    @cache
    def columns(cls) -> tuple[str, ...]:
        """The names of the column fields, in order."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        return tuple(names[:len(names) - cls.SCALARS])

    @classmethod
    def of(cls, rows: Iterable[Sequence[Any]], *scalars: Any) -> Self:
        """From rows (tuples in column order), plus the scalars."""
        width = len(cls.columns())
        rows = list(rows)
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [
            [] for _ in range(width)]
        if len(columns) != width:
            raise ValueError(f"{cls.__name__} rows have {width} fields, got {len(columns)}")
        return cls(*columns, *scalars)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        return zip(*(getattr(self, name) for name in self.columns()), strict=True)

    def __len__(self) -> int:
        return len(getattr(self, self.columns()[0]))


# --- gateway -> order shard ---------------------------------------------------------------


@dataclass(slots=True)
class PlaceBatch(_Columns):
    """New orders. deadline_ms: the client's deadline (0: none), an order not begun by
    then is not placed; key_id: the API key placing it; campaign_id: "" or the campaign."""

    SCALARS: ClassVar[int] = 1

    merchant_ids: list[str]
    keys: list[str]  # idempotency keys
    buyer_ids: list[str]
    lines: list[Lines]
    payment_windows_s: list[int]
    slots: list[int]
    deadlines_ms: list[int]
    key_ids: list[str]
    campaign_ids: list[str]
    currencies: list[str]  # the merchant's (ISO 4217): the order records it
    trace: str = ""  # the sender's span (a W3C traceparent; "" when not tracing)


@dataclass(slots=True)
class CheckoutBatch(_Columns):
    """Carts to turn into orders (same meaning as in PlaceBatch)."""

    merchant_ids: list[str]
    buyer_ids: list[str]
    campaign_ids: list[str]
    keys: list[str]
    payment_windows_s: list[int]
    slots: list[int]
    deadlines_ms: list[int]
    key_ids: list[str]
    currencies: list[str]


@dataclass(slots=True)
class CartBatch(_Columns):
    """Cart operations: op is add | set | remove | get | clear; hold_s: the merchant's cart
    hold policy (0: stock is reserved at checkout)."""

    ops: list[str]
    merchant_ids: list[str]
    buyer_ids: list[str]
    campaign_ids: list[str]
    sku_ids: list[str]
    quantities: list[int]
    holds_s: list[int]
    request_ids: list[str]  # add: the client's request id ("" none)


@dataclass(slots=True)
class ActionBatch(_Columns):
    """Reads and transitions: op is get | list | pay | cancel | fulfil | refund; target is
    the order id (the buyer id for list); only_key: set for a channel key, which sees only
    the orders it placed."""

    ops: list[str]
    merchant_ids: list[str]
    targets: list[str]
    arguments: list[Any]
    only_keys: list[str]


class PageRequest(NamedTuple):
    """The argument of a "list" action: up to `limit` orders placed before the position
    (created_at_ms, order_id) `before` (None: from the newest)."""

    before: tuple[int, str] | None
    limit: int


# --- order shard -> stock shard -----------------------------------------------------------


@dataclass(slots=True)
class ReserveBatch(_Columns):
    """Orders' lines on one stock shard, all-or-nothing per order. ``replacing[i]``: cart
    holds item i takes over (a checkout), or None for the whole batch when none does."""

    SCALARS: ClassVar[int] = 3
    order_ids: list[str]
    merchant_ids: list[str]
    buyer_ids: list[str]
    lines: list[Lines]
    expires_ms: list[int]
    owner: int  # the order shard
    replacing: list[list[str]] | None = None
    trace: str = ""  # the sender's span (a W3C traceparent; "" when not tracing)


@dataclass(slots=True)
class HoldBatch(_Columns):
    """Cart line holds to take, resize or (quantity 0) release."""

    SCALARS: ClassVar[int] = 1
    hold_ids: list[str]
    merchant_ids: list[str]
    buyer_ids: list[str]
    stock_keys: list[str]
    quantities: list[int]
    expires_ms: list[int]
    owner: int


@dataclass(slots=True)
class ReturnBatch(_Columns):
    """Refunded orders' sold units going back on sale."""

    SCALARS: ClassVar[int] = 2
    order_ids: list[str]
    merchant_ids: list[str]
    buyer_ids: list[str]
    lines: list[Lines]
    owner: int
    generation: Generation


@dataclass(slots=True)
class Holds(_Columns):
    """Held stock (orders awaiting payment, cart lines), as a handover carries it."""

    hold_ids: list[str]
    merchant_ids: list[str]
    buyer_ids: list[str]
    lines: list[Lines]
    expires_ms: list[int]


@dataclass(slots=True)
class Sales(_Columns):
    """Sold units per buyer (paid orders), as a handover carries them."""

    merchant_ids: list[str]
    sku_ids: list[str]
    buyer_ids: list[str]
    quantities: list[int]


@dataclass(slots=True)
class Handover:
    """What one order shard owns on one stock shard, and the generation it starts."""

    owner: int
    holds: Holds
    sales: Sales
    generation: Generation


# --- catalogue (gateway, merchant shard -> stock shard) ------------------------------------


@dataclass(slots=True)
class SkuKeys(_Columns):
    merchant_ids: list[str]
    sku_ids: list[str]


@dataclass(slots=True)
class SkuBatch(_Columns):
    """Catalogue rows to create or update; on_hand is set, not added (idempotent)."""

    merchant_ids: list[str]
    sku_ids: list[str]
    names: list[str]
    prices_minor: list[int]
    on_hand: list[int]
    per_buyer_limits: list[int]


@dataclass(slots=True)
class Shares(_Columns):
    """Units moving to counters (campaign buckets)."""

    keys: list[str]
    units: list[int]


@dataclass(slots=True)
class Expected:
    """Units about to arrive at a counter (see StockShard.instance)."""

    merchant_id: str
    sku_id: str
    units: int


@dataclass(slots=True)
class CampaignSkus(_Columns):
    """A campaign's SKUs as its creator asks for them (gateway -> merchant shard)."""

    sku_ids: list[str]
    sale_prices_minor: list[int]
    allotments: list[int]  # 0: every unit available
    per_buyer_limits: list[int]


class Adjusted(NamedTuple):
    level: Any  # engine.stock.StockLevel
    applied: bool  # False: a retry of a request_id applied before


class MerchantCreated(NamedTuple):
    merchant: dict[str, Any]
    key: dict[str, Any]
    token: str  # the new key's secret, shown once
    replayed: bool = False  # a request_id's retry: the same merchant, a new secret


class MerchantView(NamedTuple):
    merchant: dict[str, Any]
    keys: list[dict[str, Any]]


class KeyCreated(NamedTuple):
    key: dict[str, Any]
    token: str


# --- answers --------------------------------------------------------------------------------

_CODES = {int(code): code for code in ResultCode}


@dataclass(slots=True)
class Answers:
    """Per-item outcomes of a batch, aligned with it: a code and a value (prices, a level,
    a message). Iterates as (ResultCode, value) pairs."""

    codes: bytes
    values: list[Any]

    @classmethod
    def of(cls, pairs: Iterable[tuple[ResultCode, Any]]) -> Answers:
        pairs = list(pairs)
        return cls(bytes(int(code) for code, _ in pairs), [value for _, value in pairs])

    @classmethod
    def all(cls, code: ResultCode, value: Any, count: int) -> Answers:
        return cls(bytes([int(code)]) * count, [value] * count)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> tuple[ResultCode, Any]:
        return _CODES[self.codes[i]], self.values[i]

    def __iter__(self) -> Iterator[tuple[ResultCode, Any]]:
        codes = _CODES
        return ((codes[code], value) for code, value in zip(self.codes, self.values,
                                                             strict=True))
