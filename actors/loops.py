"""Background loops of actors: every one outlives its own errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from flashtx.engine.errors import InvariantViolation

T = TypeVar("T")

log = logging.getLogger(__name__)


async def every(interval_s: float, step: Callable[[], Awaitable[None]], name: str,
                after: Awaitable[object] | None = None) -> None:
    """Runs `step` every `interval_s` (once `after` is done); a failed step is logged and
    the loop goes on, as Ray Serve's control loops do."""
    if after is not None:
        try:
            await after
        except Exception as error:  # a start that failed is retried by its owner
            log.warning("%s: start failed (%r); the loop runs all the same", name, error)
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except Exception:
            log.exception("%s failed", name)


async def until_done(step: Callable[[], Awaitable[T]], name: str,
                     delay_s_max: float = 2.0) -> T:
    """Runs `step` until it succeeds: recovery talks to actors that may be restarting
    themselves (a node lost takes several at once), and must not give up on them."""
    delay_s = 0.1
    while True:
        try:
            return await step()
        except InvariantViolation:
            raise  # wrong state is not a peer restarting: crash, restart from durable state
        except Exception as error:  # a peer restarting: wait and ask again
            log.warning("%s: %r; retrying", name, error)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, delay_s_max)
