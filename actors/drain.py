"""A gateway's drain, asked for from outside Ray: Kubernetes runs a pod's preStop hook
before it stops the pod's containers, and the hook cannot reach the gateway's actor; it
writes a file (``gateway_drain_file``) that the gateways of that node watch, and each
drains: health NOT_SERVING, ``gateway_drain_delay_s`` for load balancers and clients to
see it, then in-flight calls finish and the server stops."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class DrainWatch:
    """``check()`` (called about once a second) starts `drain` once the file exists."""

    __slots__ = ("_drain", "_path", "draining")

    def __init__(self, path: str, drain: Callable[[], Awaitable[None]]) -> None:
        self._path = path
        self._drain = drain
        self.draining: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """True once the drain has started (now or before)."""
        if self.draining is None and self._path and os.path.exists(self._path):
            log.warning("%s exists: draining this node's gateway", self._path)
            self.draining = asyncio.get_running_loop().create_task(self._drained())
        return self.draining is not None

    async def _drained(self) -> None:
        try:
            await self._drain()
        except Exception:  # the pod stops all the same; the log says why it was not clean
            log.exception("the drain asked for by %s failed", self._path)
