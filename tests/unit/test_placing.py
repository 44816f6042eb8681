"""Placing decisions (engine.placing) and the column messages (engine.messages), without
actors: the steps an order shard takes, driven by hand with the answers stock shards
would give."""

from __future__ import annotations

import pickle

from flashtx.engine.campaigns import Campaign, CampaignSku
from flashtx.engine.config import load_config
from flashtx.engine.errors import ResultCode
from flashtx.engine.messages import (
    Answers,
    Generation,
    Handover,
    Holds,
    PlaceBatch,
    ReserveBatch,
    Sales,
)
from flashtx.engine.order_state import OrderState
from flashtx.engine.placing import BUCKET_UNAVAILABLE, Placing

NOW = 1_000_000
CONFIG = load_config(environ={})


def _shard_of(merchant_id: str, key: str) -> int:
    return 0 if key.startswith("a") else 1


def _batch(*rows: tuple[str, str, tuple[tuple[str, int], ...], str]) -> PlaceBatch:
    return PlaceBatch.of((("m", key, buyer, lines, 60, 7, 0, "key", campaign, "USD")
                          for key, buyer, lines, campaign in rows))


def test_batches_are_columns_and_cross_a_process_whole() -> None:
    batch = _batch(("k1", "b1", (("a", 1),), ""), ("k2", "b2", (("b", 2), ("a", 1)), ""))
    assert len(batch) == 2 and batch.keys == ["k1", "k2"]
    assert list(batch.rows())[1] == ("m", "k2", "b2", (("b", 2), ("a", 1)), 60, 7, 0, "key", "",
                                     "USD")
    assert pickle.loads(pickle.dumps(batch)) == batch
    empty = PlaceBatch.of([])
    assert len(empty) == 0 and empty.lines == []
    reserve = ReserveBatch(["o"], ["m"], ["b"], [(("a", 1),)], [5], owner=3)
    assert pickle.loads(pickle.dumps(reserve)) == reserve and reserve.replacing is None
    answers = Answers.of([(ResultCode.OK, (100,)), (ResultCode.OUT_OF_STOCK, "gone")])
    assert list(pickle.loads(pickle.dumps(answers))) == [(ResultCode.OK, (100,)),
                                                         (ResultCode.OUT_OF_STOCK, "gone")]
    handover = Handover(1, Holds.of([]), Sales.of([("m", "a", "b", 2)]), Generation(5, 1))
    assert list(pickle.loads(pickle.dumps(handover)).sales.rows()) == [("m", "a", "b", 2)]


def test_one_round_completes_what_every_shard_held_and_abandons_the_rest() -> None:
    state = OrderState.empty(CONFIG, "e1")
    batch = _batch(("k1", "b1", (("a", 1),), ""), ("k2", "b2", (("a", 1), ("b", 1)), ""))
    placing = Placing(state, batch, NOW, owner=0, shard_of=_shard_of, grace_ms=500)
    attempts = placing.begin(room=True, full=(ResultCode.OVERLOADED, "full"))
    round_ = placing.round(attempts)
    assert sorted(round_.batches) == [0, 1]
    assert round_.batches[0].order_ids == [a.order_id for a in attempts]  # both hold "a"
    assert round_.batches[0].expires_ms == [NOW + 60_000 + 500] * 2
    replies = {0: Answers.of([(ResultCode.OK, (100,)), (ResultCode.OK, (100,))]),
               1: Answers.of([(ResultCode.OUT_OF_STOCK, "sku b has too few units")])}
    again, abandons, done = placing.settle(attempts, round_, replies)
    assert again == [] and sorted(done) == [0, 1]
    assert placing.results[0][0] is ResultCode.OK
    assert placing.results[0][1].lines == (("a", 1, 100),)
    assert placing.results[1] == (ResultCode.OUT_OF_STOCK, "sku b has too few units")
    # The order refused on one shard gives back what the other shard held for it.
    assert abandons == {0: [attempts[1].order_id]}
    # Its key is free again; the placed one replays.
    again_batch = _batch(("k1", "b1", (("a", 1),), ""), ("k2", "b2", (("a", 1),), ""))
    retry = Placing(state, again_batch, NOW, owner=0, shard_of=_shard_of, grace_ms=500)
    new = retry.begin(room=True, full=(ResultCode.OVERLOADED, "full"))
    assert retry.results[0][0] is ResultCode.REPLAYED and [a.position for a in new] == [1]


def test_a_full_journal_refuses_new_orders_and_frees_their_keys() -> None:
    state = OrderState.empty(CONFIG, "e2")
    placing = Placing(state, _batch(("k", "b", (("a", 1),), "")), NOW, 0, _shard_of, 0)
    assert placing.begin(room=False, full=(ResultCode.OVERLOADED, "the journal is full")) == []
    assert placing.results == [(ResultCode.OVERLOADED, "the journal is full")]
    assert Placing(state, _batch(("k", "b", (("a", 1),), "")), NOW, 0, _shard_of,
                   0).begin(room=True, full=(ResultCode.OVERLOADED, "")) != []


def _campaign(buckets: int) -> Campaign:
    keys = tuple(f"a~sale~{k}" for k in range(buckets))
    return Campaign("m", "sale", "Sale", NOW - 1, NOW + 10**6, buckets,
                    {"a": CampaignSku("a", 50, 0, 0, 10 * buckets, keys)}, NOW - 10)


def test_a_campaign_order_refused_by_its_bucket_tries_the_next_one() -> None:
    state = OrderState.empty(CONFIG, "e3")
    state.add_campaign(_campaign(2))
    batch = _batch(("k", "b", (("a", 1),), "sale"))
    placing = Placing(state, batch, NOW, 0, lambda m, key: 0, 0)
    attempts = placing.begin(room=True, full=(ResultCode.OVERLOADED, ""))
    first = attempts[0].stock_lines[0][0]
    round_ = placing.round(attempts)
    again, abandons, done = placing.settle(
        attempts, round_, {0: Answers.of([(ResultCode.OUT_OF_STOCK, "empty")])})
    assert done == [] and abandons == {} and len(again) == 1
    assert again[0].number == 1 and again[0].stock_lines[0][0] != first
    round_ = placing.round(again)
    again, _, done = placing.settle(again, round_, {0: Answers.of([(ResultCode.OK, (50,))])})
    assert again == [] and done == [0]
    assert placing.results[0][1].lines == (("a", 1, 50),)


def test_a_bucket_that_could_not_answer_makes_the_final_answer_retry_not_sold_out() -> None:
    state = OrderState.empty(CONFIG, "e4")
    state.add_campaign(_campaign(2))
    placing = Placing(state, _batch(("k", "b", (("a", 1),), "sale")), NOW, 0,
                      lambda m, key: 0, 0)
    attempts = placing.begin(room=True, full=(ResultCode.OVERLOADED, ""))
    again, abandons, _ = placing.settle(attempts, placing.round(attempts), {
        0: Answers.of([(ResultCode.UNAVAILABLE, "stock shard unavailable")])})
    assert abandons == {0: [attempts[0].order_id]}  # it may have held: given back
    again, _, done = placing.settle(again, placing.round(again), {
        0: Answers.of([(ResultCode.OUT_OF_STOCK, "empty")])})
    assert again == [] and done == [0]
    assert placing.results[0] == (ResultCode.UNAVAILABLE, BUCKET_UNAVAILABLE)
