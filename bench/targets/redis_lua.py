"""Baseline: the Redis "seckill" stack, one Lua script per order.

The script checks the idempotency key, the stock of every line and the per-buyer limit,
then decrements, counts the buyer's units, appends the order to a stream (the hand-off
to an asynchronous order writer) and remembers the key. Not durable: Redis acknowledges
before anything reaches a disk. Batch mode pipelines a batch's scripts in one round trip.
Keys carry the run's prefix and are removed after the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from flashtx.bench.scenarios import OrderSpec, SkuSpec
from flashtx.bench.targets.base import Outcome, report_first_error

# KEYS: idempotency key, stream, buyer hash, stock key per line.
# ARGV: buyer id, idempotency key, then per line: sku id, quantity, per-buyer limit.
PLACE_SCRIPT = """
local existing = redis.call('GET', KEYS[1])
if existing then return {2, existing} end
local lines = #KEYS - 3
for i = 1, lines do
  local sku, quantity, limit = ARGV[i*3], tonumber(ARGV[i*3+1]), tonumber(ARGV[i*3+2])
  if tonumber(redis.call('GET', KEYS[i+3]) or '0') < quantity then return {3, ''} end
  if limit > 0 and tonumber(redis.call('HGET', KEYS[3], sku) or '0') + quantity > limit then
    return {4, ''}
  end
end
local entry = {'buyer', ARGV[1], 'key', ARGV[2]}
for i = 1, lines do
  redis.call('DECRBY', KEYS[i+3], ARGV[i*3+1])
  redis.call('HINCRBY', KEYS[3], ARGV[i*3], ARGV[i*3+1])
  entry[#entry+1] = ARGV[i*3]
  entry[#entry+1] = ARGV[i*3+1]
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', '2000000', '*', unpack(entry))
redis.call('SET', KEYS[1], id, 'EX', 3600)
return {1, id}
"""
CODES = {1: "ok", 2: "replayed", 3: "out_of_stock", 4: "limit_exceeded"}


async def prepare(url: str, prefix: str, skus: list[SkuSpec]) -> dict[str, Any]:
    client = redis_asyncio.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for sku in skus:
                pipe.set(f"{prefix}:stock:{sku.sku_id}", sku.on_hand)
            await pipe.execute()
    finally:
        await client.aclose()
    limits = {sku.sku_id: sku.per_buyer_limit for sku in skus if sku.per_buyer_limit}
    return {"url": url, "prefix": prefix, "limits": limits}


async def oversold_units(url: str, prefix: str, sku_ids: list[str]) -> int:
    """Units sold below zero stock, summed over the run's SKUs (must be 0)."""
    client = redis_asyncio.Redis.from_url(url)
    oversold = 0
    try:
        for start in range(0, len(sku_ids), 10_000):
            chunk = sku_ids[start : start + 10_000]
            values = await client.mget([f"{prefix}:stock:{sku}" for sku in chunk])
            oversold += sum(-int(v) for v in values if v is not None and int(v) < 0)
    finally:
        await client.aclose()
    return oversold


async def remove_keys(url: str, prefix: str) -> int:
    """Deletes every key of a run (the Redis under test may be shared); answers the count."""
    client = redis_asyncio.Redis.from_url(url)
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                removed += await client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await client.unlink(*batch)
    finally:
        await client.aclose()
    return removed


class RedisClient:
    name = "redis"
    checks_replay = False

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self._prefix = info["prefix"]
        self._limits: dict[str, int] = info["limits"]
        self._client: redis_asyncio.Redis | None = None
        self._script: Any = None
        self._slots = asyncio.Semaphore(1)

    async def open(self) -> None:
        size = int(self._info.get("pool_size", 16))
        # A blocking pool: callers wait for a connection instead of failing past the cap.
        pool = redis_asyncio.BlockingConnectionPool.from_url(
            self._info["url"], max_connections=size, timeout=30
        )
        self._client = redis_asyncio.Redis(connection_pool=pool)
        # redis-py wakes every waiter of its pool on each release: with an open loop's
        # thousands of waiting calls that costs more than the calls. Queue them here instead.
        self._slots = asyncio.Semaphore(size)
        self._script = self._client.register_script(PLACE_SCRIPT)

    def _arguments(self, order: OrderSpec) -> tuple[list[str], list[Any]]:
        prefix = self._prefix
        keys = [
            f"{prefix}:key:{order.idempotency_key}",
            f"{prefix}:orders",
            f"{prefix}:buyer:{order.buyer_id}",
        ]
        args: list[Any] = [order.buyer_id, order.idempotency_key]
        for sku_id, quantity in order.lines:
            keys.append(f"{prefix}:stock:{sku_id}")
            args.extend((sku_id, quantity, self._limits.get(sku_id, 0)))
        return keys, args

    async def place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]:
        async with self._slots:
            return await self._place(orders, batch)

    async def _place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]:
        assert self._client is not None
        try:
            if not batch:
                return [self._outcome(await self._run(order)) for order in orders]
            async with self._client.pipeline(transaction=False) as pipe:
                for order in orders:
                    keys, args = self._arguments(order)
                    await self._script(keys=keys, args=args, client=pipe)
                replies = await pipe.execute()
            return [self._outcome(reply) for reply in replies]
        except (RedisError, OSError) as error:
            report_first_error(self.name, error)
            return [("error", "")] * len(orders)

    async def _run(self, order: OrderSpec) -> Any:
        keys, args = self._arguments(order)
        return await self._script(keys=keys, args=args)

    @staticmethod
    def _outcome(reply: Any) -> Outcome:
        code, reference = reply
        if isinstance(reference, bytes):
            reference = reference.decode()
        return (CODES.get(int(code), "error"), reference)

    async def read(self, sku_id: str) -> str:
        assert self._client is not None
        async with self._slots:
            await self._client.get(f"{self._prefix}:stock:{sku_id}")
        return "ok"

    async def pay(self, order_ref: str) -> str:
        assert self._client is not None
        async with self._slots:
            await self._client.set(f"{self._prefix}:paid:{order_ref}", 1, ex=3600)
        return "ok"

    async def cancel(self, order_ref: str, order: OrderSpec) -> str:
        async with self._slots:
            return await self._cancel(order_ref, order)

    async def _cancel(self, order_ref: str, order: OrderSpec) -> str:
        assert self._client is not None
        if not await self._client.set(f"{self._prefix}:cancelled:{order_ref}", 1, nx=True, ex=3600):
            return "failed_precondition"
        async with self._client.pipeline(transaction=True) as pipe:
            for sku_id, quantity in order.lines:
                pipe.incrby(f"{self._prefix}:stock:{sku_id}", quantity)
                pipe.hincrby(f"{self._prefix}:buyer:{order.buyer_id}", sku_id, -quantity)
            await pipe.execute()
        return "ok"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
