"""Input checks at the edge, against the limits in engine.config. Each failure names the
field (``orders[3].lines[0].quantity``) so the gRPC layer can return google.rpc.BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flashtx.engine.config import Config
from flashtx.engine.errors import InvalidArgument

__all__ = ["check_id", "check_ids", "check_length", "check_order", "check_range", "check_sku"]

_ID = re.compile(r"[A-Za-z0-9._:@-]+")
_ID_MATCH = _ID.fullmatch


def check_id(field: str, value: str, length_max: int) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > length_max:
        raise InvalidArgument(field, f"is longer than {length_max} characters")
    if not _ID.fullmatch(value):
        raise InvalidArgument(field, "may hold only letters, digits and . _ : @ -")
    return value


_IDS_MATCH = re.compile(r"(?:[A-Za-z0-9._:@-]+\n)*").fullmatch


def check_ids(field: str, values: Sequence[str], length_max: int) -> None:
    """`check_id` for each of `values` (named ``field[i]``), in one pass when all are
    valid: a read of a thousand ids checks them with one match, not a thousand."""
    joined = "\n".join(values) + "\n"
    if (values and max(map(len, values)) <= length_max
            and joined.count("\n") == len(values)  # no id holds the separator itself
            and _IDS_MATCH(joined) is not None):
        return
    for i, value in enumerate(values):
        check_id(f"{field}[{i}]", value, length_max)


def check_length(field: str, value: str, length_max: int) -> str:
    if len(value) > length_max:
        raise InvalidArgument(field, f"is longer than {length_max} characters")
    if "\x00" in value:
        raise InvalidArgument(field, "contains a NUL character")
    return value


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be in {low}..{high}, got {value}")
    return value


def check_order(config: Config, field: str, idempotency_key: str, buyer_id: str,
                lines: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Returns the lines sorted by SKU (an order's canonical form, used for idempotency).
    A valid order takes one pass of cheap checks; an invalid one is checked again, field
    by field, for the error that names the field."""
    id_max = config.id_length_max
    if (0 < len(idempotency_key) <= id_max and 0 < len(buyer_id) <= id_max
            and 1 <= len(lines) <= config.lines_per_order_max
            and _ID_MATCH(idempotency_key) and _ID_MATCH(buyer_id)):
        quantity_max = config.quantity_per_line_max
        if len(lines) == 1:
            sku_id, quantity = lines[0]
            if 0 < len(sku_id) <= id_max and 1 <= quantity <= quantity_max and _ID_MATCH(
                    sku_id):
                return ((sku_id, quantity),)
        elif len({sku_id for sku_id, _ in lines}) == len(lines) and all(
                0 < len(sku_id) <= id_max and 1 <= quantity <= quantity_max
                and _ID_MATCH(sku_id) for sku_id, quantity in lines):
            return tuple(sorted(lines))
    return _check_order_fields(config, field, idempotency_key, buyer_id, lines)


def check_columns(config: Config, count: int, buyer_ids: Sequence[str],
                  line_counts: Sequence[int], sku_ids: Sequence[str],
                  quantities: Sequence[int], campaign_ids: Sequence[str]) -> None:
    """The shape of a PlaceOrderColumns request: 1..place_orders_batch_max orders, one
    entry per order in each column, as many SKUs and quantities as the line counts add up
    to. Raises InvalidArgument naming the first column that does not fit."""
    if not 1 <= count <= config.place_orders_batch_max:
        raise InvalidArgument("idempotency_keys",
                              f"needs 1..{config.place_orders_batch_max} orders, got {count}")
    for name, column in (("buyer_ids", buyer_ids), ("line_counts", line_counts)):
        if len(column) != count:
            raise InvalidArgument(name, f"needs one entry per order ({count}), got {len(column)}")
    if campaign_ids and len(campaign_ids) != count:
        raise InvalidArgument("campaign_ids", f"needs none or one entry per order ({count}),"
                              f" got {len(campaign_ids)}")
    lines = sum(line_counts)
    for name, column in (("sku_ids", sku_ids), ("quantities", quantities)):
        if len(column) != lines:
            raise InvalidArgument(name, f"needs one entry per line ({lines}, the sum of"
                                  f" line_counts), got {len(column)}")


def _check_order_fields(config: Config, field: str, idempotency_key: str, buyer_id: str,
                        lines: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    check_id(f"{field}idempotency_key", idempotency_key, config.id_length_max)
    check_id(f"{field}buyer_id", buyer_id, config.id_length_max)
    if not 1 <= len(lines) <= config.lines_per_order_max:
        raise InvalidArgument(f"{field}lines",
                              f"needs 1..{config.lines_per_order_max} lines, got {len(lines)}")
    seen: set[str] = set()
    for index, (sku_id, quantity) in enumerate(lines):
        check_id(f"{field}lines[{index}].sku_id", sku_id, config.id_length_max)
        check_range(f"{field}lines[{index}].quantity", quantity, 1,
                    config.quantity_per_line_max)
        if sku_id in seen:
            raise InvalidArgument(f"{field}lines[{index}].sku_id", f"{sku_id} appears twice")
        seen.add(sku_id)
    return tuple(sorted(lines))


def check_sku(config: Config, field: str, sku_id: str, name: str, price_minor: int,
              on_hand: int, per_buyer_limit: int) -> None:
    check_id(f"{field}sku_id", sku_id, config.id_length_max)
    check_length(f"{field}name", name, config.name_length_max)
    check_range(f"{field}price_minor", price_minor, 0, config.price_minor_max)
    check_range(f"{field}on_hand", on_hand, 0, config.on_hand_max)
    check_range(f"{field}per_buyer_limit", per_buyer_limit, 0, config.quantity_per_line_max)
