"""Placing a batch of new orders: the decisions, without I/O.

A ``Placing`` takes a PlaceBatch through its steps; the order shard does the awaiting:

1. ``begin``: idempotency per order (replays, conflicts, concurrent tries of one key),
   the journal's room, campaign checks (window, SKUs, per-buyer limits: counted from
   here on), and each new order's first try (its stock counters: SKUs, or the buyer's
   campaign buckets; a checkout's cart holds to take over).
2. ``round``: one ReserveBatch per stock shard for the tries of this round.
3. ``settle``: with the stock shards' answers, completes the orders whose lines were all
   held, says which partial holds to release, and which campaign orders try their next
   bucket (another round) because one refused them for stock or could not answer.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from flashtx.engine.campaigns import Campaign
from flashtx.engine.errors import DomainError, ResultCode, invariant, refusal
from flashtx.engine.messages import Answers, Line, Lines, PlaceBatch, ReserveBatch
from flashtx.engine.order_state import OrderState, ShardOf, split_lines

DEADLINE_PASSED = ("the call's deadline passed before the order was placed; nothing was"
                   " applied")
BUCKET_UNAVAILABLE = "a campaign stock bucket is unavailable; retry with the same key"

# A campaign order refused by one bucket for these reasons tries the next bucket; when a
# bucket was unavailable or missing (its shard restarting), the final answer is
# UNAVAILABLE, never a sell-out that may be false.
NEXT_BUCKET = frozenset({ResultCode.OUT_OF_STOCK, ResultCode.UNAVAILABLE,
                         ResultCode.NOT_FOUND})
BUCKET_UNSURE = frozenset({ResultCode.UNAVAILABLE, ResultCode.NOT_FOUND})


class FromCart(NamedTuple):
    """A checkout's order: per line, the stock key its cart hold is on ("": none), and
    the cart holds it takes over, per stock shard."""

    stock_keys: tuple[str, ...]
    holds: dict[int, list[str]]


class Attempt(NamedTuple):
    """One try at holding a new order's stock."""

    position: int  # in the batch
    order_id: str
    stock_lines: Lines  # (SKU or campaign bucket, quantity)
    deadline_ms: int
    number: int  # 0: the buyer's own bucket; then the next ones
    campaign: Campaign | None
    holds: dict[int, list[str]]  # cart holds it takes over, per stock shard
    counted: bool = False  # its campaign units were counted for the per-buyer limit
    uncertain: bool = False  # a bucket tried so far could not answer


@dataclass(slots=True)
class Round:
    """One reserve call per stock shard; per attempt, (stock shard, position in that
    shard's batch) of each of its parts."""

    batches: dict[int, ReserveBatch]
    placed_at: list[tuple[tuple[int, int], ...]]


