"""``flashtx bench``: the engine and its baselines under one load shape, then verification.

    flashtx bench --scenario flash-sale --duration 20 --json out.json --plot out.png

Runs, one after the other and with the same load shape, the engine (a local one it starts,
or ``--target host:port --operator-key KEY``) and the baselines (``--baselines``): a bare
gRPC echo server, naive Postgres and Redis with Lua. Verifies the engine's invariants
through its API. Exit status: 0 when every invariant count is 0, 1 when one is not,
2 when the run could not be made.

``--buckets K`` (K >= 1, flash-sale): the hot SKUs go on sale in a campaign that takes all
their stock, split into K counters per SKU on the stock shards, and every engine order
names it; the baselines have no buckets and ignore it. ``--scenario cart-checkout``:
buyers fill campaign carts before the sale starts, then all check out at its start
(engine only: see bench/cart_checkout.py; --duration and --warmup do not apply).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from flashtx.bench import report
from flashtx.bench.engine_options import (
    ORDERS_PER_S_MAX,
    UNITS_PER_ORDER_MAX,
    engine_overrides,
)
from flashtx.bench.events_lag import event_lag
from flashtx.bench.journal_lag import JournalLag
from flashtx.bench.loadgen import WorkerSpec
from flashtx.bench.runner import LoadShape, run_target
from flashtx.bench.scenarios import HOT_SCENARIOS, SCENARIOS, ScenarioParams

BASELINES = ("echo", "postgres", "redis")
# Not run by default: the physical limit of the engine's durable write (bench/targets/bare_copy.py).
OPTIONAL_BASELINES = ("copy",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flashtx bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--scenario", choices=SCENARIOS, default="flash-sale")
    add(
        "--mode",
        choices=("unary", "batch", "columns"),
        default="unary",
        help="unary: PlaceOrder per order; batch: PlaceOrders with --batch-size orders;"
        " columns: the same batches as PlaceOrderColumns (baselines as in batch)",
    )
    add("--duration", type=float, default=10.0, help="measured seconds per target")
    add("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    add("--seed", type=int, default=1)
    add(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: orders/s over all processes (0: closed loop)",
    )
    add(
        "--processes",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="load-generating processes (default: half the cores)",
    )
    add(
        "--concurrency",
        type=int,
        default=0,
        help="closed loop: calls in flight per process (default 64 unary, 4 batch)",
    )
    add("--channels", type=int, default=2, help="gRPC channels per process")
    add("--batch-size", type=int, default=200, help="orders per PlaceOrders call")
    add("--inflight-max", type=int, default=2048, help="open loop: calls in flight per process")
    add("--pool-size", type=int, default=16, help="Postgres/Redis connections per process")
    add(
        "--baselines",
        default=",".join(BASELINES),
        help="echo,postgres,redis (the default), copy (bare COPY of the engine's rows) or none",
    )
    add("--no-engine", action="store_true", help="run the baselines only")
    add("--target", help="host:port of a running engine (default: start a local one)")
    add("--operator-key", help="operator key of --target")
    add("--engine-postgres-dsn", help="--target's Postgres, to find acked orders in it")
    add("--gateways", type=int, default=1)
    add("--stock-shards", type=int, default=2)
    add("--order-shards", type=int, default=2)
    add(
        "--engine-config",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a Config field for the local engine, e.g. ack_mode=memory (repeatable)",
    )
    add("--postgres-dsn", help="default: FLASHTX_POSTGRES_DSN or an embedded server")
    add("--redis-url", help="default: FLASHTX_REDIS_URL or an embedded server")
    add("--hot-skus", type=int, default=3, help="flash-sale: SKUs on sale")
    add(
        "--stock-per-sku",
        type=int,
        help="flash-sale: units per hot SKU (default: enough for 200,000 orders/s over the "
        "whole run, at least 100,000, so no target sells out and answers refusals "
        "instead of placing); cart-checkout: default half "
        "the units its buyers put in carts",
    )
    add("--per-buyer-limit", type=int, default=2, help="flash-sale: units per buyer and SKU")
    add(
        "--buyers",
        type=int,
        help="distinct buyers drawn from (default 1,000,000); cart-checkout: buyers who "
        "fill a cart and check out (default 20,000)",
    )
    add(
        "--buckets",
        type=int,
        default=0,
        help="flash-sale: sell the hot SKUs in a campaign with K stock buckets per SKU "
        "(0: no campaign; baselines ignore it); cart-checkout: the campaign's buckets",
    )
    add(
        "--fill-allowance",
        type=float,
        default=0.0,
        help="cart-checkout: seconds from the campaign's creation to its start, for filling "
        "carts (default 3 + buyers / 1,500)",
    )
    add("--catalog-skus", type=int, default=100_000, help="catalog/mixed: SKUs (Zipf demand)")
    add("--saas-clients", type=int, default=-1, help="slow readers per process (mixed: 2)")
    add(
        "--profile",
        action="store_true",
        help="also print the CPU µs per order of each stage (every process's CPU time "
        "over the measured window; see bench/cpu.py)",
    )
    add("--json", type=Path, help="write the results document here")
    add("--plot", type=Path, help="write a PNG of throughput and latency here")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.scenario == "overload":
        return _overload(args)
    baselines = _baselines(args.baselines)
    if args.target and not args.operator_key:
        raise SystemExit("--target needs --operator-key")
    if args.buckets < 0 or (args.buckets and args.scenario not in HOT_SCENARIOS):
        raise SystemExit(f"--buckets wants K >= 0, with one of {HOT_SCENARIOS}")
    if args.scenario == "cart-checkout" and (args.rate > 0 or args.mode != "unary"):
        raise SystemExit("cart-checkout is a closed-loop storm of unary Checkout calls")
    console = Console(width=None if Console().is_terminal else 120)
    try:
        doc, histograms = _run(args, baselines, console)
    except (RuntimeError, OSError, grpc.RpcError) as error:
        console.print(f"[red]bench failed:[/red] {error}")
        return 2
    report.print_summary(console, doc)
    if args.json:
        report.write_json(args.json, doc)
        console.print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot, doc, histograms)
        console.print(f"wrote {args.plot}")
    return 1 if any(doc["invariants"].values()) else 0


def _overload(args: argparse.Namespace) -> int:
    """``--scenario overload``: capacity, then twice it open loop (accepted p99, how the
    excess is refused, engine memory before and after), then order latency alone and
    beside a greedy SaaS reader (bench/robustness.py). Engine only, a local one."""
    from flashtx.bench import robustness

    overrides = engine_overrides(args)
    result = robustness.measure(args.duration, **overrides)
    console = Console(width=None if Console().is_terminal else 120)
    console.print_json(data=result)
    if args.json:
        args.json.write_text(json.dumps({"scenario": "overload", "engine_config": overrides,
                                         "duration_s": args.duration, **result}, indent=2))
        console.print(f"wrote {args.json}")
    return 0


def _baselines(text: str) -> list[str]:
    names = [] if text.strip() in ("", "none") else [n.strip() for n in text.split(",")]
    unknown = set(names) - set(BASELINES) - set(OPTIONAL_BASELINES)
    if unknown:
        raise SystemExit(f"unknown baselines {sorted(unknown)}; choose from "
                         f"{BASELINES + OPTIONAL_BASELINES}")
    return names




def scenario_params(args: argparse.Namespace) -> ScenarioParams:
    cart_checkout = args.scenario == "cart-checkout"
    stock_per_sku = args.stock_per_sku
    if stock_per_sku is None:
        # cart-checkout: 0 = half of each SKU's demand (ScenarioParams.skus). Else no
        # target may sell out within the run: a sold-out target answers cheap refusals.
        run_s = args.duration + args.warmup
        stock_per_sku = 0 if cart_checkout else max(
            100_000, int(UNITS_PER_ORDER_MAX * ORDERS_PER_S_MAX * run_s / args.hot_skus))
    buyers = args.buyers if args.buyers is not None else (20_000 if cart_checkout else 1_000_000)
    return ScenarioParams(
        name=args.scenario,
        seed=args.seed,
        hot_skus=args.hot_skus,
        stock_per_sku=stock_per_sku,
        per_buyer_limit=args.per_buyer_limit,
        buyers=buyers,
        catalog_skus=args.catalog_skus,
        buckets=args.buckets if args.scenario in HOT_SCENARIOS else 0,
    )


def load_shape(args: argparse.Namespace) -> LoadShape:
    batch = args.mode in ("batch", "columns")
    saas = args.saas_clients if args.saas_clients >= 0 else (2 if args.scenario == "mixed" else 0)
    return LoadShape(
        processes=args.processes,
        concurrency=args.concurrency or (4 if batch else 64),
        channels=args.channels,
        batch=batch,
        batch_size=args.batch_size,
        rate_per_s=args.rate,
        inflight_max=args.inflight_max,
        warmup_s=args.warmup,
        duration_s=args.duration,
        pool_size=args.pool_size,
        saas_clients=saas,
        columns=args.mode == "columns",
    )


def _config(
    args: argparse.Namespace, shape: LoadShape, run_id: str, load_at_start: float
) -> dict[str, Any]:
    return {
        "scenario": args.scenario,
        "mode": args.mode,
        "run_id": run_id,
        "seed": args.seed,
        "loop": "open" if args.rate > 0 else "closed",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "processes": shape.processes,
        "concurrency_per_process": shape.concurrency,
        "channels_per_process": shape.channels,
        "batch_size": shape.batch_size if shape.batch else 1,
        "pool_size": shape.pool_size,
        "saas_clients_per_process": shape.saas_clients,
        "target": args.target or ("none" if args.no_engine else "local"),
        "engine_layout": {
            "gateways": args.gateways,
            "stock_shards": args.stock_shards,
            "order_shards": args.order_shards,
        },
        "engine_config": engine_overrides(args),
        "params": vars(scenario_params(args)),
        "buckets": args.buckets,
        "notes": _notes(args),
        # The bench shares the machine with whatever else runs: say how busy it was.
        "host": {"cpus": os.cpu_count(), "load_average_1m_at_start": load_at_start},
    }


def _notes(args: argparse.Namespace) -> list[str]:
    notes = []
    if args.buckets and args.scenario == "flash-sale":
        notes.append(
            f"engine orders name a campaign over the hot SKUs with {args.buckets} stock "
            "bucket(s) per SKU; the baselines have no buckets and ignore --buckets"
        )
    if args.scenario == "cart-checkout":
        notes.append(
            "cart-checkout: engine only (baselines have no carts); the figures are the "
            "checkout storm's (duration_s: from the campaign's start to the last answer; "
            "--duration and --warmup do not apply); the fill phase is under cart_checkout"
        )
    return notes


def _run(
    args: argparse.Namespace, baselines: list[str], console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    from flashtx.bench import targets_setup

    # Unique per run: runs against one --target must not share a merchant.
    run_id = f"r{int(time.time()) % 10**8}-{args.seed}-{secrets.token_hex(2)}"
    load_at_start = os.getloadavg()[0]
    params = scenario_params(args)
    shape = load_shape(args)
    if args.scenario == "cart-checkout":
        return _run_cart_checkout(args, baselines, params, shape, run_id, load_at_start, console)
    base = WorkerSpec(0, "", {}, params, run_id, False, 1, 1, 0.0, 1, 0.0, 0.0)
    histograms: dict[str, Any] = {}
    engine_summary = verification = None
    if not args.no_engine:
        with targets_setup.engine(args, console) as (address, operator_key, dsn, redis_url):
            info = asyncio.run(targets_setup.prepare_engine(address, operator_key, run_id, params))
            database = dsn if dsn and dsn != "none" else None
            lag = JournalLag(database).start() if database else None
            merged = run_target("engine", info, shape, base, console, args.profile, database)
            if lag is not None:
                console.print("waiting for the materializers to catch up …")
                merged["materializer"] = lag.finish()
            if redis_url is not None:
                console.print("measuring how fast events reach Redis …")
                merged["events"] = asyncio.run(event_lag(
                    redis_url, info["merchant_id"], merged["outcomes"].get("ok", 0)))
            console.print("verifying the engine's invariants …")
            verification = asyncio.run(targets_setup.verify(info, params, merged, args.seed, dsn))
        engine_summary = report.target_summary(merged)
        histograms["engine"] = merged["histogram"]
    summaries: dict[str, dict[str, Any]] = {}
    for name in baselines:
        with targets_setup.baseline(name, args, run_id, params, console) as (info, check):
            merged = run_target(name, info, shape, base, console, args.profile)
            summaries[name] = report.target_summary(merged)
            summaries[name]["oversold"] = check()
        histograms[name] = merged["histogram"]
    config = _config(args, shape, run_id, load_at_start)
    doc = report.document(config, engine_summary, verification, summaries)
    return doc, histograms


def _run_cart_checkout(
    args: argparse.Namespace,
    baselines: list[str],
    params: ScenarioParams,
    shape: LoadShape,
    run_id: str,
    load_at_start: float,
    console: Console,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from flashtx.bench import cart_checkout

    if args.no_engine:
        raise SystemExit("cart-checkout runs against the engine only")
    if baselines:
        console.print(f"cart-checkout: skipping the baselines {baselines} (they have no carts)")
    shape = replace(shape, batch=False, warmup_s=0.0)
    merged, verification, figures = cart_checkout.run(
        args, params, run_id, shape.concurrency, console
    )
    summary = report.target_summary(merged)
    shape = replace(shape, duration_s=round(merged["storm_s"], 3))
    config = _config(args, shape, run_id, load_at_start)
    config.update(mode="unary", loop="closed", duration_s=shape.duration_s, warmup_s=0.0)
    config["batch_size"] = 1
    doc = report.document(config, summary, verification, {})
    doc["cart_checkout"] = figures
    console.print(
        f"fill: {figures['fill']['carts']:,} carts in {figures['fill']['fill_s']:.1f} s "
        f"({figures['fill']['add_items_per_s']:,.0f} AddItem/s); storm: "
        f"{merged['completed']:,} checkouts in {figures['storm_s']:.2f} s; "
        f"answered since the start p50 {figures['answered_since_start_ms']['p50']:.0f} ms, "
        f"p99 {figures['answered_since_start_ms']['p99']:.0f} ms"
    )
    return doc, {"engine": merged["histogram"]}
