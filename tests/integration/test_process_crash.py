"""SIGKILL the whole `flashtx serve` process group mid-sale, start it again on the same
database: every acknowledged order survives, nothing is oversold, retries get their
original orders, and the counters the actors rebuild equal those the tables imply."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from flashtx.app import free_port, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.retrying import (
    Channels,
    buy,
    fresh_database,
    materialized,
    one_unit,
    until_answered,
)

# Two `serve` starts of up to SERVE_START_S each on a loaded machine, and the sale.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

UNITS = 1_500
BUYERS = 2_500  # more buyers than units: the sale sells out, the rest are refused


SERVE_LOGS = Path(tempfile.gettempdir()) / "flashtx-test-serve"


def start_serve(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`flashtx serve` in a session of its own; its output in a file (a file, not a pipe:
    Ray's daemons may hold a pipe open after the run), which `wait_serving` shows when
    the server does not come up."""
    SERVE_LOGS.mkdir(exist_ok=True)
    with (SERVE_LOGS / f"{port}.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "flashtx", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


# How long a `flashtx serve` start is waited for: Ray's start on a loaded machine, which
# `LocalEngine` tries up to RAY_START_TRIES times (Ray waits 30 s for its raylet each).
SERVE_START_S = 300


async def wait_serving(address: str, timeout_s: float = SERVE_START_S) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() >= deadline:
            log = SERVE_LOGS / f"{address.rsplit(':', 1)[1]}.log"
            shown = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
            raise AssertionError(f"flashtx serve did not come up; its output:\n{shown}")
        await asyncio.sleep(0.5)


async def test_sigkill_of_the_whole_server_loses_no_acknowledged_order() -> None:
    async with fresh_database("flashtx_crash") as dsn:
        await sigkill_and_restart(dsn)


async def sigkill_and_restart(dsn: str) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "FLASHTX_POSTGRES_DSN": dsn, "FLASHTX_REDIS_URL": "none",
           "FLASHTX_OPERATOR_KEY": new_operator_key(), "RAY_USAGE_STATS_ENABLED": "0"}
    server = start_serve(port, env)
    try:
        await wait_serving(address)
        async with Client(address, env["FLASHTX_OPERATOR_KEY"]) as operator:
            created = await operator.merchants.CreateMerchant(
                merchant_pb2.CreateMerchantRequest(merchant_id="crash-shop"))
        token = created.admin_key_secret
        async with Client(address, token) as shop:
            await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[stock_pb2.Sku(
                sku_id="drop", name="Drop", price_minor=100, on_hand=UNITS)]))
        acked: dict[str, str] = {}
        gate = asyncio.Semaphore(300)
        channels = Channels(address, token)

        async def gated(buyer: int) -> str:
            async with gate:
                # A buyer waits out the whole restart: `serve` may take up to
                # SERVE_START_S to come back on a loaded machine (Ray's start).
                return await buy(address, token,
                                 one_unit(f"crash-{buyer}", f"buyer-{buyer}", "drop"), acked,
                                 channels, deadline_s=SERVE_START_S + 120)

        sale = asyncio.gather(*(gated(b) for b in range(BUYERS)))
        while len(acked) < UNITS // 3:
            await asyncio.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)  # the whole process group: driver and Ray
        server.wait()
        server = start_serve(port, env)
        outcomes = await sale
        await channels.close()
        assert set(outcomes) <= {"OK", "FAILED_PRECONDITION"}, set(outcomes)
        assert len(acked) == outcomes.count("OK") == UNITS

        async with Client(address, token) as shop:
            # Retried as any client retries UNAVAILABLE: with the same key.
            replays = [(await until_answered(lambda key=key: shop.orders.PlaceOrder(
                one_unit(key, f"buyer-{key.split('-')[1]}", "drop"))))[1]
                for key in list(acked)[:50]]
            level = (await until_answered(lambda: shop.stock.GetStock(stock_pb2.GetStockRequest(
                sku_id="drop", consistency=common_pb2.READ_CONSISTENCY_STRONG))))[1].level
        assert all(r.replayed for r in replays)
        assert [r.order.order_id for r in replays] == [acked[k] for k in list(acked)[:50]]

        connection = await asyncpg.connect(dsn)
        try:
            await materialized(connection)
            stored = {r["idempotency_key"]: r["order_id"] for r in await connection.fetch(
                "SELECT idempotency_key, order_id FROM flashtx.orders")}
            on_hand = await connection.fetchval(
                "SELECT sum(delta) FROM flashtx.stock_adjustments WHERE sku_id = 'drop'")
            held = await connection.fetchval(
                "SELECT coalesce(sum(l.quantity), 0) FROM flashtx.order_lines l"
                " JOIN flashtx.order_states s USING (order_id) WHERE s.status = 1")
        finally:
            await connection.close()
        assert {k: stored.get(k) for k in acked} == acked  # every acknowledged order is there
        assert len(stored) == UNITS  # and nothing else: no duplicate, no oversell
        # Counters the restarted actors rebuilt equal the ones the tables imply.
        assert (level.on_hand, level.reserved, level.sold) == (on_hand, held, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)



