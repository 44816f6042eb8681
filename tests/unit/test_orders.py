"""Order state machine and order book: idempotency, transitions, deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashtx.engine.errors import InvalidTransition, NotFound, ResultCode
from flashtx.engine.orders import OrderBook, OrderStatus, StockAction, transition
from flashtx.engine.stock import StockLedger
from tests.unit.stock_writes import upsert

EVENTS = ["pay", "cancel", "expire", "fulfil"]
TERMINAL = {OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}


def place(book: OrderBook, key: str = "k1", buyer: str = "b", lines=(("a", 1),),
          now_ms: int = 0, deadline_ms: int = 1_000):
    begin = book.begin("m", key, buyer, lines, slot=7)
    assert begin.code is ResultCode.OK
    return book.complete(begin.order_id, "m", key, buyer, lines, [100] * len(lines), now_ms,
                         deadline_ms)


@given(st.lists(st.sampled_from(EVENTS), max_size=12))
def test_transitions_keep_stock_consistent(events: list[str]) -> None:
    """Driving the state machine and a ledger together: stock is held exactly while an
    order is RESERVED, sold while PAID or FULFILLED, and free otherwise."""
    ledger = StockLedger()
    upsert(ledger, "a", 1, 0, 0, merchant_id="m", name="A", price=100)
    assert ledger.reserve("o", "m", "b", (("a", 1),), 10_000, 0)[0] is ResultCode.OK
    status = OrderStatus.RESERVED
    for event in events:
        try:
            status, action = transition(status, event)
        except InvalidTransition:
            continue
        if action is StockAction.COMMIT:
            assert ledger.commit("o", 0)[0] is ResultCode.OK
        elif action is StockAction.RETURN:
            ledger.return_sold("o", "m", "b", (("a", 1),), 0)
        elif action is StockAction.RELEASE:
            assert ledger.release("o", 0)
    level = ledger.level("m", "a", 0)
    expected = {OrderStatus.RESERVED: (1, 0), OrderStatus.PAID: (0, 1),
                OrderStatus.FULFILLED: (0, 1)}.get(status, (0, 0))
    assert (level.reserved, level.sold) == expected
    ledger.check_invariants()


@given(st.sampled_from(list(OrderStatus)), st.sampled_from(EVENTS))
def test_terminal_states_accept_nothing(status: OrderStatus, event: str) -> None:
    if status in TERMINAL:
        with pytest.raises(InvalidTransition):
            transition(status, event)


def test_same_key_same_payload_replays_and_different_payload_conflicts() -> None:
    book = OrderBook("e0")
    order = place(book)
    replay = book.begin("m", "k1", "b", (("a", 1),), slot=7)
    assert replay.code is ResultCode.REPLAYED and replay.order == order
    conflict = book.begin("m", "k1", "b", (("a", 2),), slot=7)
    assert conflict.code is ResultCode.IDEMPOTENCY_CONFLICT
    other_buyer = book.begin("m", "k1", "c", (("a", 1),), slot=7)
    assert other_buyer.code is ResultCode.IDEMPOTENCY_CONFLICT
    assert len(book.orders) == 1


def test_a_key_in_flight_makes_concurrent_retries_wait() -> None:
    book = OrderBook("e0")
    first = book.begin("m", "k1", "b", (("a", 1),), slot=7)
    second = book.begin("m", "k1", "b", (("a", 1),), slot=7)
    assert first.code is ResultCode.OK
    assert second.code is ResultCode.UNAVAILABLE and second.order_id == first.order_id
    book.abandon("m", "k1")  # refused: a retry may try again
    assert book.begin("m", "k1", "b", (("a", 1),), slot=7).code is ResultCode.OK


def test_keys_are_per_merchant() -> None:
    book = OrderBook("e0")
    place(book)
    assert book.begin("other", "k1", "b", (("a", 1),), slot=7).code is ResultCode.OK


def test_order_ids_carry_their_slot() -> None:
    order = place(OrderBook("e0"))
    assert int(order.order_id[:4], 16) == 7


def test_paying_after_the_deadline_fails_and_expiry_finds_the_order() -> None:
    book = OrderBook("e0")
    order = place(book, deadline_ms=1_000)
    with pytest.raises(InvalidTransition):
        book.check("m", order.order_id, "pay", now_ms=1_000)
    [due] = book.due_for_expiry(now_ms=1_000, items_max=10)
    snapshot = book.apply(due, "expire", 1_000)
    assert snapshot.status == OrderStatus.EXPIRED and snapshot.sequence == 2
    with pytest.raises(InvalidTransition):
        book.check("m", order.order_id, "pay", now_ms=1_001)


def test_repeating_a_step_is_a_no_op() -> None:
    book = OrderBook("e0")
    order = place(book)
    stored, action = book.check("m", order.order_id, "pay", 10)
    assert action is StockAction.COMMIT
    paid = book.apply(stored, "pay", 10)
    _, again = book.check("m", order.order_id, "pay", 20)
    assert again is None and book.apply(stored, "pay", 20) == paid


def test_cancel_after_payment_refunds() -> None:
    book = OrderBook("e0")
    order = book.orders[place(book).order_id]
    book.apply(order, "pay", 1)
    cancelled = book.apply(order, "cancel", 2)
    assert cancelled.status == OrderStatus.CANCELLED and cancelled.refunded
    assert [c.event for c in book.drain_changes()] == ["placed", "pay", "cancel"]


def test_another_merchants_order_is_not_found() -> None:
    book = OrderBook("e0")
    order = place(book)
    with pytest.raises(NotFound):
        book.get("other", order.order_id)


def test_list_for_buyer_pages_newest_first() -> None:
    book = OrderBook("e0")
    ids = [place(book, key=f"k{i}", now_ms=i).order_id for i in range(5)]
    page, after = book.list_for_buyer("m", "b", None, 2)
    assert [o.order_id for o in page] == [ids[4], ids[3]]
    page, after = book.list_for_buyer("m", "b", after, 2)
    assert [o.order_id for o in page] == [ids[2], ids[1]]
    page, after = book.list_for_buyer("m", "b", after, 2)
    assert [o.order_id for o in page] == [ids[0]] and after is None


def test_orders_placed_while_paging_never_shift_a_page() -> None:
    """Every order that existed at the first page is listed exactly once, however many
    are placed (in the same millisecond too) while a client pages."""
    book = OrderBook("e0")
    existing = [place(book, key=f"old{i}", now_ms=i // 3).order_id for i in range(9)]
    seen: list[str] = []
    page, after = book.list_for_buyer("m", "b", None, 2)
    n = 0
    while True:
        seen += [o.order_id for o in page]
        for _ in range(3):  # new orders arrive between pages
            n += 1
            place(book, key=f"new{n}", now_ms=2)
        if after is None:
            break
        page, after = book.list_for_buyer("m", "b", after, 2)
    assert sorted(seen) == sorted(existing) and len(seen) == len(set(seen))


def test_the_idempotency_key_table_is_bounded_and_replays_still_answer() -> None:
    book = OrderBook("e0", keys_max=2)
    first = place(book, key="k1")
    place(book, key="k2")
    full = book.begin("m", "k3", "b", (("a", 1),), slot=7)
    assert full.code is ResultCode.OVERLOADED and "idempotency keys" in full.message
    assert len(book.orders) == 2
    replay = book.begin("m", "k1", "b", (("a", 1),), slot=7)  # a known key still answers
    assert replay.code is ResultCode.REPLAYED and replay.order == first


def test_place_results_cross_a_process_boundary_unchanged() -> None:
    import pickle

    from flashtx.engine.errors import OutOfStock
    from flashtx.engine.orders import PlaceResults

    order = place(OrderBook("e0"))
    results = PlaceResults([(ResultCode.OK, order), (ResultCode.REPLAYED, order),
                            (ResultCode.OVERLOADED, "order shard is full"),
                            (ResultCode.OUT_OF_STOCK, OutOfStock("sku a", sku_id="a"))])
    copied = pickle.loads(pickle.dumps(results))
    assert isinstance(copied, PlaceResults)
    assert copied[:3] == results[:3] and type(copied[0][1]) is type(order)
    assert all(type(code) is ResultCode for code, _ in copied)
    assert (copied[3][0], copied[3][1].reason) == (ResultCode.OUT_OF_STOCK, results[3][1].reason)


def test_an_order_id_names_its_slot_and_anything_else_is_not_found() -> None:
    from flashtx.engine.errors import NotFound
    from flashtx.engine.orders import new_order_id, order_slot

    assert order_slot(new_order_id(4095, "abc123", 7)) == 4095
    assert order_slot(new_order_id(0, "abc123", 7)) == 0
    arabic_digits = "\u0663" * 4  # int() reads them, an order id never has them
    for bad in ("", "ab", "+abc0000", " abc0000", "a_bc0000", "zz120000", arabic_digits):
        with pytest.raises(NotFound):
            order_slot(bad)
