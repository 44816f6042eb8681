"""What each actor writes and reads: the rows of the ledger, built from engine values.

Kept apart from the actors so the row shapes can be read (and tested) in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from adapters.events import ORDER_EVENT_TYPES
from adapters.postgres import Store
from engine.errors import InvariantViolation
from engine.orders import Order, OrderChange, OrderSnapshot, OrderStatus
from engine.sharding import slot_of

log = logging.getLogger(__name__)



async def open_store(dsn: str, pool_size: int) -> Store | None:
    """None when persistence is off (dsn "none")."""
    if dsn == "none":
        return None
    return await Store.open(dsn, pool_size)


def order_rows(order: OrderSnapshot, slots_total: int) -> tuple[tuple[Any, ...],
                                                                 list[tuple[Any, ...]]]:
    row = (order.order_id, order.merchant_id, order.buyer_id, order.idempotency_key,
           int(order.order_id[:4], 16), order.total_minor, order.created_at_ms,
           order.payment_deadline_ms, order.key_id)
    lines = [(order.order_id, number, order.merchant_id, sku_id,
              slot_of(order.merchant_id, sku_id, slots_total), quantity, price)
             for number, (sku_id, quantity, price) in enumerate(order.lines)]
    return row, lines


def transition_rows(change: OrderChange, order: Order,
                    snapshot: OrderSnapshot) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A transition and its outbox row (same transaction). The event's payload is built
    by the relay from the ledger, off the order path."""
    transition = (change.order_id, change.sequence, change.merchant_id,
                  int(change.order_id[:4], 16), change.status, change.event,
                  order.refunded if change.status == OrderStatus.CANCELLED else False,
                  change.at_ms)
    event = (f"{change.order_id}:{change.sequence}", change.merchant_id,
             ORDER_EVENT_TYPES[change.event], change.order_id, change.sequence, b"",
             change.at_ms)
    return transition, event


async def commit_order_entries(store: Store, entries: Sequence[Any]) -> None:
    """entries: ("order", row, lines) and ("transition", row, event) tuples."""
    orders, lines, transitions, outbox = [], [], [], []
    for entry in entries:
        if entry[0] == "order":
            orders.append(entry[1])
            lines.extend(entry[2])
        else:
            transitions.append(entry[1])
            outbox.append(entry[2])
    try:
        await store.commit_orders(orders, lines, transitions, outbox)
    except asyncpg.IntegrityConstraintViolationError as error:
        raise InvariantViolation(f"database refused the journal: {error}") from error


def restore_order(row: Any, lines: Any) -> Order:
    """An order from its `load_orders` row and lines."""
    lines = tuple(lines)
    return Order(row["order_id"], row["merchant_id"], row["buyer_id"], row["idempotency_key"],
                 lines, OrderStatus(row["status"]), row["total_minor"], row["created_at_ms"],
                 row["payment_deadline_ms"], row["sequence"], row["refunded"],
                 row["updated_at_ms"], row["key_id"])
