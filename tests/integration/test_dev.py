"""`flashtx dev`: one command serves the API on this machine with a merchant, SKUs and
keys; a client calls it with the printed channel key; Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from flashtx.app import free_port
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, order_pb2, stock_pb2
from tests.integration.retrying import fresh_database

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_the_dev_server_serves_with_the_keys_it_prints(tmp_path) -> None:
    async with fresh_database("flashtx_dev") as dsn:
        port = free_port()
        env = {**os.environ, "FLASHTX_POSTGRES_DSN": dsn, "FLASHTX_REDIS_URL": "none",
               "FLASHTX_DATA_DIR": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
        dev = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flashtx", "dev", "--port", str(port), "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        assert dev.stdout is not None
        try:
            seen = []
            while True:  # the JSON line, once everything is set up
                line = (await asyncio.wait_for(dev.stdout.readline(), 180)).decode()
                assert line, "flashtx dev ended: " + "".join(seen)[-3000:]
                seen.append(line)
                if line.startswith("{"):
                    setup = json.loads(line)
                    break
            assert setup["address"].endswith(f":{port}")
            async with Client(setup["address"], setup["keys"]["channel"]) as channel:
                placed = await channel.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                    idempotency_key="k1", buyer_id="b1",
                    lines=[order_pb2.OrderLine(sku_id=setup["skus"][0], quantity=1)]))
                assert placed.order.order_id
            async with Client(setup["address"], setup["keys"]["admin"]) as admin:
                level = (await admin.stock.GetStock(stock_pb2.GetStockRequest(
                    sku_id=setup["skus"][0],
                    consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
                assert level.reserved == 1
            dev.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(dev.wait(), 120) == 0
        finally:
            if dev.returncode is None:
                os.killpg(dev.pid, signal.SIGKILL)
                await dev.wait()
