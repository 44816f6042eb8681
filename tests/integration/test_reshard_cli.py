"""`flashtx reshard` against a real `flashtx serve`: the serving process adds a stock
shard while it serves (the command asks it through Postgres), stock counts stay right,
orders keep being placed; a request that would not add shards, and one with no
deployment to answer it, end in one line and exit 1, never a traceback; a restart with
the settings from before the reshard starts on the shards the reshard left, and a stop
asked for during that start drains once it is up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

import asyncpg
import pytest

from flashtx.app import free_port, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2
from tests.integration.retrying import fresh_database, one_unit
from tests.integration.test_process_crash import start_serve, wait_serving

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


async def flashtx(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flashtx", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_a_running_deployment_is_resharded_from_the_command_line() -> None:
    async with fresh_database("flashtx_reshard_cli") as dsn:
        port = free_port()
        address = f"127.0.0.1:{port}"
        env = {**os.environ, "FLASHTX_POSTGRES_DSN": dsn, "FLASHTX_REDIS_URL": "none",
               "FLASHTX_OPERATOR_KEY": new_operator_key(), "FLASHTX_STOCK_SHARDS": "1",
               "RAY_USAGE_STATS_ENABLED": "0"}
        # No deployment has used this database yet: the command says so.
        code, out, err = await flashtx(env, "reshard", "--stock-shards", "2", "--timeout", "1")
        assert code == 1 and "no flashtx deployment" in err and "Traceback" not in err, err
        server = start_serve(port, env)
        try:
            await wait_serving(address)
            async with Client(address, env["FLASHTX_OPERATOR_KEY"]) as operator:
                created = await operator.merchants.CreateMerchant(
                    merchant_pb2.CreateMerchantRequest(merchant_id="reshard-shop"))
            async with Client(address, created.admin_key_secret) as shop:
                await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[
                    stock_pb2.Sku(sku_id=f"s{n}", name="S", price_minor=1, on_hand=10)
                    for n in range(20)]))
                for n in range(20):
                    await shop.orders.PlaceOrder(one_unit(f"before-{n}", f"b{n}", f"s{n}"))
                code, out, err = await flashtx(env, "reshard", "--stock-shards", "3")
                assert code == 0, out + err
                result = json.loads(out)
                assert result["state"] == "done" and result["stock_shards"] == 3
                assert result["stock_shards_before"] == 1
                for n in range(20):  # every SKU on its new shard, its hold carried over
                    await shop.orders.PlaceOrder(one_unit(f"after-{n}", f"a{n}", f"s{n}"))
                    level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
                        sku_id=f"s{n}", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
                    assert (level.reserved, level.available) == (2, 8), (n, level)
            # Asking for no more shards than it has changes nothing.
            code, out, err = await flashtx(env, "reshard", "--stock-shards", "3")
            assert code == 1 and "only adds shards" in err and "Traceback" not in err
            code, out, err = await flashtx(env, "reshard", "--stock-shards", "0")
            assert code == 1 and "at least 2" in err and "Traceback" not in err
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            await asyncio.to_thread(server.wait, 60)
        # Nothing serves it now: no answer, and the request expires unrun.
        code, out, err = await flashtx(env, "reshard", "--stock-shards", "4", "--timeout", "1")
        assert code == 1 and "no answer" in err and "nothing was changed" in err, err
        # Started again with the same settings (FLASHTX_STOCK_SHARDS=1): the table the
        # reshard stored wins, and the deployment starts on its three stock shards (it
        # waited forever for a stock shard the table names before). A stop asked for as
        # soon as Ray is up, while the shards and gateways are still being created, waits
        # for the start to end, then drains (Ray's handler ended it at once, no drain).
        code, output = await stopped_while_starting(port, env)
        assert code == 0, output[-3000:]
        assert "flashtx serving" in output and "3 stock shards" in output, output[-3000:]
        assert "draining gateways" in output, output[-3000:]


async def stopped_while_starting(port: int, env: dict[str, str]) -> tuple[int, str]:
    """Starts `flashtx serve`, sends SIGTERM once Ray is up (ray.init's last line), and
    answers its exit code and output."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flashtx", "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    assert server.stdout is not None
    seen: list[str] = []

    async def until_ray_is_up() -> None:
        assert server.stdout is not None
        async for line in server.stdout:
            seen.append(line.decode())
            if "Started a local Ray instance" in seen[-1]:
                server.send_signal(signal.SIGTERM)
                return
        raise AssertionError("serve ended before Ray started: " + "".join(seen)[-3000:])

    try:
        await asyncio.wait_for(until_ray_is_up(), 120)
        rest = (await asyncio.wait_for(server.stdout.read(), 180)).decode()
        code = await asyncio.wait_for(server.wait(), 60)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        raise
    return code, "".join(seen) + rest


async def test_a_command_that_gives_up_says_what_is_known() -> None:
    """A reshard that `serve` took but has not finished when the command stops waiting is
    reported running, never "nothing was changed"; a request nobody took is withdrawn at
    that moment, and `serve` can no longer take it."""
    from flashtx import reshard
    from flashtx.adapters.postgres import Store

    async with fresh_database("flashtx_reshard_wait") as dsn:
        await (await Store.open(dsn, 1)).close()  # the schema
        connection = await asyncpg.connect(dsn)
        try:
            taken = {"id": "taken-1", "stock_shards": 3, "expires_at_ms": 2**62}
            await reshard._write(connection, reshard.REQUEST, taken)
            assert await reshard._take(connection, taken)  # as serve does, then runs it
            said = await reshard._give_up(connection, "taken-1", 5)
            assert "running the reshard" in said and "nothing was changed" not in said, said
            waiting = {"id": "waiting-1", "stock_shards": 3, "expires_at_ms": 2**62}
            await reshard._write(connection, reshard.REQUEST, waiting)
            said = await reshard._give_up(connection, "waiting-1", 5)
            assert "withdrawn: nothing was changed" in said, said
            assert not await reshard._take(connection, waiting)  # too late for serve
            assert await reshard._read(connection, reshard.REQUEST) is None
        finally:
            await connection.close()
