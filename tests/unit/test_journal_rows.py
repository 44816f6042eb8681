"""The journal's rows of a placed order, built in one go on the hot path, are the rows the
general path builds for the same order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flashtx.actors.persistence import finished_rows, order_rows, placed_entries, transition_rows
from flashtx.engine.orders import Order, OrderChange, OrderStatus, new_order_id

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@st.composite
def placed_orders(draw: st.DrawFn) -> Order:
    lines = tuple(draw(st.lists(st.tuples(TEXT, st.integers(1, 1000), st.integers(0, 10**9)),
                                min_size=1, max_size=3)))
    stock_keys = draw(st.one_of(st.just(()), st.lists(TEXT, min_size=len(lines),
                                                       max_size=len(lines)).map(tuple)))
    created = draw(st.integers(0, 2**50))
    return Order(new_order_id(draw(st.integers(0, 4095)), "e0e0e0", draw(st.integers(1, 10**6))),
                 draw(TEXT), draw(TEXT), draw(TEXT), lines, OrderStatus.RESERVED,
                 sum(q * p for _, q, p in lines), created, created + draw(st.integers(0, 10**7)),
                 1, False, created, draw(TEXT), draw(TEXT), stock_keys, draw(TEXT))


@given(placed_orders())
def test_placed_entries_are_the_general_rows(order: Order) -> None:
    change = OrderChange(order.order_id, order.merchant_id, 1, 1, "placed", order.created_at_ms)
    row, lines = order_rows(order, 4096)
    transition, event = transition_rows(change, order)
    assert placed_entries(order, order.created_at_ms, 4096) == (
        ("order", row, lines), ("transition", transition, event, finished_rows(change, order)))
