"""Expiry heaps grow with live items, not with operations: a cart changed in a loop, holds
moved back and forth, orders placed and cancelled with a week-long payment window."""

from __future__ import annotations

from flashtx.engine.carts import CartBook, hold_id
from flashtx.engine.expiry import COMPACT_FLOOR, ExpiryHeap
from flashtx.engine.orders import OrderBook
from flashtx.engine.stock import StockLedger
from tests.unit.stock_writes import upsert

CHURN = 20_000  # operations: ten times what a heap keeps before it looks at stale entries
WEEK_MS = 7 * 24 * 3600 * 1000


def test_a_cart_changed_in_a_loop_keeps_one_entry() -> None:
    book = CartBook(idle_ms=86_400_000, lines_max=10, carts_max=10)
    key = ("m", "buyer", "")
    for n in range(CHURN):
        book.set_line(key, "a", 1 + n % 5, n)
    assert book.expiry_entries <= 2 * len(book.carts) + COMPACT_FLOOR
    # Still expires when it should: at the last change plus the idle time.
    assert [c.key for c in book.idle(CHURN - 1 + 86_400_000, 10)] == [key]


def test_holds_moved_back_and_forth_keep_one_entry_each() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 10, 0, 0, merchant_id="m", name="A", price=1)
    hold = hold_id(("m", "x", ""), "a")
    for n in range(CHURN):
        assert ledger.hold(hold, "m", "x", "a", 1 + n % 3, n + WEEK_MS, n)[0].name == "OK"
    assert ledger.expiry_entries <= 2 * len(ledger.reservations) + COMPACT_FLOOR
    ledger.check_invariants()
    assert ledger.expire(CHURN - 1 + WEEK_MS, 10) == [hold]


def test_orders_placed_and_cancelled_with_a_long_window_leave_no_entries() -> None:
    book = OrderBook("e1")
    book.evicting = True  # as with a database: finished orders leave memory
    for n in range(CHURN):
        begun = book.begin("m", f"k{n}", f"b{n}", (("a", 1),), 0)
        order = book.complete(begun.order_id, "m", f"k{n}", f"b{n}", (("a", 1),), (5,), n,
                              n + WEEK_MS)
        book.apply(book.orders[order.order_id], "cancel", n)
        book.evict(n + 1, 0, (), 10)  # finished orders leave (their keys stay)
    assert len(book.orders) < 20
    assert book.expiry_entries <= 2 * (len(book.orders) + book.retained_keys) + 2 * COMPACT_FLOOR


def test_a_compacted_heap_keeps_the_live_entries_in_order() -> None:
    live = {f"k{n}": n for n in range(0, 3000, 3)}
    heap: ExpiryHeap[str] = ExpiryHeap(lambda at, key: live.get(key) == at, lambda: len(live),
                                       floor=10)
    for n in range(3000):
        heap.push(n, f"k{n}")
        heap.push(n + 1, f"k{n}")  # an older expiry left behind
    assert heap.compactions > 0 and len(heap) <= 2 * len(live) + 10
    popped = [heap.pop() for _ in range(len(heap))]
    assert [key for at, key in popped if live.get(key) == at] == sorted(
        live, key=lambda key: live[key])
