"""Micro-batching on the asyncio side of an actor: items for one destination gather for
at most ``delay_s`` or until ``items_max`` are waiting, then travel in one call.

At most ``inflight_batches_max`` calls per destination are in flight; items arriving
meanwhile wait and leave together as soon as a call returns. A Ray call costs about a
millisecond of CPU on a small box, so under load this, not the timer, sets the batch
size: batches grow with load instead of the call count growing with it.

The queue is bounded twice: past ``queue_items_max`` items queued or in flight, or once
the oldest queued item has waited ``queue_delay_s_max``, ``submit`` refuses at once with
Overloaded. The second bound is what keeps latency flat under overload: at twice the
capacity, the excess is refused in microseconds instead of queueing for seconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from engine.errors import Overloaded

Item = TypeVar("Item")
Result = TypeVar("Result")

__all__ = ["MicroBatcher"]


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]],
                 on_error: Callable[[BaseException], Result], *, items_max: int,
                 delay_s: float, queue_items_max: int, retry_after_ms: int,
                 inflight_batches_max: int = 2, queue_delay_s_max: float = 0.2,
                 observe: Callable[[int], Any] | None = None) -> None:
        self._send = send
        self._on_error = on_error
        self._items_max = items_max
        self._delay_s = delay_s
        self._queue_items_max = queue_items_max
        self._retry_after_ms = retry_after_ms
        self._observe = observe
        self._inflight_batches_max = inflight_batches_max
        self._inflight_batches = 0
        self._queue_delay_s_max = queue_delay_s_max
        self._arrivals: deque[list[float | int]] = deque()  # [time queued, items left]
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.outstanding = 0  # queued + in flight

    def admit(self, count: int) -> None:
        """Raises Overloaded when `count` more items would be refused; queues nothing. A
        caller spreading one request over several batchers admits on all, then submits:
        the request is taken whole or refused whole."""
        if self.outstanding + count > self._queue_items_max:
            raise Overloaded("gateway queue to this shard is full", self._retry_after_ms)
        loop = asyncio.get_running_loop()
        if self._arrivals and loop.time() - self._arrivals[0][0] > self._queue_delay_s_max:
            raise Overloaded("the shard is behind; this gateway's queue to it is too old",
                             self._retry_after_ms)

    def submit_many(self, items: Sequence[Item]) -> list[asyncio.Future[Result]]:
        self.admit(len(items))
        loop = asyncio.get_running_loop()
        self._arrivals.append([loop.time(), len(items)])
        futures = [loop.create_future() for _ in items]
        self._items.extend(items)
        self._futures.extend(futures)
        self.outstanding += len(items)
        if len(self._items) >= self._items_max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay_s, self._flush)
        return futures

    async def submit(self, item: Item) -> Result:
        return await self.submit_many((item,))[0]

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._items and self._inflight_batches < self._inflight_batches_max:
            self._inflight_batches += 1
            items, futures = self._items[:self._items_max], self._futures[:self._items_max]
            del self._items[:self._items_max], self._futures[:self._items_max]
            self._forget_arrivals(len(items))
            task = asyncio.get_running_loop().create_task(self._deliver(items, futures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _forget_arrivals(self, sent: int) -> None:
        while sent and self._arrivals:
            first = self._arrivals[0]
            taken = min(sent, int(first[1]))
            first[1] = int(first[1]) - taken
            sent -= taken
            if not first[1]:
                self._arrivals.popleft()

    async def _deliver(self, items: list[Item], futures: list[asyncio.Future[Result]]) -> None:
        if self._observe is not None:
            self._observe(len(items))
        try:
            results: Sequence[Result] = await self._send(items)
        except Exception as error:  # the destination failed: every item learns why
            failure = self._on_error(error)
            results = [failure] * len(items)
        finally:
            self.outstanding -= len(items)
            self._inflight_batches -= 1
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self._items:
            self._flush()
