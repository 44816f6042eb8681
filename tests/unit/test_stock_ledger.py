"""The stock ledger against a simple model: random sequences of reserve / commit /
release / adjust / expire never oversell, and the counters always equal what the
reservations imply."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from flashtx.engine.errors import (
    FailedPrecondition,
    NotFound,
    OutOfStock,
    ResultCode,
    error_for,
    explain,
)
from flashtx.engine.stock import StockLedger
from tests.unit.stock_writes import adjust, upsert

MERCHANT = "m"
SKUS = ["a", "b", "c"]
BUYERS = ["x", "y"]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = StockLedger()
        self.now_ms = 0
        self.next_order = 0
        self.model_on_hand = {}
        self.model_limit = {}
        # order id -> (buyer, lines, expires_at_ms, committed)
        self.model_orders: dict[str, tuple[str, tuple[tuple[str, int], ...], int, bool]] = {}
        # Committed since the owner last handed its state over: the owner may not know.
        self.committed_unknown: set[str] = set()
        for sku in SKUS:
            upsert(self.ledger, sku, 5, 0, 0)
            self.model_on_hand[sku] = 5
            self.model_limit[sku] = 0

    def _held(self, sku: str, committed: bool | None = None, buyer: str | None = None) -> int:
        return sum(q for b, lines, _, c in self.model_orders.values() for s, q in lines
                   if s == sku and (committed is None or c == committed)
                   and (buyer is None or b == buyer))

    @rule(sku=st.sampled_from(SKUS), on_hand=st.integers(0, 10), limit=st.integers(0, 3))
    def upsert(self, sku: str, on_hand: int, limit: int) -> None:
        if on_hand < self._held(sku):
            with pytest.raises(FailedPrecondition):
                upsert(self.ledger, sku, on_hand, limit, self.now_ms)
            return
        upsert(self.ledger, sku, on_hand, limit, self.now_ms)
        self.model_on_hand[sku], self.model_limit[sku] = on_hand, limit

    @rule(sku=st.sampled_from(SKUS), delta=st.integers(-5, 5))
    def adjust(self, sku: str, delta: int) -> None:
        if self.model_on_hand[sku] + delta < self._held(sku):
            with pytest.raises(FailedPrecondition):
                adjust(self.ledger, sku, delta, self.now_ms)
            return
        adjust(self.ledger, sku, delta, self.now_ms)
        self.model_on_hand[sku] += delta

    @rule(buyer=st.sampled_from(BUYERS),
          lines=st.dictionaries(st.sampled_from([*SKUS, "unknown"]), st.integers(1, 4),
                                min_size=1, max_size=3),
          ttl_ms=st.integers(1, 100))
    def reserve(self, buyer: str, lines: dict[str, int], ttl_ms: int) -> None:
        order_id = f"o{self.next_order}"
        self.next_order += 1
        line_tuple = tuple(sorted(lines.items()))
        code, _ = self.ledger.reserve(order_id, MERCHANT, buyer, line_tuple,
                                      self.now_ms + ttl_ms, self.now_ms)
        fits = all(
            sku in self.model_on_hand
            and self.model_on_hand[sku] - self._held(sku) >= q
            and (not self.model_limit[sku] or self._held(sku, buyer=buyer) + q
                 <= self.model_limit[sku])
            for sku, q in line_tuple)
        assert (code is ResultCode.OK) == fits, (code, line_tuple)
        if fits:
            self.model_orders[order_id] = (buyer, line_tuple, self.now_ms + ttl_ms, False)

    def _pick(self, data: st.DataObject, committed: bool) -> str | None:
        candidates = sorted(o for o, v in self.model_orders.items() if v[3] == committed)
        return data.draw(st.sampled_from(candidates)) if candidates else None

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        order_id = self._pick(data, committed=False)
        if order_id is None:
            return
        assert self.ledger.commit(order_id, self.now_ms)[0] is ResultCode.OK
        # A repeat (its first answer was lost) is answered OK and changes nothing: the
        # model's counters are checked after every rule.
        assert self.ledger.commit(order_id, self.now_ms)[0] is ResultCode.OK
        buyer, lines, expires, _ = self.model_orders[order_id]
        self.model_orders[order_id] = (buyer, lines, expires, True)
        self.committed_unknown.add(order_id)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        order_id = self._pick(data, committed=False)
        if order_id is None:
            return
        assert self.ledger.release(order_id, self.now_ms)
        assert not self.ledger.release(order_id, self.now_ms)  # idempotent
        del self.model_orders[order_id]

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        order_id = self._pick(data, committed=True)
        if order_id is None:
            return
        buyer, lines, _, _ = self.model_orders.pop(order_id)
        self.ledger.return_sold(order_id, MERCHANT, buyer, lines, self.now_ms)
        # A repeat (its first answer was lost) returns nothing more.
        self.ledger.return_sold(order_id, MERCHANT, buyer, lines, self.now_ms)

    @rule(data=st.data())
    def payment_answer_lost_then_released(self, data: st.DataObject) -> None:
        """The order shard never learnt that its commit went through (the answer was
        lost), so the order stayed reserved and was then cancelled or expired: the
        release undoes the sale, once."""
        candidates = sorted(o for o in self.committed_unknown if o in self.model_orders)
        if not candidates:
            return
        order_id = data.draw(st.sampled_from(candidates))
        assert self.ledger.release(order_id, self.now_ms)
        assert not self.ledger.release(order_id, self.now_ms)
        del self.model_orders[order_id]

    @rule(with_sales=st.booleans())
    def order_shard_restarts(self, with_sales: bool) -> None:
        """The owner of every hold and sale replaces them with what it knows: nothing
        changes."""
        holds = [(o, MERCHANT, b, lines, expires)
                 for o, (b, lines, expires, committed) in self.model_orders.items()
                 if not committed]
        sold = [(MERCHANT, s, b, q) for b, lines, _, committed in self.model_orders.values()
                if committed for s, q in lines]
        self.ledger.replace_owned(0, holds, sold if with_sales else None, self.now_ms)
        self.committed_unknown.clear()

    @rule(elapsed_ms=st.integers(0, 60))
    def time_passes(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        expired = set(self.ledger.expire(self.now_ms, 1000))
        due = {o for o, (_, _, expires, committed) in self.model_orders.items()
               if expires <= self.now_ms and not committed}
        assert expired == due
        for order_id in due:
            del self.model_orders[order_id]

    @invariant()
    def counters_match_model(self) -> None:
        self.ledger.check_invariants()
        for sku in SKUS:
            level = self.ledger.level(MERCHANT, sku, self.now_ms)
            assert level.on_hand == self.model_on_hand[sku]
            assert level.reserved == self._held(sku, committed=False)
            assert level.sold == self._held(sku, committed=True)
            assert level.available >= 0
            assert level.reserved + level.sold <= level.on_hand


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_reserve_is_all_or_nothing_across_lines() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 5, 0, 0, merchant_id="m")
    upsert(ledger, "b", 1, 0, 0, merchant_id="m", name="B", price=200)
    code, message = ledger.reserve("o1", "m", "x", (("a", 2), ("b", 2)), 10, 0)
    assert code is ResultCode.OUT_OF_STOCK and "b" in str(message)
    assert ledger.level("m", "a", 0).reserved == 0
    assert ledger.reservations == {}


def test_reserve_retry_of_the_same_order_is_idempotent() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 5, 0, 0, merchant_id="m")
    first = ledger.reserve("o1", "m", "x", (("a", 2),), 10, 0)
    again = ledger.reserve("o1", "m", "x", (("a", 2),), 10, 0)
    assert first == again == (ResultCode.OK, (100,))
    assert ledger.level("m", "a", 0).reserved == 2


def test_per_buyer_limit_counts_sales_and_frees_on_release() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 10, 1, 0, merchant_id="m", name="A", price=100)
    assert ledger.reserve("o1", "m", "x", (("a", 1),), 10, 0)[0] is ResultCode.OK
    ledger.commit("o1", 0)
    assert ledger.reserve("o2", "m", "x", (("a", 1),), 10, 0)[0] is ResultCode.LIMIT_EXCEEDED
    assert ledger.reserve("o3", "m", "y", (("a", 1),), 10, 0)[0] is ResultCode.OK
    ledger.return_sold("o1", "m", "x", (("a", 1),), 0)  # a refund gives the right back
    assert ledger.reserve("o4", "m", "x", (("a", 1),), 10, 0)[0] is ResultCode.OK


def test_refusals_carry_what_a_client_acts_on() -> None:
    """OUT_OF_STOCK and LIMIT_EXCEEDED name the SKU, what is available, the limit, as
    ErrorInfo metadata (no parsing of the message); a campaign bucket is named by its SKU
    and campaign, never by the internal bucket id."""
    ledger = StockLedger()
    upsert(ledger, "a", 3, 2, 0, merchant_id="m")
    upsert(ledger, "b~c1~0~7", 1, 0, 0, merchant_id="m")
    assert ledger.reserve("o1", "m", "x", (("a", 2),), 10, 0)[0] is ResultCode.OK
    code, value = ledger.reserve("o2", "m", "y", (("a", 2),), 10, 0)
    assert explain(code, value) == ("OUT_OF_STOCK", "sku a has too few units available (1)",
                                    {"sku_id": "a", "available": "1", "requested": "2"})
    code, value = ledger.reserve("o3", "m", "x", (("a", 1),), 10, 0)
    assert explain(code, value)[0::2] == ("LIMIT_EXCEEDED",
                                          {"sku_id": "a", "limit": "2", "held": "2"})
    code, value = ledger.reserve("o4", "m", "x", (("b~c1~0~7", 2),), 10, 0)
    error = error_for(code, value)
    assert isinstance(error, OutOfStock) and "~" not in error.message
    assert error.metadata == {"sku_id": "b", "campaign_id": "c1", "requested": "2"}


def test_unknown_sku_is_not_found() -> None:
    ledger = StockLedger()
    assert ledger.reserve("o1", "m", "x", (("nope", 1),), 10, 0)[0] is ResultCode.NOT_FOUND
    with pytest.raises(NotFound):
        adjust(ledger, "nope", 1, 0, merchant_id="m")


def test_committed_reservations_never_expire() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 3, 0, 0, merchant_id="m", name="A", price=100)
    ledger.reserve("o1", "m", "x", (("a", 1),), 10, 0)
    ledger.commit("o1", 5)
    assert ledger.expire(1_000, 100) == []
    assert ledger.level("m", "a", 1_000).sold == 1


def test_a_restarted_owner_replaces_a_sale_it_never_made_durable() -> None:
    """The order shard died after the sale reached the stock shard but before the PAID
    transition was committed: it comes back with the order RESERVED, and the stock shard
    must count a hold, not a hold and a sale."""
    ledger = StockLedger()
    upsert(ledger, "a", 2, 0, 0, merchant_id="m", name="A", price=100)
    ledger.reserve("o1", "m", "x", (("a", 2),), 10, 0, owner=1)
    ledger.commit("o1", 0)
    ledger.replace_owned(1, [("o1", "m", "x", (("a", 2),), 10)], [], 0)
    level = ledger.level("m", "a", 0)
    assert (level.reserved, level.sold, level.available) == (2, 0, 0)
    ledger.check_invariants()


def test_replacing_an_owners_holds_drops_orphans_and_keeps_others() -> None:
    ledger = StockLedger()
    upsert(ledger, "a", 3, 0, 0, merchant_id="m", name="A", price=100)
    ledger.reserve("kept", "m", "x", (("a", 1),), 10, 0, owner=1)
    ledger.reserve("orphan", "m", "y", (("a", 1),), 10, 0, owner=1)
    ledger.reserve("other", "m", "z", (("a", 1),), 10, 0, owner=2)
    assert ledger.replace_owned(1, [("kept", "m", "x", (("a", 1),), 10)], None, 0) == 2
    assert set(ledger.reservations) == {"kept", "other"}
    assert ledger.level("m", "a", 0).available == 1
    ledger.check_invariants()


def test_a_hold_past_its_expiry_is_not_restored_over_units_given_away_since() -> None:
    """The stock shard freed an order's hold at its expiry (the order shard had not yet
    expired the order), and the unit went to another order; then the stock shard
    restarted and the order shard handed both orders over. The expired hold is not
    restored: counted again it would make the SKU oversold and the shard refuse to start,
    though its order can no longer be paid."""
    ledger = StockLedger()
    upsert(ledger, "a", 1, 0, 0, merchant_id="m", name="A", price=100)
    assert ledger.reserve("late", "m", "x", (("a", 1),), 100, 0, owner=1)[0] is ResultCode.OK
    assert ledger.expire(200, 10) == ["late"]
    assert ledger.reserve("next", "m", "y", (("a", 1),), 900, 200, owner=1)[0] is ResultCode.OK
    restarted = StockLedger()  # the shard's next incarnation: the catalogue, then handovers
    upsert(restarted, "a", 1, 0, 0, merchant_id="m", name="A", price=100)
    restarted.replace_owned(1, [("late", "m", "x", (("a", 1),), 100),
                                ("next", "m", "y", (("a", 1),), 900)], [], 300)
    restarted.check_invariants()
    assert set(restarted.reservations) == {"next"}
    level = restarted.level("m", "a", 300)
    assert (level.reserved, level.available) == (1, 0)


def test_after_the_clock_stepped_back_a_hold_whose_units_are_gone_is_not_restored() -> None:
    """The stock shard freed a hold at its expiry and the unit went to another order; then
    the clock stepped back (the first order looks within its deadline again) and both
    shards restarted. The hold granted last is restored, the lapsed one is not (whatever
    the order they are handed over in): restored, it would hold the unit twice."""
    ledger = StockLedger()
    upsert(ledger, "a", 1, 0, 0, merchant_id="m", name="A", price=100)
    assert ledger.reserve("late", "m", "x", (("a", 1),), 100, 0, owner=1)[0] is ResultCode.OK
    assert ledger.expire(200, 10) == ["late"]
    assert ledger.reserve("next", "m", "y", (("a", 1),), 900, 200, owner=2)[0] is ResultCode.OK
    for handed_over in ([(1, ("late", "m", "x", (("a", 1),), 100)),
                         (2, ("next", "m", "y", (("a", 1),), 900))],
                        [(2, ("next", "m", "y", (("a", 1),), 900)),
                         (1, ("late", "m", "x", (("a", 1),), 100))]):
        restarted = StockLedger()
        upsert(restarted, "a", 1, 0, 0, merchant_id="m", name="A", price=100)
        assert restarted.restore_holds(handed_over, 50) == ["late"]  # 50: the clock went back
        restarted.check_invariants()
        assert set(restarted.reservations) == {"next"}
        assert restarted.holds_without_units == 1
        assert restarted.commit("late", 60)[0] is ResultCode.NOT_FOUND  # cannot be paid for
        assert restarted.commit("next", 60)[0] is ResultCode.OK


def test_sales_are_restored_before_holds_and_never_given_up() -> None:
    """A restart counts every sale, then the holds that still fit."""
    ledger = StockLedger()
    upsert(ledger, "a", 2, 0, 0, merchant_id="m", name="A", price=100)
    ledger.replace_owned(1, [("held", "m", "x", (("a", 1),), 900),
                             ("over", "m", "z", (("a", 1),), 800)], [("m", "a", "y", 1)], 0)
    ledger.check_invariants()
    level = ledger.level("m", "a", 0)
    assert (level.sold, level.reserved, level.available) == (1, 1, 0)
    assert set(ledger.reservations) == {"held"}
