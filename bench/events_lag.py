"""How long a placed order's event takes to reach its Redis stream.

For every ``order.reserved`` event in the run merchant's stream: the stream entry's id
(Redis' clock when the relay added it, in ms) minus the event's ``created_at_ms`` (when
the order shard placed the order, before its commit). So the figure is placement →
commit → outbox → relay → stream, an upper bound of "commit → stream". The stream keeps
about ``event_retention_events_max`` events (100,000 by default): a long run reports on
its last ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as redis

from flashtx.adapters.events import stream_key
from flashtx_client.v1 import event_pb2

CHUNK = 10_000


async def event_lag(redis_url: str, merchant_id: str, accepted: int,
                    wait_s: float = 30.0) -> dict[str, Any]:
    """Waits (at most `wait_s`) until the stream holds an event per accepted order or
    stops growing, then answers the lag percentiles in ms."""
    client = redis.Redis.from_url(redis_url)
    key = stream_key(merchant_id)
    try:
        deadline = time.monotonic() + wait_s
        length = -1
        while time.monotonic() < deadline:
            now = await client.xlen(key)
            if now >= accepted or now == length:
                break
            length = now
            await asyncio.sleep(1.0)
        lags: list[int] = []
        start = "-"
        while True:
            entries = await client.xrange(key, min=start, count=CHUNK)
            for entry_id, fields in entries:
                event = event_pb2.Event.FromString(fields[b"event"])
                if event.type == "order.reserved":
                    added_ms = int(entry_id.split(b"-")[0])
                    lags.append(added_ms - event.created_at_ms)
            if len(entries) < CHUNK:
                break
            start = "(" + entries[-1][0].decode()
    finally:
        await client.aclose()
    lags.sort()

    def at(share: float) -> int:
        return lags[min(len(lags) - 1, int(share * len(lags)))] if lags else 0

    return {"events": len(lags), "accepted": accepted, "p50_ms": at(0.5), "p99_ms": at(0.99),
            "max_ms": lags[-1] if lags else 0}
