"""What a gateway knows of why an order shard takes no work: refusals that say what is
true. A gateway whose queue to a shard grows old refuses at once (``MicroBatcher``); when
the shard says its database has been failing its commits, the refusal says that
(UNAVAILABLE) instead of only that the queue is old (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from flashtx.engine.errors import DomainError, Unavailable

log = logging.getLogger(__name__)

ASK_INTERVAL_S = 1.0  # the shard is asked at most this often, and only while stalled


class ShardHealth:
    """One per order shard on a gateway. ``explain`` answers at once from what the shard
    said last, and asks it again in the background (one call at a time) when that is
    older than ``ASK_INTERVAL_S``."""

    __slots__ = ("_answered_at", "_ask", "_asked_at", "_asking", "_failing_for_s", "shard")

    def __init__(self, shard: int, ask: Callable[[], Awaitable[float | None]]) -> None:
        self.shard = shard
        self._ask = ask
        self._asked_at = -ASK_INTERVAL_S
        self._asking: asyncio.Task[None] | None = None
        self._failing_for_s: float | None = None  # as the shard said at `_answered_at`
        self._answered_at = float("-inf")

    def explain(self, waited_s: float) -> DomainError | None:
        """The refusal for a queue that has waited `waited_s` (None: the queue's own)."""
        now = asyncio.get_running_loop().time()
        if now - self._asked_at >= ASK_INTERVAL_S and self._asking is None:
            self._asked_at = now
            self._asking = asyncio.get_running_loop().create_task(self._refresh())
        # What the shard said counts while it is recent: an old answer (a failure the
        # database has since recovered from) says nothing of this stall.
        if self._failing_for_s is None or now - self._answered_at > 2 * ASK_INTERVAL_S:
            return None
        failing_s = self._failing_for_s + (now - self._answered_at)
        return Unavailable(
            f"the database is unavailable to order shard {self.shard}: its commits have"
            f" failed or gone unanswered for {failing_s:.0f} s, and it has taken no work"
            f" from this gateway for {waited_s * 1000:.0f} ms; retry later with the same"
            " key", database="unavailable")

    async def _refresh(self) -> None:
        try:
            self._failing_for_s = await self._ask()
        except Exception as error:  # the shard is restarting: the queue's refusal stands
            log.debug("order shard %d did not say how its database is: %r", self.shard, error)
            self._failing_for_s = None
        finally:
            self._answered_at = asyncio.get_running_loop().time()
            self._asking = None
