"""Pure conversion of legacy rows to flashtx rows: deterministic ids, slots, units and the
same input checks the engine makes (engine.validation). A row that fails raises
``Rejected`` with the reason; the caller writes it to the reject file and goes on.

Ids are functions of legacy keys only, so a re-run produces the same ids:
order_id = f"{slot:04x}lg{sha1(merchant_id + ':' + legacy order key)[:14]}" (the order slot
leads, as the engine's order ids do; the merchant is hashed in because two legacy systems,
or two shops of one, may reuse the same order numbers), idempotency key =
f"legacy:{legacy order key}".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping as MappingType
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

from flashtx.engine.config import Config
from flashtx.engine.sharding import slot_of

__all__ = ["Catalogue", "MerchantRow", "OrderRow", "Rejected", "SkuRow", "checksum_of",
           "convert_customer", "convert_merchant", "convert_order", "convert_sku",
           "order_id_of"]

_CONFIG = Config()
_MERCHANT_ID = re.compile(r"[a-z0-9_-]{3,40}")
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MerchantRow(NamedTuple):
    merchant_id: str
    name: str
    payment_window_s: int
    created_at_ms: int


class SkuRow(NamedTuple):
    merchant_id: str
    sku_id: str
    slot: int
    name: str
    price_minor: int
    per_buyer_limit: int
    updated_at_ms: int


class LineRow(NamedTuple):
    line_no: int
    sku_id: str
    sku_slot: int
    quantity: int
    unit_price_minor: int


class OrderRow(NamedTuple):
    order_id: str
    merchant_id: str
    buyer_id: str
    idempotency_key: str
    slot: int
    total_minor: int
    created_at_ms: int
    payment_deadline_ms: int
    status: int
    lines: tuple[LineRow, ...]


@dataclass(slots=True)
class Catalogue:
    """What later entities refer to, by legacy key. Bounded by the number of merchants,
    customers and SKUs (not orders)."""

    merchants: dict[str, MerchantRow] = field(default_factory=dict)
    skipped_merchants: set[str] = field(default_factory=set)  # exist, not selected
    buyers: dict[str, str] = field(default_factory=dict)
    skus: dict[str, SkuRow] = field(default_factory=dict)
    customers_mapped: bool = False


def checksum_of(fields: Sequence[Any]) -> int:
    """60 bits of md5 over the fields joined by '|'; reconcile.py computes the same in SQL
    (md5(concat_ws('|', ...))), so a set of rows sums to the same number on both sides."""
    text = "|".join(str(value) for value in fields)
    return int(hashlib.md5(text.encode()).hexdigest()[:15], 16)


def order_id_of(merchant_id: str, legacy_key: str, slot: int) -> str:
    digest = hashlib.sha1(f"{merchant_id}:{legacy_key}".encode()).hexdigest()
    return f"{slot:04x}lg{digest[:14]}"


def to_int(value: Any, scale: float | None = None) -> int:
    if value is None or value == "":
        raise Rejected("is empty")
    try:
        number = Decimal(str(value).strip())
        if scale is not None:
            number *= Decimal(str(scale))
        return int(number.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise Rejected(f"{value!r} is not a number") from None


def to_ms(value: Any) -> int:
    """A timestamp (or ISO-8601 text, as CSV exports write them) → epoch milliseconds;
    a timestamp without a zone is taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Rejected(f"{value!r} is not an ISO-8601 timestamp") from None
    if not isinstance(value, datetime):
        raise Rejected(f"{value!r} is not a timestamp")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _field(row: MappingType[str, Any], name: str, scales: MappingType[str, float | None],
           convert: str = "int") -> Any:
    try:
        if convert == "ms":
            return to_ms(row[name])
        return to_int(row[name], scales.get(name))
    except Rejected as error:
        raise Rejected(f"{name} {error.reason}") from None


def _text(row: MappingType[str, Any], name: str, length_max: int) -> str:
    value = "" if row[name] is None else str(row[name])
    if not value.strip():
        raise Rejected(f"{name} is empty")
    if len(value) > length_max or "\x00" in value:
        raise Rejected(f"{name} is longer than {length_max} characters or holds a NUL")
    return value


def _identifier(row: MappingType[str, Any], name: str) -> str:
    value = "" if row[name] is None else str(row[name])
    if not _ID.fullmatch(value):
        raise Rejected(f"{name} {value!r} must be 1..64 of letters, digits and . _ : @ -")
    return value


def convert_merchant(row: MappingType[str, Any], scales: MappingType[str, float | None],
                     window_s_default: int, now_ms: int) -> MerchantRow:
    merchant_id = "" if row["merchant_id"] is None else str(row["merchant_id"])
    if not _MERCHANT_ID.fullmatch(merchant_id):
        raise Rejected(f"merchant_id {merchant_id!r} must match [a-z0-9_-]{{3,40}}")
    window_s = window_s_default
    if row.get("payment_window_s") is not None:
        window_s = _field(row, "payment_window_s", scales)
    if not 1 <= window_s <= _CONFIG.payment_window_s_max:
        raise Rejected(f"payment_window_s must be in 1..{_CONFIG.payment_window_s_max}")
    created_at_ms = (_field(row, "created_at", scales, "ms")
                     if row.get("created_at") is not None else now_ms)
    return MerchantRow(merchant_id, _text(row, "name", _CONFIG.name_length_max), window_s,
                       created_at_ms)


