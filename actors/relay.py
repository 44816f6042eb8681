"""Relay: moves committed outbox rows to Redis Streams, in commit order.

Isolated from the order path: when Redis is down, orders keep committing (their outbox
rows wait in Postgres) and the relay catches up when Redis returns. A restart relays no
event twice (see adapters.events.StreamWriter).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as redis

from actors import clock, metrics
from actors.loops import every
from adapters.events import StreamWriter, event_payload
from adapters.postgres import Store
from engine.config import Config

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, config: Config) -> None:
        self._config = config
        self.relayed = 0
        self.redis_failing = False
        self.last_error = ""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        config = self._config
        self._store = await Store.open(config.postgres_dsn, 2)
        self._redis = redis.Redis.from_url(config.redis_url)
        writer = StreamWriter(self._redis, config.event_retention_events_max,
                              config.relay_dedupe_ttl_s)
        delay_s = config.relay_interval_ms / 1000
        self._lag_task = asyncio.get_running_loop().create_task(
            every(1.0, self._report_lag, "outbox lag report"))
        while True:
            try:
                moved = await self._relay_once(writer)
                delay_s = config.relay_interval_ms / 1000
                if moved == config.relay_batch_max:
                    continue  # more waiting: no pause
            except Exception as error:  # Redis or Postgres away: wait, keep the rows
                if not self.redis_failing:
                    log.warning("relay paused: %r", error)
                self.redis_failing, self.last_error = True, repr(error)
                delay_s = min(delay_s * 2, 2.0)
            await asyncio.sleep(delay_s)

    async def _relay_once(self, writer: StreamWriter) -> int:
        rows = await self._store.unrelayed(self._config.relay_batch_max)
        if not rows:
            return 0
        await writer.relay([(r["event_id"], r["merchant_id"], event_payload(r)) for r in rows])
        await self._store.mark_relayed([r["outbox_id"] for r in rows])
        if self.redis_failing:
            log.warning("relay resumed")
        self.redis_failing = False
        self.relayed += len(rows)
        return len(rows)

    async def _report_lag(self) -> None:
        waiting, oldest = await self._store.outbox_lag()
        lag_s = 0.0 if oldest is None else (clock.now_ms() - oldest) / 1000
        metrics.record(metrics.lag_seconds(), lag_s, what="outbox")
        metrics.record(metrics.depth(), waiting, queue="outbox", actor="relay")

    async def stats(self) -> dict[str, Any]:
        waiting, oldest = await self._store.outbox_lag() if hasattr(self, "_store") else (0, None)
        return {"relayed": self.relayed, "waiting": waiting,
                "lag_ms": 0 if oldest is None else clock.now_ms() - oldest,
                "redis_failing": self.redis_failing, "last_error": self.last_error}
