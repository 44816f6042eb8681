"""A connector in its own actor: when it fails or hangs, only it does."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import redis.asyncio as redis

from adapters.connectors import SINKS, ConnectorRunner, ConnectorSpec


class Connector:
    def __init__(self, spec: ConnectorSpec, redis_url: str, postgres_dsn: str) -> None:
        sink = SINKS[spec.kind]
        # The engine's database is the default of sinks that write to one (export).
        defaults = {"dsn": postgres_dsn} if "dsn" in inspect.signature(sink).parameters else {}
        self._runner = ConnectorRunner(spec, redis.Redis.from_url(redis_url),
                                       sink(**{**defaults, **spec.options}))
        self._task = asyncio.get_running_loop().create_task(self._runner.run())

    async def replay_dead_letters(self) -> tuple[int, int]:
        return await self._runner.replay_dead_letters()

    async def stats(self) -> dict[str, Any]:
        return await self._runner.stats()
