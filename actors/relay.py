"""Relay: moves committed outbox rows to Redis Streams, in commit order.

Isolated from the order path: when Redis is down, orders keep committing (their outbox
rows wait in Postgres) and the relay catches up when Redis returns. It reads the outbox
by a cursor (Store.outbox_after) and adds a whole batch with one Redis script that moves
the cursor kept in Redis in the same step, so a restart relays no event twice (see
adapters.events.StreamWriter). The cursor is also saved in Postgres after each batch:
with a Redis that lost its data, relaying goes on from there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import redis.asyncio as redis

from flashtx.actors import clock, metrics
from flashtx.actors.loops import every
from flashtx.adapters.events import StreamWriter, event_payload
from flashtx.adapters.postgres import Store, Timeouts
from flashtx.engine.config import Config

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, config: Config) -> None:
        self._config = config
        self.relayed = 0
        self.pruned = 0
        self.redis_failing = False
        self.last_error = ""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        config = self._config
        self._store = await Store.open(config.postgres_dsn, 2, Timeouts.of(config))
        self._redis = redis.Redis.from_url(config.redis_url)
        deployment_id = await self._store.setting("deployment_id", secrets.token_hex(8))
        writer = StreamWriter(self._redis, config.event_retention_events_max, deployment_id)
        self._cursor: tuple[int, int] | None = None
        delay_s = config.relay_interval_ms / 1000
        self._lag_task = asyncio.get_running_loop().create_task(
            every(1.0, self._report_lag, "outbox lag report"))
        if config.outbox_retention_s > 0:
            self._prune_task = asyncio.get_running_loop().create_task(
                every(config.outbox_prune_interval_s, self._prune_once, "outbox pruning"))
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
        if self._cursor is None:  # Redis's cursor when it has one: it moves with the events
            self._cursor = await writer.cursor() or await self._store.relay_cursor()
        rows = await self._store.outbox_after(self._cursor, self._config.relay_batch_max)
        if not rows:
            return 0
        await writer.relay([(r["txid"], r["outbox_id"], r["event_id"], r["merchant_id"],
                             event_payload(r)) for r in rows])
        self._cursor = (rows[-1]["txid"], rows[-1]["outbox_id"])
        await self._store.save_relay_cursor(self._cursor)
        if self.redis_failing:
            log.warning("relay resumed")
        self.redis_failing = False
        self.relayed += len(rows)
        return len(rows)

    async def _prune_once(self) -> None:
        """Deletes relayed rows past the retention, behind the cursor saved in Postgres
        (never behind Redis's alone), a bounded number per round."""
        config = self._config
        cursor = await self._store.relay_cursor()
        before_ms = clock.now_ms() - config.outbox_retention_s * 1000
        pruned = 0
        for _ in range(10):
            deleted = await self._store.prune_outbox(cursor, before_ms,
                                                     config.outbox_prune_batch_max)
            pruned += deleted
            if deleted < config.outbox_prune_batch_max:
                break
        if pruned:
            metrics.record(metrics.outbox_pruned(), pruned)
        self.pruned += pruned

    async def _report_lag(self) -> None:
        if self._cursor is None:
            return
        waiting, oldest = await self._store.outbox_lag(self._cursor)
        lag_s = 0.0 if oldest is None else (clock.now_ms() - oldest) / 1000
        metrics.record(metrics.lag_seconds(), lag_s, what="outbox")
        metrics.record(metrics.depth(), waiting, queue="outbox", actor="relay")

    async def stats(self) -> dict[str, Any]:
        cursor = getattr(self, "_cursor", None)
        waiting, oldest = (await self._store.outbox_lag(cursor) if cursor is not None
                           else (0, None))
        return {"relayed": self.relayed, "pruned": self.pruned, "waiting": waiting,
                "lag_ms": 0 if oldest is None else clock.now_ms() - oldest,
                "redis_failing": self.redis_failing, "last_error": self.last_error}
