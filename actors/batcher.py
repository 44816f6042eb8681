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

from flashtx.actors import tracing
from flashtx.engine.errors import DomainError, Overloaded

Item = TypeVar("Item")
Result = TypeVar("Result")

__all__ = ["MicroBatcher"]


class _Chunk(Generic[Result]):
    """Items submitted together: one future for all their results, in order."""

    __slots__ = ("future", "left", "link", "results")

    def __init__(self, future: asyncio.Future[list[Result]], count: int) -> None:
        self.future, self.left = future, count
        self.results: list[Any] = [None] * count
        self.link = tracing.link()  # the submitting call's span (None when not tracing)

    def fill(self, start: int, results: Sequence[Result]) -> None:
        self.results[start:start + len(results)] = results
        self.left -= len(results)
        if not self.left and not self.future.done():
            self.future.set_result(self.results)


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]],
                 on_error: Callable[[BaseException], Result], *, items_max: int,
                 delay_s: float, queue_items_max: int, retry_after_ms: int,
                 inflight_batches_max: int = 2, queue_delay_s_max: float = 0.2,
                 observe: Callable[[int], Any] | None = None,
                 span_name: str = "gateway.batch",
                 stalled: Callable[[float], DomainError | None] | None = None) -> None:
        """`span_name`: the span of each batch sent (when tracing), linked to the spans
        of the calls whose items it carries. `stalled`: given how long the queue has
        waited, the refusal that says why the destination takes no work, when known
        (``ShardHealth.explain``)."""
        self._stalled = stalled
        self._send = send
        self._span_name = span_name
        self._on_error = on_error
        self._items_max = items_max
        self._delay_s = delay_s
        self._queue_items_max = queue_items_max
        self._retry_after_ms = retry_after_ms
        self._observe = observe
        self._inflight_batches_max = inflight_batches_max
        self._inflight_batches = 0
        self._queue_delay_s_max = queue_delay_s_max
        # One entry per submission not yet sent whole: [time queued, chunk, first item
        # not sent yet (index in the chunk), items not sent yet].
        self._queued: deque[list[Any]] = deque()
        self._items: list[Item] = []
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
        if self._queued and (waited_s := loop.time() - self._queued[0][0]) > (
                self._queue_delay_s_max):
            # What the gateway knows: the shard has not taken this queue for so long (it
            # may be restarting, overloaded or waiting for its database: `stalled` says
            # which, when the shard has said).
            if self._stalled is not None and (why := self._stalled(waited_s)) is not None:
                raise why
            raise Overloaded(f"the shard has taken no work from this gateway for"
                             f" {waited_s * 1000:.0f} ms; retry later with the same key",
                             self._retry_after_ms)

    def submit_chunk(self, items: Sequence[Item]) -> asyncio.Future[list[Result]]:
        """Queues `items` (refused whole with Overloaded); one future answers all their
        results, in order (no future per item)."""
        self.admit(len(items))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        self._queued.append([loop.time(), _Chunk(future, len(items)), 0, len(items)])
        self._items.extend(items)
        self.outstanding += len(items)
        if len(self._items) >= self._items_max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay_s, self._flush)
        return future

    async def submit(self, item: Item) -> Result:
        return (await self.submit_chunk((item,)))[0]

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._items and self._inflight_batches < self._inflight_batches_max:
            self._inflight_batches += 1
            items = self._items[:self._items_max]
            del self._items[:self._items_max]
            task = asyncio.get_running_loop().create_task(
                self._deliver(items, self._take(len(items))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, sent: int) -> list[tuple[_Chunk[Result], int, int]]:
        """The (chunk, first index, count) segments of the next `sent` queued items."""
        segments = []
        while sent:
            entry = self._queued[0]
            _, chunk, start, left = entry
            taken = min(sent, left)
            segments.append((chunk, start, taken))
            sent -= taken
            if taken == left:
                self._queued.popleft()
            else:
                entry[2], entry[3] = start + taken, left - taken
        return segments

    async def _deliver(self, items: list[Item],
                       segments: list[tuple[_Chunk[Result], int, int]]) -> None:
        if self._observe is not None:
            self._observe(len(items))
        links = [chunk.link for chunk, _, _ in segments] if tracing.enabled() else ()
        try:
            with tracing.span(self._span_name, links=links, items=len(items)):
                results: Sequence[Result] = await self._send(items)
        except Exception as error:  # the destination failed: every item learns why
            failure = self._on_error(error)
            results = [failure] * len(items)
        finally:
            self.outstanding -= len(items)
            self._inflight_batches -= 1
        position = 0
        for chunk, start, count in segments:
            chunk.fill(start, results[position:position + count])
            position += count
        if self._items:
            self._flush()