class Placing:
    def __init__(self, state: OrderState, batch: PlaceBatch, now: int, owner: int,
                 shard_of: ShardOf, grace_ms: int,
                 from_carts: Sequence[FromCart | None] = (),
                 looked_up: Container[tuple[str, str]] = ()) -> None:
        """`looked_up`: keys unknown to memory that the database was asked about (and
        did not know), needed once the book may have forgotten keys."""
        self.state, self.batch, self.now = state, batch, now
        self.looked_up = looked_up
        self.owner, self.shard_of, self.grace_ms = owner, shard_of, grace_ms
        self.from_carts = from_carts
        self.results: list[Any] = [None] * len(batch)  # (code, snapshot or reason)
        self.waits: list[int] = []  # positions waiting for a concurrent try of their key
        self.leftover_holds: dict[int, list[str]] = {}  # see settle
        self.replays_left_memory = False  # some answer is an order id, to read back

    def begin(self, room: bool, full: tuple[ResultCode, str]) -> list[Attempt]:
        """Settles what needs no stock; answers the first tries. `room`: the journal can
        take the batch (else a new order is refused with `full`, the code and message
        that say why: the journal full, or its database failing; or told why it would be
        refused anyway)."""
        b, now, book, results = self.batch, self.now, self.state.book, self.results
        looked_up = self.looked_up if book.forgot else None
        new: list[Attempt] = []
        for i, (merchant_id, key, buyer_id, lines, campaign_id, deadline) in enumerate(zip(
                b.merchant_ids, b.keys, b.buyer_ids, b.lines, b.campaign_ids,
                b.deadlines_ms, strict=True)):
            if deadline and now >= deadline:
                results[i] = (ResultCode.UNAVAILABLE, DEADLINE_PASSED)
                continue
            begun = book.begin(merchant_id, key, buyer_id, lines, b.slots[i], campaign_id,
                               looked_up is not None and (merchant_id, key) in looked_up)
            code = begun.code
            if code is ResultCode.OK and not room:
                book.abandon(merchant_id, key)
                try:  # an order refused anyway is told why, not that the shard is busy
                    if campaign_id:
                        self.state.campaign(merchant_id, campaign_id).check_open(now)
                    results[i] = full
                except DomainError as error:
                    results[i] = (error.code, error)
            elif code is ResultCode.OK:
                try:
                    new.append(self._first_attempt(i, begun.order_id))
                except DomainError as error:  # travels whole: its reason names the cause
                    book.abandon(merchant_id, key)
                    results[i] = (error.code, error)
            elif code is ResultCode.REPLAYED:  # an order id: it left memory, read it back
                results[i] = (ResultCode.REPLAYED, begun.order or begun.order_id)
                if begun.order is None:
                    self.replays_left_memory = True
            elif code is ResultCode.UNAVAILABLE and begun.order_id:
                self.waits.append(i)
            elif code is ResultCode.IDEMPOTENCY_CONFLICT:
                results[i] = (code, refusal(begun.message, idempotency_key=key))
            else:
                results[i] = (code, begun.message)
        return new

    def _first_attempt(self, i: int, order_id: str) -> Attempt:
        """Checks a new order against its campaign (window, SKUs, per-buyer limits: the
        units count from here on) and picks the stock counters of its first try."""
        b = self.batch
        lines, campaign_id = b.lines[i], b.campaign_ids[i]
        deadline_ms = self.now + b.payment_windows_s[i] * 1000
        from_cart = self.from_carts[i] if self.from_carts else None
        if not campaign_id:
            return Attempt(i, order_id, lines, deadline_ms, 0, None,
                           from_cart.holds if from_cart else {})
        merchant_id, buyer_id = b.merchant_ids[i], b.buyer_ids[i]
        campaign = self.state.campaign(merchant_id, campaign_id)
        campaign.check_open(self.now)
        limited = campaign.limits(lines)
        stock_lines = campaign.stock_lines(buyer_id, lines, 0)
        holds: dict[int, list[str]] = {}
        if from_cart is not None:  # a cart's units are counted already
            holds = from_cart.holds
            stock_lines = tuple((key or default[0], quantity) for key, default, (_, quantity)
                                in zip(from_cart.stock_keys, stock_lines, lines, strict=True))
        elif limited:
            self.state.units.take(merchant_id, campaign_id, buyer_id, limited)
        return Attempt(i, order_id, stock_lines, deadline_ms, 0, campaign, holds,
                       counted=bool(limited) and from_cart is None)

    def round(self, attempts: Sequence[Attempt]) -> Round:
        b, shard_of, owner = self.batch, self.shard_of, self.owner
        replacing = any(a.holds for a in attempts)  # only checkouts take holds over
        batches: dict[int, ReserveBatch] = {}
        placed_at: list[tuple[tuple[int, int], ...]] = []
        grace_ms = self.grace_ms

        def batch_of(shard: int) -> ReserveBatch:
            found = batches.get(shard)
            if found is None:
                found = batches[shard] = ReserveBatch([], [], [], [], [], owner,
                                                      [] if replacing else None)
            return found

        for attempt in attempts:
            merchant_id, buyer_id = b.merchant_ids[attempt.position], b.buyer_ids[attempt.position]
            stock_lines = attempt.stock_lines
            parts: Iterable[tuple[int, Sequence[Line]]]
            if len(stock_lines) == 1 and not replacing:  # most orders: one request
                parts = ((shard_of(merchant_id, stock_lines[0][0]), stock_lines),)
            else:
                parts = split_lines(shard_of, merchant_id, stock_lines).items()
            where = []
            for shard, part in parts:
                request = batch_of(shard)
                where.append((shard, len(request.order_ids)))
                request.order_ids.append(attempt.order_id)
                request.merchant_ids.append(merchant_id)
                request.buyer_ids.append(buyer_id)
                request.lines.append(tuple(part))
                request.expires_ms.append(attempt.deadline_ms + grace_ms)
                if request.replacing is not None:
                    request.replacing.append(attempt.holds.get(shard, []))
            placed_at.append(tuple(where))
        return Round(batches, placed_at)

    def settle(self, attempts: Sequence[Attempt], round_: Round, replies: dict[int, Answers]
               ) -> tuple[list[Attempt], dict[int, list[str]], list[int]]:
        """Answers (next tries, partial holds to abandon per stock shard, positions
        answered now). A checkout placed on another bucket than its cart's holds leaves
        those holds in ``leftover_holds``, to release once the order is durable."""
        for shard, request in round_.batches.items():
            invariant(len(replies[shard]) == len(request), "one answer per reserve request")
        b, state, results = self.batch, self.state, self.results
        abandons: dict[int, list[str]] = {}
        again: list[Attempt] = []
        done: list[int] = []
        complete, now, from_carts = state.book.complete, self.now, self.from_carts
        ok, ok_code = ResultCode.OK, int(ResultCode.OK)
        columns = {shard: (reply.codes, reply.values) for shard, reply in replies.items()}
        for attempt, where in zip(attempts, round_.placed_at, strict=True):
            i, order_id = attempt.position, attempt.order_id
            merchant_id, key, buyer_id = b.merchant_ids[i], b.keys[i], b.buyer_ids[i]
            lines, campaign_id = b.lines[i], b.campaign_ids[i]
            if len(where) == 1:  # most orders: one stock shard
                shard, position = where[0]
                codes, values = columns[shard]
                if codes[position] == ok_code:
                    answers = [(ok, values[position])]
                    failed = None
                else:
                    answers = [replies[shard][position]]
                    failed = answers[0]
            else:
                answers = [replies[shard][position] for shard, position in where]
                failed = next((a for a in answers if a[0] is not ok), None)
            if failed is None:
                prices = (answers[0][1] if len(where) == 1 else
                          self._prices(merchant_id, attempt.stock_lines, where, answers))
                stock_keys = (tuple(k for k, _ in attempt.stock_lines)
                              if attempt.campaign is not None else ())
                results[i] = (ok, complete(
                    order_id, merchant_id, key, buyer_id, lines, prices, now,
                    attempt.deadline_ms, b.key_ids[i], campaign_id, stock_keys,
                    b.currencies[i]))
                done.append(i)
                from_cart = from_carts[i] if from_carts else None
                if from_cart is not None and attempt.number:
                    for shard, ids in from_cart.holds.items():
                        self.leftover_holds.setdefault(shard, []).extend(ids)
                continue
            for (shard, _), answer in zip(where, answers, strict=True):
                if answer[0] is ResultCode.OK or answer[0] is ResultCode.UNAVAILABLE:
                    abandons.setdefault(shard, []).append(order_id)
            campaign = attempt.campaign
            uncertain = attempt.uncertain or failed[0] in BUCKET_UNSURE
            if campaign is not None and failed[0] in NEXT_BUCKET and (
                    attempt.number + 1 < campaign.buckets):
                again.append(attempt._replace(
                    number=attempt.number + 1, holds={}, uncertain=uncertain,
                    stock_lines=campaign.stock_lines(buyer_id, lines, attempt.number + 1)))
                continue
            state.book.abandon(merchant_id, key)
            if attempt.counted:
                state.units.give_back(merchant_id, campaign_id, buyer_id, lines)
            if campaign is not None and uncertain:
                # Some bucket could not answer: "sold out" might be false. Retry.
                failed = (ResultCode.UNAVAILABLE, BUCKET_UNAVAILABLE)
            results[i] = failed
            done.append(i)
        return again, abandons, done

    def _prices(self, merchant_id: str, lines: Lines, where: tuple[tuple[int, int], ...],
                answers: list[tuple[ResultCode, Any]]) -> list[int]:
        """Unit prices in line order (`lines` as the stock shards know them)."""
        if len(where) == 1:
            return list(answers[0][1])
        by_key: dict[str, int] = {}
        parts = split_lines(self.shard_of, merchant_id, lines)
        for (shard, _), (_, prices) in zip(where, answers, strict=True):
            by_key.update((key, price) for (key, _), price in zip(parts[shard], prices,
                                                                   strict=True))
        return [by_key[key] for key, _ in lines]
