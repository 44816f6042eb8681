"""A connector in its own actor: when it fails or hangs, only it does."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import redis.asyncio as redis

from flashtx.actors import metrics
from flashtx.actors.loops import every
from flashtx.adapters.connectors import SINKS, ConnectorRunner, ConnectorSpec

REPORT_INTERVAL_S = 5.0


class Connector:
    def __init__(self, spec: ConnectorSpec, redis_url: str, postgres_dsn: str) -> None:
        sink = SINKS[spec.kind]
        # The engine's database is the default of sinks that write to one (export).
        defaults = {"dsn": postgres_dsn} if "dsn" in inspect.signature(sink).parameters else {}
        self._runner = ConnectorRunner(spec, redis.Redis.from_url(redis_url),
                                       sink(**{**defaults, **spec.options}))
        self._task = asyncio.get_running_loop().create_task(self._runner.run())
        self._reported = (0, 0, 0)
        self._reporter = asyncio.get_running_loop().create_task(
            every(REPORT_INTERVAL_S, self._report, f"connector {spec.name} metrics"))

    async def _report(self) -> None:
        """Delivered and dead-lettered events, gaps (events trimmed before they were
        read), and the dead-letter stream's length."""
        runner, name = self._runner, self._runner.spec.name
        delivered, dead, gaps = runner.delivered, runner.dead_lettered, runner.gaps
        metrics.record(metrics.connector_events(), delivered - self._reported[0],
                       connector=name, outcome="delivered")
        metrics.record(metrics.connector_events(), dead - self._reported[1],
                       connector=name, outcome="dead_lettered")
        metrics.record(metrics.connector_events(), gaps - self._reported[2],
                       connector=name, outcome="gap")
        self._reported = (delivered, dead, gaps)
        stats = await runner.stats()
        if stats["dead_letters"] >= 0:
            metrics.record(metrics.dead_letters(), stats["dead_letters"], connector=name)

    async def replay_dead_letters(self) -> tuple[int, int]:
        return await self._runner.replay_dead_letters()

    async def stats(self) -> dict[str, Any]:
        return await self._runner.stats()
