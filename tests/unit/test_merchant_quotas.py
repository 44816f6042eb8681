"""Per-merchant quotas on an order shard: one merchant's orders and carts cannot fill the
shard for the others; each refusal names the quota, and room comes back as its orders
leave."""

from __future__ import annotations

import pytest

from flashtx.engine.carts import CartBook
from flashtx.engine.errors import Overloaded, ResultCode
from flashtx.engine.orders import MERCHANT_ORDERS_FULL, OrderBook


def place(book: OrderBook, merchant_id: str, n: int) -> ResultCode:
    begun = book.begin(merchant_id, f"k{n}", f"b{n}", (("a", 1),), 0)
    if begun.code is ResultCode.OK:
        book.complete(begun.order_id, merchant_id, f"k{n}", f"b{n}", (("a", 1),), (5,), n,
                      n + 60_000)
        return ResultCode.OK
    assert begun.message == MERCHANT_ORDERS_FULL
    return begun.code


def test_one_merchant_cannot_fill_an_order_shard_for_the_others() -> None:
    book = OrderBook("e1", orders_max=100, merchant_orders_max=3)
    book.evicting = True
    assert [place(book, "greedy", n) for n in range(5)] == [ResultCode.OK] * 3 + [
        ResultCode.OVERLOADED] * 2
    assert [place(book, "other", n) for n in range(3)] == [ResultCode.OK] * 3
    # A finished order that leaves memory gives its merchant room again.
    first = next(o for o in book.orders.values() if o.merchant_id == "greedy")
    book.apply(first, "cancel", 10)
    book.evict(11, 0, (), 10)
    assert place(book, "greedy", 10) is ResultCode.OK
    book.check_invariants()
    assert book.per_merchant == {"greedy": 3, "other": 3}


def test_one_merchant_cannot_fill_the_carts_of_an_order_shard() -> None:
    book = CartBook(idle_ms=1_000, lines_max=5, carts_max=100, merchant_carts_max=2)
    for buyer in ("a", "b"):
        book.check_room(("greedy", buyer, ""), "s")
        book.set_line(("greedy", buyer, ""), "s", 1, 0)
    with pytest.raises(Overloaded) as caught:
        book.check_room(("greedy", "c", ""), "s")
    assert caught.value.metadata["quota"] == "merchant_carts_per_shard_max"
    book.check_room(("other", "a", ""), "s")  # another merchant still has room
    book.remove(("greedy", "a", ""))
    book.check_room(("greedy", "c", ""), "s")  # and so has this one, a cart later
    assert book.per_merchant == {"greedy": 1}