def convert_customer(row: MappingType[str, Any]) -> str:
    return _identifier(row, "buyer_id")


def convert_sku(row: MappingType[str, Any], scales: MappingType[str, float | None],
                catalogue: Catalogue, now_ms: int) -> SkuRow | None:
    """None for a SKU of a merchant that exists but is not being migrated."""
    merchant = _merchant(row, catalogue)
    if merchant is None:
        return None
    sku_id = _identifier(row, "sku_id")
    price_minor = _field(row, "price_minor", scales)
    if not 0 <= price_minor <= _CONFIG.price_minor_max:
        raise Rejected(f"price_minor must be in 0..{_CONFIG.price_minor_max}")
    limit = 0
    if row.get("per_buyer_limit") not in (None, ""):
        limit = _field(row, "per_buyer_limit", scales)
        if limit < 0:
            raise Rejected("per_buyer_limit is negative")
    updated_at_ms = (_field(row, "updated_at", scales, "ms")
                     if row.get("updated_at") is not None else now_ms)
    return SkuRow(merchant.merchant_id, sku_id, slot_of(merchant.merchant_id, sku_id,
                  _CONFIG.slots_total), _text(row, "name", _CONFIG.name_length_max),
                  price_minor, limit, updated_at_ms)


def _merchant(row: MappingType[str, Any], catalogue: Catalogue) -> MerchantRow | None:
    key = str(row["merchant"])
    merchant = catalogue.merchants.get(key)
    if merchant is None and key not in catalogue.skipped_merchants:
        raise Rejected(f"merchant {key!r} is not a (valid) legacy merchant")
    return merchant


def convert_order(row: MappingType[str, Any], lines: Sequence[MappingType[str, Any]],
                  scales: MappingType[str, float | None],
                  line_scales: MappingType[str, float | None],
                  status_map: MappingType[str, int], catalogue: Catalogue) -> OrderRow | None:
    """None for an order of a merchant not being migrated or with a SKIP status."""
    merchant = _merchant(row, catalogue)
    if merchant is None:
        return None
    status = status_map.get(str(row["status"]))
    if status is None:
        raise Rejected(f"status {row['status']!r} is not in orders.status_map")
    if status == 0:
        return None
    buyer_id = _buyer(row, catalogue)
    key = str(row["key"])
    idempotency_key = f"legacy:{key}"
    if len(idempotency_key) > _CONFIG.id_length_max or not _ID.fullmatch(idempotency_key):
        raise Rejected(f"legacy key {key!r} does not make a valid idempotency key")
    converted = _lines(lines, merchant.merchant_id, line_scales, catalogue)
    total_minor = (_field(row, "total_minor", scales) if row.get("total_minor") is not None
                   else sum(line.quantity * line.unit_price_minor for line in converted))
    created_at_ms = _field(row, "created_at", scales, "ms")
    deadline_ms = created_at_ms + merchant.payment_window_s * 1000
    if row.get("payment_deadline") is not None:
        deadline_ms = _field(row, "payment_deadline", scales, "ms")
    slot = slot_of(merchant.merchant_id, buyer_id, _CONFIG.slots_total)
    return OrderRow(order_id_of(merchant.merchant_id, key, slot), merchant.merchant_id,
                    buyer_id, idempotency_key, slot, total_minor, created_at_ms, deadline_ms,
                    status, converted)


def _buyer(row: MappingType[str, Any], catalogue: Catalogue) -> str:
    customer = str(row["customer"])
    if not catalogue.customers_mapped:
        return _identifier(row, "customer")
    buyer_id = catalogue.buyers.get(customer)
    if buyer_id is None:
        raise Rejected(f"customer {customer!r} is not a (valid) legacy customer")
    return buyer_id


def _lines(lines: Sequence[MappingType[str, Any]], merchant_id: str,
           scales: MappingType[str, float | None], catalogue: Catalogue) -> tuple[LineRow, ...]:
    if not 1 <= len(lines) <= _CONFIG.lines_per_order_max:
        raise Rejected(f"needs 1..{_CONFIG.lines_per_order_max} lines, has {len(lines)}")
    ordered = sorted(lines, key=_line_order) if lines[0].get("line_no") is not None else lines
    result: list[LineRow] = []
    seen: set[str] = set()
    for index, line in enumerate(ordered):
        sku = catalogue.skus.get(str(line["sku"]))
        if sku is None or sku.merchant_id != merchant_id:
            raise Rejected(f"line {index}: SKU {line['sku']!r} is not a (valid) SKU "
                           "of this merchant")
        if sku.sku_id in seen:
            raise Rejected(f"line {index}: SKU {sku.sku_id} appears twice")
        seen.add(sku.sku_id)
        quantity = _field(line, "quantity", scales)
        if not 1 <= quantity <= _CONFIG.quantity_per_line_max:
            raise Rejected(f"line {index}: quantity must be in "
                           f"1..{_CONFIG.quantity_per_line_max}")
        price_minor = _field(line, "unit_price_minor", scales)
        result.append(LineRow(index, sku.sku_id, sku.slot, quantity, price_minor))
    return tuple(result)


def _line_order(line: MappingType[str, Any]) -> tuple[int, str]:
    value = str(line["line_no"])
    return (int(value), "") if value.lstrip("-").isdigit() else (0, value)
