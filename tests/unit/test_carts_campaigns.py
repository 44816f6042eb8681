"""Carts, campaigns and buckets in the pure core: windows, per-buyer counts, rebalancing,
cart holds in the stock ledger, and moving units between counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashtx.engine.campaigns import (
    BuyerUnits,
    Campaign,
    CampaignClosed,
    CampaignSku,
    bucket_key,
    rebalance_moves,
    split_units,
    validate_campaign,
)
from flashtx.engine.carts import CartBook, hold_id
from flashtx.engine.errors import FailedPrecondition, InvalidArgument, LimitExceeded, ResultCode
from flashtx.engine.stock import StockLedger
from tests.unit.stock_writes import upsert


def campaign(buckets: int = 3, limit: int = 2) -> Campaign:
    keys = tuple(bucket_key("tv", "bf", k) for k in range(buckets))
    return Campaign("m", "bf", "Black Friday", 1_000, 2_000, buckets,
                    {"tv": CampaignSku("tv", 99, 30, limit, 30, keys)}, 0)


def test_window_is_half_open_and_end_is_final() -> None:
    sale = campaign()
    for now in (0, 999, 2_000, 5_000):
        with pytest.raises(CampaignClosed):
            sale.check_open(now)
    sale.check_open(1_000)
    sale.check_open(1_999)
    sale.check_cart(0)  # carts fill before the start
    with pytest.raises(CampaignClosed):
        sale.check_cart(2_000)
    sale.ended = True
    with pytest.raises(CampaignClosed):
        sale.check_open(1_500)


def test_buyer_draws_from_its_bucket_then_the_next_ones() -> None:
    sale = campaign(buckets=3)
    tries = [sale.stock_lines("alice", [("tv", 1)], attempt)[0][0] for attempt in range(3)]
    assert sorted(tries) == sorted(sale.skus["tv"].bucket_keys)  # each bucket once
    assert sale.stock_lines("alice", [("tv", 1)], 0) == sale.stock_lines("alice", [("tv", 1)], 3)
    with pytest.raises(FailedPrecondition):
        sale.stock_lines("alice", [("radio", 1)], 0)


def test_bucket_ids_cannot_be_client_ids() -> None:
    from flashtx.engine.validation import check_id

    with pytest.raises(InvalidArgument):
        check_id("sku_id", bucket_key("tv", "bf", 0), 64)


@given(st.integers(0, 10_000), st.integers(1, 16))
def test_split_units_is_even_and_complete(units: int, buckets: int) -> None:
    shares = split_units(units, buckets)
    assert sum(shares) == units and max(shares) - min(shares) <= 1


@settings(max_examples=300)
@given(st.lists(st.integers(0, 1_000), min_size=1, max_size=16), st.integers(1, 100))
def test_rebalance_moves_conserve_units_and_never_empty_a_source(available: list[int],
                                                               low_water: int) -> None:
    left = list(available)
    for source, target, units in rebalance_moves(available, low_water):
        assert source != target and units > 0
        assert left[source] - units >= low_water  # a source stays above the low water
        left[source] -= units
        left[target] += units
    assert sum(left) == sum(available)
    assert min(left) >= 0


def test_rebalance_refills_an_empty_bucket_from_the_fullest() -> None:
    assert rebalance_moves([0, 100, 40], 20) == [(1, 0, 50)]
    assert rebalance_moves([5, 6, 7], 20) == []  # too little left to be worth moving


def test_buyer_units_all_or_nothing() -> None:
    units = BuyerUnits()
    units.take("m", "bf", "x", [("tv", 2, 2)])
    with pytest.raises(LimitExceeded):
        units.take("m", "bf", "x", [("radio", 1, 5), ("tv", 1, 2)])
    assert units.held("m", "bf", "x", "radio") == 0  # nothing counted from the refusal
    units.give_back("m", "bf", "x", [("tv", 1)])
    units.take("m", "bf", "x", [("tv", 1, 2)])
    assert units.held("m", "bf", "x", "tv") == 2
    assert units.held("m", "other", "x", "tv") == 0


def test_validate_campaign_names_the_field() -> None:
    good = [("tv", 99, 0, 0)]
    with pytest.raises(InvalidArgument, match="buckets"):
        validate_campaign(0, 10, 0, good, 16, 100, 0)
    with pytest.raises(InvalidArgument, match="ends_at_ms"):
        validate_campaign(10, 10, 1, good, 16, 100, 0)
    with pytest.raises(InvalidArgument, match="skus\\[1\\].sku_id"):
        validate_campaign(0, 10, 1, good * 2, 16, 100, 0)
    validate_campaign(0, 10, 1, good, 16, 100, 0)


def test_cart_book_bounds_idle_expiry_and_ordered_lines() -> None:
    book = CartBook(idle_ms=1_000, lines_max=2, carts_max=2)
    key = ("m", "x", "")
    book.set_line(key, "a", 2, 0)
    book.set_line(key, "b", 1, 10)
    with pytest.raises(InvalidArgument):
        book.set_line(key, "c", 1, 20)
    book.set_line(("m", "y", ""), "a", 1, 0)
    with pytest.raises(FailedPrecondition):
        book.set_line(("m", "z", ""), "a", 1, 0)
    assert book.get(key).order_lines() == (("a", 2), ("b", 1))  # type: ignore[union-attr]
    # What an order took leaves the cart; a line grown meanwhile keeps the difference.
    book.set_line(key, "a", 3, 500)
    left = book.take_ordered(key, [("a", 2), ("b", 1)], 600)
    assert left is not None and left.order_lines() == (("a", 1),)
    assert [cart.key for cart in book.idle(1_500, 10)] == [("m", "y", "")]  # idle since 0
    assert [cart.key for cart in book.idle(1_599, 10)] == []  # touched at 600
    assert [cart.key for cart in book.idle(1_600, 10)] == [key]
    assert book.carts == {}


def test_cart_hold_resizes_and_only_the_difference_must_be_free() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 3, 0, 0, merchant_id="m", name="A", price=100)
    hold = hold_id(("m", "x", ""), "a")
    assert ledger.hold(hold, "m", "x", "a", 2, 1_000, 0) == (ResultCode.OK, 100)
    assert ledger.hold(hold, "m", "x", "a", 3, 1_000, 0)[0] is ResultCode.OK
    assert ledger.hold(hold, "m", "x", "a", 4, 1_000, 0)[0] is ResultCode.OUT_OF_STOCK
    assert ledger.level("m", "a", 0).reserved == 3
    assert ledger.hold(hold, "m", "x", "a", 1, 1_000, 0)[0] is ResultCode.OK
    assert ledger.level("m", "a", 0).available == 2
    ledger.check_invariants()
    assert ledger.expire(1_000, 10) == [hold]  # a hold returns by itself
    assert ledger.level("m", "a", 0).available == 3
    ledger.check_invariants()


def test_checkout_takes_over_the_cart_hold() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 2, 0, 0, merchant_id="m", name="A", price=100)
    hold = hold_id(("m", "x", ""), "a")
    ledger.hold(hold, "m", "x", "a", 2, 1_000, 0)
    assert ledger.reserve("o1", "m", "y", (("a", 1),), 5_000, 0)[0] is ResultCode.OUT_OF_STOCK
    ledger.release(hold, 0)
    assert ledger.reserve("o2", "m", "x", (("a", 2),), 5_000, 0)[0] is ResultCode.OK
    ledger.check_invariants()


@pytest.mark.parametrize("ends", ["abandoned", "expired"])
def test_an_order_that_ends_gives_back_only_the_holds_that_still_fit(ends: str) -> None:
    """A cart line held 2 units at the stock shard (its shrink to 1 was lost); checkout
    took the hold over for an order of 1, freeing the other unit, which another buyer
    reserved. The order is abandoned (or expires): its cart's hold comes back only as far
    as units are free, never past on-hand (simulator seed 96473 oversold here)."""
    ledger = StockLedger()
    upsert(ledger, "a", 2, 0, 0, merchant_id="m", name="A", price=100)
    hold = hold_id(("m", "x", ""), "a")
    assert ledger.hold(hold, "m", "x", "a", 2, 9_000, 0)[0] is ResultCode.OK
    assert ledger.check_out("o1", "m", "x", (("a", 1),), 5_000, 0, 0, [hold])[0] is (
        ResultCode.OK)
    assert ledger.reserve("o2", "m", "y", (("a", 1),), 9_000, 0)[0] is ResultCode.OK
    if ends == "abandoned":
        assert ledger.abandon("o1", 10)
    else:
        assert ledger.expire(5_000, 10) == ["o1"]
    ledger.check_invariants()
    level = ledger.level("m", "a", 0)
    assert level.reserved + level.sold <= 2
    assert "o2" in ledger.reservations


def test_withdraw_and_deposit_move_units_without_overselling() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 10, 0, 0, merchant_id="m", name="A", price=100)
    ledger.reserve("o1", "m", "x", (("a", 4),), 5_000, 0)
    with pytest.raises(FailedPrecondition):
        ledger.withdraw("m", "a", 7)  # only 6 are available
    assert ledger.withdraw("m", "a", 0) == 6  # everything available
    ledger.deposit("m", "a~c~0", "A", 50, 6)
    assert ledger.level("m", "a~c~0", 0).available == 6
    assert ledger.level("m", "a", 0).available == 0
    ledger.check_invariants()
    # A bucket emptying is not a sell-out of the SKU: no sold_out change for buckets.
    ledger.drain_changes()
    ledger.reserve("o2", "m", "x", (("a~c~0", 6),), 5_000, 0)
    assert not [c for c in ledger.drain_changes() if c.kind == "sold_out"]


def test_a_counter_expecting_units_says_retry_not_sold_out() -> None:
    ledger = StockLedger()
    upsert(ledger, "b~c~0", 1, 0, 0, merchant_id="m", name="B", price=5)
    ledger.reserve("o1", "m", "x", (("b~c~0", 1),), 9_000, 0)
    ledger.expect("m", "b~c~0", 10, until_ms=1_000)
    assert ledger.reserve("o2", "m", "y", (("b~c~0", 1),), 9_000, 500)[0] is (
        ResultCode.UNAVAILABLE)
    ledger.deposit("m", "b~c~0", "B", 5, 10)
    assert ledger.reserve("o2", "m", "y", (("b~c~0", 1),), 9_000, 600)[0] is ResultCode.OK
    ledger.expect("m", "b~c~0", 10, until_ms=1_000)
    assert ledger.reserve("o3", "m", "z", (("b~c~0", 99),), 9_000, 1_000)[0] is (
        ResultCode.OUT_OF_STOCK)  # the announcement lapsed: nothing is on its way
    ledger.check_invariants()


def test_a_carts_add_request_ids_survive_its_row() -> None:
    """The request ids of a cart's adds are saved with its lines and read back (older rows,
    a plain list of lines, still load)."""
    import json

    from flashtx.actors.persistence import cart_entry, cart_from_row
    from flashtx.engine.carts import ADDS_REMEMBERED, Cart, CartLine

    cart = Cart(("m", "b", ""), {"a": CartLine("a", 2)}, 5, 9)
    for n in range(ADDS_REMEMBERED + 3):
        cart.remember_add(f"r{n}", "a", 1)
    assert len(cart.adds) == ADDS_REMEMBERED and "r0" not in cart.adds  # oldest forgotten
    _, _, row = cart_entry(cart.key, cart, 7)
    names = ("merchant_id", "buyer_id", "campaign_id", "slot", "lines", "updated_at_ms",
             "expires_at_ms")
    back = cart_from_row(dict(zip(names, row, strict=True)))
    assert back == cart
    old_row = dict(zip(names, row, strict=True), lines=json.dumps([["a", 2, "", 0, ""]]))
    assert cart_from_row(old_row) == Cart(cart.key, cart.lines, 5, 9)


def test_a_handover_naming_a_sku_not_held_here_is_found_before_anything_changes() -> None:
    """An order shard routing by a table the stock shard has not loaded: the SKUs it names
    are found first (the stock shard answers UNAVAILABLE), nothing replaced."""
    ledger = StockLedger()
    upsert(ledger, "a", 3, 0, 0, merchant_id="m", name="A", price=100)
    holds = [("o1", "m", "x", (("a", 1), ("b", 1)), 5_000)]
    sales = [("m", "c", "", 2), ("m", "a", "", 1)]
    assert ledger.unknown_skus([(0, holds, sales)]) == {("m", "b"), ("m", "c")}
    assert ledger.unknown_skus([(0, holds[:0], sales[1:])]) == set()
    assert ledger.unknown_skus([(0, [], None)]) == set()
