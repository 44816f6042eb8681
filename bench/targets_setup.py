"""Bringing each target up before its run and down after it, in the parent process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

from flashtx.bench import verify as verify_module
from flashtx.bench import verify_postgres
from flashtx.bench.engine_options import BENCH_KEY_RATES, engine_overrides
from flashtx.bench.scenarios import ScenarioParams
from flashtx.bench.targets import bare_copy, engine_setup, postgres, redis_lua

ECHO_START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def engine(args: argparse.Namespace,
           console: Console) -> Iterator[tuple[str, str, str | None, str | None]]:
    """Address, operator key, Postgres DSN and Redis URL (None: keeps none, or unknown for
    ``--target``) of the engine under test.

    A local engine lives for the run; ``--target`` names a running one.
    """
    if args.target:
        yield args.target, str(args.operator_key), args.engine_postgres_dsn, None
        return
    try:
        from flashtx.app import LocalEngine, new_operator_key
    except ImportError as error:
        raise RuntimeError(
            f"no local engine available ({error}); pass --target/--operator-key or --no-engine"
        ) from error
    console.print(
        f"starting a local engine ({args.gateways} gateway(s), {args.stock_shards} "
        f"stock and {args.order_shards} order shards) …"
    )

    layout = {
        "gateways": args.gateways,
        "stock_shards": args.stock_shards,
        "order_shards": args.order_shards,
    }
    # An engine restarted on a kept Postgres knows only its operator key's hash: bring
    # our own key (a configured key wins) so that the bench can create its merchant.
    overrides = {"operator_key": new_operator_key(), **BENCH_KEY_RATES,
                 **engine_overrides(args)}
    try:
        local = LocalEngine.start(port=0, **layout, **overrides)
    except Exception as error:  # any failure to start fails the run, said in one line
        raise RuntimeError(
            f"the local engine did not start: {type(error).__name__}: {error}"
        ) from error
    try:
        yield (local.address, overrides["operator_key"], _engine_dsn(local.config),
               _engine_redis(local.config))
    finally:
        local.stop()


async def prepare_engine(
    address: str, operator_key: str, run_id: str, params: ScenarioParams
) -> dict[str, Any]:
    """A fresh merchant with the scenario's SKUs; for flash-sale with ``--buckets K``
    (K >= 1), also a campaign over them that every order then names."""
    skus = params.skus()
    info = await engine_setup.prepare(address, operator_key, run_id, skus)
    if params.name == "flash-sale" and params.buckets >= 1:
        campaign_id = engine_setup.campaign_id_for(run_id)
        campaign = await engine_setup.create_campaign(
            info, campaign_id, skus, params.buckets, starts_in_s=-1.0
        )
        info["campaign_id"] = campaign_id
        info["campaign"] = campaign
    return info


def _engine_redis(config: Any) -> str | None:
    """Where the local engine's relay writes events: its Redis, the embedded one, or none."""
    url = getattr(config, "redis_url", "none")
    if url == "none" or getattr(config, "postgres_dsn", "none") == "none":
        return None
    return url or _embedded("redis_url")


def _engine_dsn(config: Any) -> str | None:
    """Where the local engine writes: its configured DSN, the embedded server, or nowhere."""
    dsn = getattr(config, "postgres_dsn", "none")
    if dsn == "none":
        return None
    return dsn or _embedded("postgres_dsn")


async def verify(
    info: dict[str, Any], params: ScenarioParams, merged: dict[str, Any], seed: int, dsn: str | None
) -> dict[str, Any]:
    """The API checks, then every kept acknowledged order looked up in the engine's Postgres."""
    ledger = merged["ledger"]
    verification = await verify_module.verify_engine(info, params, ledger, seed)
    verification["invariants"]["attempted_mismatch"] = merged["attempted"] - merged["completed"]
    found = None
    if dsn:
        found = await verify_postgres.missing_acked_orders(
            dsn, info["merchant_id"], ledger["acked_kept"]
        )
    if found is None:
        verification["checked"]["postgres_orders_checked"] = 0
    else:
        missing, checked = found
        verification["invariants"]["lost_acked"] += missing
        verification["checked"]["postgres_orders_checked"] = checked
    return verification


@contextlib.contextmanager
def baseline(
    name: str, args: argparse.Namespace, run_id: str, params: ScenarioParams, console: Console
) -> Iterator[tuple[dict[str, Any], Callable[[], int]]]:
    """A prepared baseline and a check answering its oversold units after the run."""
    if name == "echo":
        with echo_server() as address:
            yield {"address": address, "api_key": "echo"}, lambda: 0
    elif name == "postgres":
        dsn = args.postgres_dsn or _embedded("postgres_dsn")
        console.print("loading the naive Postgres baseline …")
        info = asyncio.run(postgres.prepare(dsn, params.skus()))
        yield info, lambda: asyncio.run(postgres.oversold_units(dsn))
    elif name == "copy":
        dsn = args.postgres_dsn or _embedded("postgres_dsn")
        yield asyncio.run(bare_copy.prepare(dsn, params.skus())), lambda: 0
    elif name == "redis":
        url = args.redis_url or _embedded("redis_url")
        prefix = f"flashtx-bench:{run_id}"
        skus = params.skus()
        info = asyncio.run(redis_lua.prepare(url, prefix, skus))
        try:
            sku_ids = [sku.sku_id for sku in skus]
            yield info, lambda: asyncio.run(redis_lua.oversold_units(url, prefix, sku_ids))
        finally:
            asyncio.run(redis_lua.remove_keys(url, prefix))
    else:
        raise ValueError(f"unknown baseline {name!r}")


def _embedded(function: str) -> str:
    from flashtx.adapters import embedded

    return str(getattr(embedded, function)())


@contextlib.contextmanager
def echo_server(answers: tuple[str, ...] = ()) -> Iterator[str]:
    """A bare grpc.aio server in its own process; `answers`: METHOD=FILE pairs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flashtx.bench.echo_server", "--port", "0",
         *(f"--answer={pair}" for pair in answers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("PORT "):
            raise RuntimeError(f"echo server did not start: {line!r}")
        yield f"127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
