"""What a well-behaved client does during crashes and outages: retry retryable failures
with the same idempotency key until there is an answer. Shared by the crash tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc

from flashtx_client import Client
from flashtx_client.v1 import order_pb2

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})
# A gateway that has just started cannot check keys until its merchant shard has loaded.
RETRYABLE_WHILE_RESTARTING = RETRYABLE | {grpc.StatusCode.UNAUTHENTICATED}


async def until_answered(place: Callable[[], Awaitable[Any]], deadline_s: float = 120,
                         retryable: frozenset[grpc.StatusCode] = RETRYABLE) -> tuple[str, Any]:
    """("OK", response), or (final status name, None), or ("GAVE_UP", None)."""
    deadline = time.monotonic() + deadline_s
    delay_s = 0.05
    while time.monotonic() < deadline:
        try:
            return "OK", await place()
        except grpc.aio.AioRpcError as error:
            if error.code() not in retryable:
                return error.code().name, None
            # Backing off (capped) keeps thousands of waiting clients from taking the CPU
            # a restarting server needs.
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.25)
    return "GAVE_UP", None


def one_unit(key: str, buyer: str, sku_id: str) -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(idempotency_key=key, buyer_id=buyer,
                                       lines=[order_pb2.OrderLine(sku_id=sku_id, quantity=1)])


# A channel whose server went away reconnects within a second, not after gRPC's default
# backoff (up to two minutes).
FAST_RECONNECT = {"grpc.initial_reconnect_backoff_ms": 100,
                  "grpc.min_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 1000}


class Channels:
    """A few long-lived clients that reconnect fast when their server restarts, shared by
    thousands of buyers: a fresh channel per attempt costs milliseconds of CPU, which
    waiting buyers would take from the server coming back."""

    def __init__(self, address: str, token: str, count: int = 8) -> None:
        self.clients = [Client(address, token, **FAST_RECONNECT) for _ in range(count)]
        self._turn = itertools.count()

    def pick(self) -> Client:
        return self.clients[next(self._turn) % len(self.clients)]

    async def close(self) -> None:
        for client in self.clients:
            await client.channel.close()


async def buy(address: str, token: str, request: order_pb2.PlaceOrderRequest,
              acked: dict[str, str], channels: Channels | None = None,
              deadline_s: float = 120) -> str:
    """One buyer retrying until answered (for `deadline_s` at most): through `channels`,
    else through a fresh connection per attempt."""
    async def attempt() -> Any:
        if channels is not None:
            return await channels.pick().orders.PlaceOrder(request, timeout=5)
        async with Client(address, token) as client:
            return await client.orders.PlaceOrder(request, timeout=5)

    outcome, response = await until_answered(attempt, deadline_s,
                                             retryable=RETRYABLE_WHILE_RESTARTING)
    if response is not None:
        acked[request.idempotency_key] = response.order.order_id
    return outcome


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[str]:
    """A new database on the configured (or embedded) server, dropped afterwards."""
    from flashtx.adapters import embedded
    from tests.integration.conftest import _database, database_on

    server_dsn = embedded.postgres_dsn()
    name = f"{prefix}_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    try:
        yield database_on(server_dsn, name)
    finally:
        await _database(server_dsn, name, create=False)


async def eventually(check: Callable[[], Awaitable[None]], timeout_s: float = 20.0) -> None:
    """Runs `check` until its assertions hold (background loops act on their own time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def materialized(connection: asyncpg.Connection, timeout_s: float = 120) -> None:
    """Waits until the order shards' committed batches are all in the query tables (the
    batch journal holds no row): what a test reads from flashtx.orders, order_lines,
    the outbox … then holds every acknowledged order."""
    deadline = time.monotonic() + timeout_s
    while await connection.fetchval("SELECT count(*) FROM flashtx.order_journal"):
        assert time.monotonic() < deadline, "the materializers did not catch up"
        await asyncio.sleep(0.05)
