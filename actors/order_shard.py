"""OrderShard: owns orders, idempotency keys and payment deadlines (key: merchant + buyer).

Placing a batch: settle idempotency per order, group every new order's lines by stock
shard, make one ``reserve`` call per stock shard, then complete the orders whose lines
were all held and release the partial holds of the others before answering.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from actors import clock
from actors.routing import ShardGroup
from engine.config import Config
from engine.errors import DomainError, InvalidTransition, ResultCode, Unavailable
from engine.orders import OrderBook, OrderSnapshot, StockAction
from engine.sharding import RoutingTable

log = logging.getLogger(__name__)

# (merchant_id, idempotency_key, buyer_id, lines, payment_window_s, slot)
Placement = tuple[str, str, str, tuple[tuple[str, int], ...], int, int]
PlaceResult = tuple[ResultCode, Any]  # (OK | REPLAYED, OrderSnapshot) or (code, message)
# (op, merchant_id, order_id or buyer_id, argument)
Action = tuple[str, str, str, Any]


class OrderShard:
    def __init__(self, index: int, config: Config, stock_handles: Sequence[Any],
                 stock_table: RoutingTable) -> None:
        self.index = index
        self._config = config
        self._book = OrderBook(secrets.token_hex(3), config.orders_per_shard_max)
        self._stock = ShardGroup(stock_handles, stock_table, config.slots_total)
        self._waiting: dict[tuple[str, str], asyncio.Future[PlaceResult]] = {}
        self._releases_due: list[tuple[int, str]] = []  # releases to retry
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    # --- placing (hot path) -----------------------------------------------------------------

    async def place(self, items: Sequence[Placement]) -> list[PlaceResult]:
        now = clock.now_ms()
        results: list[Any] = [None] * len(items)
        requests: dict[int, list[Any]] = defaultdict(list)
        new: list[tuple[int, str, list[int], int]] = []
        waits: list[tuple[int, asyncio.Future[PlaceResult]]] = []
        grace_ms = self._config.reservation_grace_ms
        shard_of = self._stock.shard_of
        for i, (merchant_id, key, buyer_id, lines, window_s, slot) in enumerate(items):
            begin = self._book.begin(merchant_id, key, buyer_id, lines, slot)
            if begin.code is ResultCode.OK:
                deadline_ms = now + window_s * 1000
                parts: dict[int, list[tuple[str, int]]] = defaultdict(list)
                for line in lines:
                    parts[shard_of(merchant_id, line[0])].append(line)
                for shard, part in parts.items():
                    requests[shard].append((begin.order_id, merchant_id, buyer_id,
                                            tuple(part), deadline_ms + grace_ms))
                new.append((i, begin.order_id, list(parts), deadline_ms))
            elif begin.code is ResultCode.REPLAYED:
                results[i] = (ResultCode.REPLAYED, begin.order)
            elif begin.code is ResultCode.UNAVAILABLE:
                waits.append((i, self._waiter(merchant_id, key)))
            else:
                results[i] = (begin.code, begin.message)
        replies = await self._reserve(requests)
        releases = self._finish(items, new, replies, results, now)
        if releases:
            await self._release(releases)
        for i, waiter in waits:
            code, value = await waiter
            results[i] = (ResultCode.REPLAYED if code is ResultCode.OK else code, value)
        return results

    async def _reserve(self, requests: dict[int, list[Any]]) -> dict[tuple[int, str], Any]:
        """One call per stock shard; returns {(shard, order_id): (code, prices|message)}."""
        shards = list(requests)
        answers = await asyncio.gather(
            *(self._stock.call(shard, "reserve", requests[shard]) for shard in shards),
            return_exceptions=True)
        replies: dict[tuple[int, str], Any] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("stock shard %d failed: %r", shard, answer)
                answer = [(ResultCode.UNAVAILABLE, "stock shard unavailable; retry")] * len(
                    requests[shard])
            for request, reply in zip(requests[shard], answer, strict=True):
                replies[(shard, request[0])] = reply
        return replies

    def _finish(self, items: Sequence[Placement], new: list[tuple[int, str, list[int], int]],
                replies: dict[tuple[int, str], Any], results: list[Any],
                now: int) -> dict[int, list[str]]:
        """Completes fully held orders; returns the partial holds to release, per shard."""
        releases: dict[int, list[str]] = defaultdict(list)
        for i, order_id, shards, deadline_ms in new:
            merchant_id, key, buyer_id, lines, _, _ = items[i]
            answers = [replies[(shard, order_id)] for shard in shards]
            failed = next((a for a in answers if a[0] is not ResultCode.OK), None)
            if failed is None:
                prices = self._prices(merchant_id, lines, shards, answers)
                order = self._book.complete(order_id, merchant_id, key, buyer_id, lines,
                                            prices, now, deadline_ms)
                results[i] = (ResultCode.OK, order)
            else:
                self._book.abandon(merchant_id, key)
                for shard, answer in zip(shards, answers, strict=True):
                    if answer[0] is ResultCode.OK or answer[0] is ResultCode.UNAVAILABLE:
                        releases[shard].append(order_id)
                results[i] = failed
            waiter = self._waiting.pop((merchant_id, key), None)
            if waiter is not None:
                waiter.set_result(results[i])
        return releases

    def _prices(self, merchant_id: str, lines: tuple[tuple[str, int], ...], shards: list[int],
                answers: list[Any]) -> list[int]:
        if len(shards) == 1:
            return list(answers[0][1])
        by_sku: dict[str, int] = {}
        shard_of = self._stock.shard_of
        for shard, (_, prices) in zip(shards, answers, strict=True):
            part = [line for line in lines if shard_of(merchant_id, line[0]) == shard]
            by_sku.update((sku_id, price) for (sku_id, _), price in zip(part, prices,
                                                                          strict=True))
        return [by_sku[sku_id] for sku_id, _ in lines]

    def _waiter(self, merchant_id: str, key: str) -> asyncio.Future[PlaceResult]:
        waiter = self._waiting.get((merchant_id, key))
        if waiter is None:
            waiter = self._waiting[(merchant_id, key)] = asyncio.get_running_loop().create_future()
        return waiter

    # --- reads and transitions --------------------------------------------------------------

    async def act(self, items: Sequence[Action]) -> list[Any]:
        """A batch of get / list / pay / cancel / fulfil; each answer is a snapshot, a
        (page, next offset) pair, or a DomainError."""
        results: list[Any] = [None] * len(items)
        stock_calls: dict[tuple[str, int], list[str]] = defaultdict(list)
        steps: list[tuple[int, Any, str]] = []
        now = clock.now_ms()
        for i, (op, merchant_id, target, argument) in enumerate(items):
            try:
                if op == "get":
                    results[i] = self._book.get(merchant_id, target).snapshot()
                elif op == "list":
                    offset, limit = argument
                    results[i] = self._book.list_for_buyer(merchant_id, target, offset, limit)
                else:
                    order, action = self._book.check(merchant_id, target, op, now)
                    if action is None:
                        results[i] = order.snapshot()
                        continue
                    if action is StockAction.RELEASE:  # state first, then free the stock
                        results[i] = self._book.apply(order, op, now)
                        for shard in self._shards_of(order.merchant_id, order.lines):
                            stock_calls[("release", shard)].append(order.order_id)
                    else:
                        steps.append((i, order, op))
                        if action is StockAction.COMMIT:  # stock first, then the state
                            for shard in self._shards_of(order.merchant_id, order.lines):
                                stock_calls[("commit", shard)].append(order.order_id)
            except DomainError as error:
                results[i] = error
        failed = await self._stock_calls(stock_calls)
        for i, order, op in steps:
            try:
                if order.order_id in failed:
                    raise failed[order.order_id]
                results[i] = self._book.apply(order, op, clock.now_ms())
            except DomainError as error:
                results[i] = error
        return results

    async def _stock_calls(self, calls: dict[tuple[str, int], list[str]]) -> dict[str, Any]:
        """Commits and releases on stock shards; returns {order_id: error} of failed commits.
        Failed releases are queued and retried by the sweeper."""
        keys = list(calls)
        answers = await asyncio.gather(*(self._stock.call(shard, method, calls[(method, shard)])
                                         for method, shard in keys), return_exceptions=True)
        failed: dict[str, Any] = {}
        for (method, shard), answer in zip(keys, answers, strict=True):
            order_ids = calls[(method, shard)]
            if isinstance(answer, BaseException):
                if method == "release":
                    self._releases_due.extend((shard, order_id) for order_id in order_ids)
                else:
                    failed.update(
                        (o, Unavailable("stock shard unavailable; retry")) for o in order_ids)
                continue
            if method == "commit":
                for order_id, (code, message) in zip(order_ids, answer, strict=True):
                    if code is not ResultCode.OK:
                        failed[order_id] = InvalidTransition(message, order_id=order_id)
        return failed

    def _shards_of(self, merchant_id: str, lines: Sequence[tuple[Any, ...]]) -> set[int]:
        return {self._stock.shard_of(merchant_id, line[0]) for line in lines}

    async def _release(self, releases: dict[int, list[str]]) -> None:
        await self._stock_calls({("release", shard): ids for shard, ids in releases.items()})

    # --- housekeeping -----------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        return {"index": self.index, "orders": len(self._book.orders),
                "releases_due": len(self._releases_due)}

    async def check_invariants(self) -> bool:
        self._book.check_invariants()
        return True

    async def _sweep_forever(self) -> None:
        interval_s = self._config.expiry_sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._sweep_once()
            except Exception:  # the loop must outlive its own errors
                log.exception("order expiry sweep failed")

    async def _sweep_once(self) -> None:
        now = clock.now_ms()
        releases: dict[int, list[str]] = defaultdict(list)
        for order in self._book.due_for_expiry(now, self._config.expiry_sweep_items_max):
            self._book.apply(order, "expire", now)
            for shard in self._shards_of(order.merchant_id, order.lines):
                releases[shard].append(order.order_id)
        retries, self._releases_due = self._releases_due, []
        for shard, order_id in retries:
            releases[shard].append(order_id)
        if releases:
            await self._release(releases)
        self._book.drain_changes()


__all__ = ["OrderShard", "OrderSnapshot"]
