"""An order shard's live orders as one compact snapshot, and recovery from it.

A snapshot holds the orders that can still change (RESERVED and PAID) as columns packed
with msgpack, a CRC-32 of them, and the outbox position it covers: every order change
whose outbox row has a larger id is not in it. Recovery takes the snapshot's orders, then
the orders changed after that position as the database holds them now (``merge``): the
same live orders a read of the whole ledger gives, without reading it.

Pure: the order shard reads and writes the rows (adapters.postgres, migration 0013).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

import msgpack

from flashtx.engine.orders import FINISHED, Order, OrderStatus

__all__ = ["FORMAT", "Captured", "SnapshotUnusable", "capture", "decode", "encode", "merge",
           "unusable"]

FORMAT = 1
_CHANGING = attrgetter("status", "sequence", "refunded", "updated_at_ms", "payment_reference")
# Fields that never change once an order exists, in the order of the body's columns.
_FIXED = ("order_id", "merchant_id", "buyer_id", "idempotency_key", "total_minor",
          "created_at_ms", "payment_deadline_ms", "key_id", "campaign_id", "currency")
_FIXED_OF = attrgetter(*_FIXED)


class SnapshotUnusable(ValueError):
    """A snapshot that recovery must not use (corrupt, another format, too old)."""


class Captured(NamedTuple):
    """Live orders as they were at one instant: each order with a copy of the fields
    that change (later changes to the objects do not reach the snapshot)."""

    orders: list[tuple[Order, tuple[Any, ...]]]


def capture(orders: Iterable[Order]) -> Captured:
    """The live orders among `orders`, now. Runs in one go (no await): an instant."""
    return Captured([(order, _CHANGING(order)) for order in orders
                     if order.status not in FINISHED])


def encode(captured: Captured) -> tuple[bytes, int]:
    """(body, its CRC-32)."""
    fixed = [_FIXED_OF(order) for order, _ in captured.orders]
    body: bytes = msgpack.packb({
        "format": FORMAT,
        "fixed": fixed,
        "changing": [changing for _, changing in captured.orders],
        "lines": [order.lines for order, _ in captured.orders],
        "stock_keys": [order.stock_keys for order, _ in captured.orders],
    }, use_bin_type=True)
    return body, zlib.crc32(body)


def decode(body: bytes, checksum: int) -> list[Order]:
    """The snapshot's orders. Raises SnapshotUnusable when the body is not one this code
    wrote (checksum, format or shape)."""
    if zlib.crc32(body) != checksum:
        raise SnapshotUnusable("the snapshot's checksum does not match its body")
    try:
        data = msgpack.unpackb(body, use_list=False, raw=False)
        if data["format"] != FORMAT:
            raise SnapshotUnusable(f"snapshot format {data['format']} is not {FORMAT}")
        orders = []
        for fixed, changing, lines, stock_keys in zip(
                data["fixed"], data["changing"], data["lines"], data["stock_keys"],
                strict=True):
            (order_id, merchant_id, buyer_id, idempotency_key, total_minor, created_at_ms,
             payment_deadline_ms, key_id, campaign_id, currency) = fixed
            status, sequence, refunded, updated_at_ms, payment_reference = changing
            orders.append(Order(order_id, merchant_id, buyer_id, idempotency_key,
                                tuple(tuple(line) for line in lines), OrderStatus(status),
                                total_minor, created_at_ms, payment_deadline_ms, sequence,
                                refunded, updated_at_ms, key_id, campaign_id,
                                tuple(stock_keys), currency, payment_reference))
    except SnapshotUnusable:
        raise
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as error:
        raise SnapshotUnusable(f"the snapshot cannot be read: {error!r}") from error
    return orders


def due(changed: bool, taken_at_ms: int, now_ms: int, outbox_retention_s: float) -> bool:
    """Is a scheduled snapshot to be written? When the live orders changed since the last
    one; and when they did not but the last one is half the outbox's retention old: the
    prune would soon pass its outbox position (other shards' rows, or this shard's that
    changed nothing live), and a snapshot older than pruned rows is not used."""
    if changed:
        return True
    return outbox_retention_s > 0 and now_ms - taken_at_ms >= outbox_retention_s * 500


def unusable(format_: int, generation: int, generation_now: int, outbox_id: int,
             pruned_through: int) -> str:
    """Why a stored snapshot cannot be used ("" when it can): written by another format,
    before an import of orders (which write no outbox rows), or older than outbox rows
    already pruned (the changes after it cannot all be read)."""
    if format_ != FORMAT:
        return f"it has format {format_}, not {FORMAT}"
    if generation != generation_now:
        return "orders were imported since it was taken"
    if outbox_id < pruned_through:
        return "outbox rows written after it have been pruned"
    return ""


def merge(snapshot: Sequence[Order], changed: Sequence[Order]) -> list[Order]:
    """The live orders: the snapshot's, each replaced by its current state when it
    changed after the snapshot (dropped when that finished it), and the orders placed
    after it; in the order a read of the ledger gives (created_at_ms, order_id)."""
    orders = {order.order_id: order for order in snapshot}
    for order in changed:
        if order.status in FINISHED:
            orders.pop(order.order_id, None)
        else:
            orders[order.order_id] = order
    return sorted(orders.values(), key=lambda order: (order.created_at_ms, order.order_id))
