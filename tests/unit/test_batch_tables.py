"""A batch's rows (actors.batch_journal.BatchTables): built from journal entries, the
same after the journal row's round trip, and merged in order (a cart's latest write
wins, settled units add up)."""

from __future__ import annotations

from flashtx.actors.batch_journal import BatchTables
from flashtx.actors.persistence import finished_rows, order_rows, transition_rows
from flashtx.engine.orders import Order, OrderChange, OrderStatus, new_order_id

SLOTS = 4096


def _order(n: int) -> Order:
    return Order(new_order_id(n, "u1", n), "m", f"b{n}", f"k{n}", (("a", 2, 100),),
                 OrderStatus.RESERVED, 200, 1_000, 61_000, 1, False, 1_000, "", "", (),
                 "USD")


def _entries(order: Order) -> list[object]:
    row, lines = order_rows(order, SLOTS)
    placed = OrderChange(order.order_id, "m", 1, 1, "placed", 1_000)
    entries: list[object] = [("order", row, lines),
                             ("transition", *transition_rows(placed, order), None)]
    order.status, order.sequence = OrderStatus.FULFILLED, 2
    done = OrderChange(order.order_id, "m", 2, int(OrderStatus.FULFILLED), "fulfil", 2_000)
    entries.append(("transition", *transition_rows(done, order), finished_rows(done, order)))
    return entries


def test_a_batch_survives_its_rows_round_trip() -> None:
    order = _order(1)
    cart = ("cart", ("m", "b1", ""), ("m", "b1", "", 9, '[["a", 1, "", 0, "h"]]', 5, 6))
    tables = BatchTables.of([*_entries(order), cart, ("cart", ("m", "b2", ""), None)], 2)
    position, decoded = BatchTables.decode(tables.encode(42))
    assert position == 42
    assert decoded == tables
    assert decoded.key_columns() == (["m"], ["k1"], [order.order_id])
    assert decoded.finished == [(order.order_id, 2_000)]
    slot = int(order.order_id[:4], 16)
    assert decoded.settled_rows() == [(2, slot % 2, "m", "", "a", "a", "", 2)]
    assert decoded.gone_carts() == [("m", "b2", "")]


def test_batches_merge_in_order() -> None:
    first = BatchTables.of([("cart", ("m", "b1", ""), ("m", "b1", "", 9, "[]", 1, 2)),
                            *_entries(_order(1))], 1)
    later = BatchTables.of([("cart", ("m", "b1", ""), None), *_entries(_order(2))], 1)
    first.add(later)
    assert first.gone_carts() == [("m", "b1", "")] and first.kept_carts() == []
    assert len(first.orders) == 2 and len(first.outbox) == 4
    assert first.settled_rows() == [(1, 0, "m", "", "a", "a", "", 4)]
