"""``flashtx bench --scenario cart-checkout``: carts filled before a sale, a checkout storm
at its start. Engine only: the baselines have no carts, so they are skipped.

1. Setup: a fresh merchant and the hot SKUs (units per SKU: half of what the buyers put
   in their carts, unless ``--stock-per-sku``), the worker processes connected.
2. A campaign over the hot SKUs with all their units (``--buckets K`` counters per SKU,
   at least 1), starting ``--fill-allowance`` seconds from now.
3. Fill: every buyer (``--buyers``, split over ``--processes``, ``--concurrency`` calls in
   flight per process) AddItems its 1 or 2 units of one hot SKU (seeded, never beyond the
   per-buyer limit) into its campaign cart. A failed AddItem is repaired with
   UpdateQuantity (which sets, so a retry cannot double a line); a buyer whose cart could
   not be filled sits the storm out, and is counted. The fill rate is reported, it is
   not the headline.
4. Storm: at the campaign's start every buyer Checkout()s once, with its own idempotency
   key, as fast as ``--concurrency`` calls in flight per process allow. Headline: answers
   per second from the start to the last answer; latency of each call (send to answer;
   a buyer's wait for a free slot is not in it, the time from the start to each answer
   is reported beside it); outcomes by code.
5. Verification (every count must be 0): the units of OK checkouts equal the campaign's
   reserved + sold (``unaccounted_units`` / ``extra_units``); reserved + sold within the
   units and the allotment (``oversold``); every OK order found by GetOrder and in
   Postgres with the cart's lines (``lost_acked``, ``cart_mismatch``); a retry of a sample
   of OK checkouts with the same key answers replayed and the same order
   (``duplicates``); no buyer over the limit (``limit_violations``); the campaign carts
   of buyers who got an order are empty (``carts_not_empty``). Checkouts whose outcome
   was unknown (timeout, unavailable, overloaded, error) are retried with their key
   after the storm, and their units counted when the retry answers with an order.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import queue
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flashtx.bench import report, verify, verify_postgres
from flashtx.bench.recorder import decode_histogram, encode_histogram, new_histogram
from flashtx.bench.scenarios import CartSpec, ScenarioParams
from flashtx.bench.targets import engine_setup
from flashtx.bench.targets.engine_setup import bearer
from flashtx.bench.targets.grpc_client import CHANNEL_OPTIONS, error_code
from flashtx_client.v1 import cart_pb2, cart_pb2_grpc, order_pb2_grpc, stock_pb2_grpc

READY_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 600.0
PROGRESS_REFRESH_S = 0.25
CALL_TIMEOUT_S = 30.0
FILL_REPAIRS_MAX = 3
# The storm begins this long after the campaign's start, so that no shard's clock reads
# it as not started yet.
START_MARGIN_S = 0.25
# Unknown outcomes: the checkout may or may not have made an order.
AMBIGUOUS = frozenset({"timeout", "unavailable", "overloaded", "error"})
ORDERED = frozenset({"ok", "replayed"})
REPLAYS_CHECKED_MAX = 2000
CARTS_CHECKED_MAX = 2000


def fill_allowance_s(buyers: int, asked_s: float) -> float:
    """Seconds from the campaign's creation to its start: what was asked, else 3 s and a
    second per 1,500 buyers (AddItem runs at a few thousand per second on a small box)."""
    return asked_s if asked_s > 0 else 3.0 + buyers / 1500


def idempotency_key(run_id: str, buyer_id: str) -> str:
    return f"{run_id}-co-{buyer_id}"


@dataclass(frozen=True)
class CartWorkerSpec:
    worker_index: int
    processes: int
    info: dict[str, Any]
    params: ScenarioParams
    run_id: str
    campaign_id: str
    concurrency: int
    channels: int


def worker_main(spec: CartWorkerSpec, progress: Any, go: Any, results: Any) -> None:
    """Process entry point. Marks its progress slot 0 once connected, fills when go[0]
    (epoch s) is set, puts ("fill", result), checks out from go[1], puts ("storm", result)."""
    try:
        uvloop.run(_run(spec, progress, go, results))
    except Exception as error:  # reported to the parent, which fails the run loudly
        results.put(("error", spec.worker_index, {"error": f"{type(error).__name__}: {error}"}))


class _Carts:
    """Cart stubs over a few channels, used round-robin."""

    def __init__(self, info: dict[str, Any], channels: int) -> None:
        self.metadata = bearer(info["api_key"])
        self._channels = [
            grpc.aio.insecure_channel(info["address"], options=CHANNEL_OPTIONS)
            for _ in range(max(1, channels))
        ]
        self._stubs = [cart_pb2_grpc.CartServiceStub(channel) for channel in self._channels]
        self._next = 0

    def stub(self) -> cart_pb2_grpc.CartServiceStub:
        self._next = (self._next + 1) % len(self._stubs)
        return self._stubs[self._next]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def _run(spec: CartWorkerSpec, progress: Any, go: Any, results: Any) -> None:
    carts = spec.params.carts()[spec.worker_index :: spec.processes]
    client = _Carts(spec.info, spec.channels)
    try:
        progress[spec.worker_index] = 0
        await _wait_for(go, 0)
        filled = await _fill(client, spec, carts, progress)
        results.put(("fill", spec.worker_index, filled))
        storm_at = await _wait_for(go, 1)
        await asyncio.sleep(max(0.0, storm_at - time.time()))
        unfilled = set(filled["unfilled"])
        ready = [cart for cart in carts if cart.buyer_id not in unfilled]
        storm = await _storm(client, spec, ready, storm_at, progress)
        results.put(("storm", spec.worker_index, storm))
    finally:
        await client.close()


async def _wait_for(go: Any, index: int) -> float:
    while go[index] <= 0:
        await asyncio.sleep(0.01)
    return float(go[index])


async def _in_flight(concurrency: int, items: list[Any], call: Any) -> None:
    """Runs `call(item)` for every item with at most `concurrency` calls in flight."""
    pending = iter(items)

    async def lane() -> None:
        for item in pending:
            await call(item)

    await asyncio.gather(*(lane() for _ in range(max(1, concurrency))))


async def _fill(
    client: _Carts, spec: CartWorkerSpec, carts: list[CartSpec], progress: Any
) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    unfilled: list[str] = []
    done = 0

    async def add(cart: CartSpec) -> None:
        nonlocal done
        request = cart_pb2.AddItemRequest(
            buyer_id=cart.buyer_id,
            campaign_id=spec.campaign_id,
            sku_id=cart.sku_id,
            quantity=cart.quantity,
        )
        code = await _cart_call(client.stub().AddItem, request, client.metadata)
        outcomes[f"add_item:{code}"] += 1
        repairs = 0
        while code != "ok" and repairs < FILL_REPAIRS_MAX:
            repairs += 1
            fix = cart_pb2.UpdateQuantityRequest(
                buyer_id=cart.buyer_id,
                campaign_id=spec.campaign_id,
                sku_id=cart.sku_id,
                quantity=cart.quantity,
            )
            code = await _cart_call(client.stub().UpdateQuantity, fix, client.metadata)
            outcomes[f"update_quantity:{code}"] += 1
        if code != "ok":
            unfilled.append(cart.buyer_id)
        done += 1
        progress[spec.worker_index] = done

    started = time.time()
    await _in_flight(spec.concurrency, carts, add)
    return {
        "started": started,
        "ended": time.time(),
        "calls": dict(outcomes),
        "carts": len(carts),
        "unfilled": unfilled,
    }


async def _cart_call(method: Any, request: Any, metadata: Any) -> str:
    try:
        await method(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error_code(error)
    return "ok"


async def _storm(
    client: _Carts, spec: CartWorkerSpec, carts: list[CartSpec], storm_at: float, progress: Any
) -> dict[str, Any]:
    latency = new_histogram()  # send to answer
    since_start = new_histogram()  # storm start to answer
    outcomes: Counter[str] = Counter()
    timeline: Counter[int] = Counter()
    acked: list[tuple[str, str, str, tuple[tuple[str, int], ...]]] = []
    ambiguous: list[str] = []
    answered = 0
    last_answer = storm_at
    # Wall clock of the start on this process's monotonic clock.
    start_s = time.perf_counter() - (time.time() - storm_at)

    async def checkout(cart: CartSpec) -> None:
        nonlocal answered, last_answer
        request = cart_pb2.CheckoutRequest(
            buyer_id=cart.buyer_id,
            campaign_id=spec.campaign_id,
            idempotency_key=idempotency_key(spec.run_id, cart.buyer_id),
        )
        sent_s = time.perf_counter()
        try:
            response = await client.stub().Checkout(
                request, metadata=client.metadata, timeout=CALL_TIMEOUT_S
            )
            code = "replayed" if response.replayed else "ok"
        except grpc.aio.AioRpcError as error:
            code, response = error_code(error), None
        done_s = time.perf_counter()
        latency.record_value(max(1, int((done_s - sent_s) * 1e6)))
        since_start.record_value(max(1, int((done_s - start_s) * 1e6)))
        timeline[int(done_s - start_s)] += 1
        outcomes[code] += 1
        answered += 1
        last_answer = max(last_answer, storm_at + (done_s - start_s))
        progress[spec.worker_index] = answered
        if response is not None:
            lines = tuple(sorted((line.sku_id, line.quantity) for line in response.order.lines))
            acked.append((response.order.order_id, request.idempotency_key, cart.buyer_id, lines))
        elif code in AMBIGUOUS:
            ambiguous.append(cart.buyer_id)

    await _in_flight(spec.concurrency, carts, checkout)
    return {
        "attempted": len(carts),
        "answered": answered,
        "last_answer": last_answer,
        "histogram": encode_histogram(latency),
        "since_start": encode_histogram(since_start),
        "outcomes": dict(outcomes),
        "timeline": dict(timeline),
        "acked": acked,
        "ambiguous": ambiguous,
    }


# --- the parent -----------------------------------------------------------------------------


def run(
    args: argparse.Namespace,
    params: ScenarioParams,
    run_id: str,
    concurrency: int,
    console: Console,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Runs the scenario against the engine: (merged storm results in run_target's shape,
    verification, the scenario's own figures for the JSON document)."""
    from flashtx.bench import targets_setup

    carts = params.carts()
    skus = params.skus()
    buckets = max(1, params.buckets)
    allowance_s = fill_allowance_s(len(carts), args.fill_allowance)
    with targets_setup.engine(args, console) as (address, operator_key, dsn, _):
        info = asyncio.run(engine_setup.prepare(address, operator_key, run_id, skus))
        campaign_id = engine_setup.campaign_id_for(run_id)
        context = multiprocessing.get_context("spawn")
        progress = context.Array("q", [-1] * args.processes, lock=False)
        go = context.Array("d", [0.0, 0.0], lock=False)
        results = context.Queue()
        workers = [
            context.Process(
                target=worker_main,
                args=(
                    CartWorkerSpec(
                        index,
                        args.processes,
                        info,
                        params,
                        run_id,
                        campaign_id,
                        concurrency,
                        args.channels,
                    ),
                    progress,
                    go,
                    results,
                ),
                daemon=True,
            )
            for index in range(args.processes)
        ]
        for process in workers:
            process.start()
        try:
            _wait_ready(progress, workers)
            campaign = asyncio.run(
                engine_setup.create_campaign(info, campaign_id, skus, buckets, allowance_s)
            )
            console.print(
                f"campaign {campaign_id}: {buckets} bucket(s) per SKU, starts in "
                f"{allowance_s:.1f} s; filling {len(carts):,} carts …"
            )
            go[0] = time.time()
            fills = _phase("fill", results, progress, len(carts), console)
            starts_at = campaign["starts_at_ms"] / 1000
            fill_ended = max(fill["ended"] for fill in fills)
            storm_at = max(starts_at + START_MARGIN_S, time.time() + 0.2)
            for index in range(len(progress)):
                progress[index] = 0
            go[1] = storm_at
            console.print(
                f"checkout storm at the campaign's start (in {storm_at - time.time():.1f} s) …"
            )
            storms = _phase("checkout", results, progress, len(carts), console)
        finally:
            for process in workers:
                process.join(timeout=5)
                if process.is_alive():
                    process.terminate()
        merged = _merge(fills, storms, storm_at)
        console.print("verifying the engine's invariants …")
        verification = asyncio.run(
            verify_checkout(info, params, campaign, merged, run_id, args.seed, dsn)
        )
    figures = {
        "buyers": len(carts),
        "units_demanded": sum(cart.quantity for cart in carts),
        "units_on_sale": sum(sku.on_hand for sku in skus),
        "campaign_buckets": buckets,
        "fill_allowance_s": round(allowance_s, 2),
        "fill": merged["fill"],
        "fill_overran_start": fill_ended > starts_at,
        "storm_s": round(merged["storm_s"], 3),
        "answered_since_start_ms": report.latency_ms(merged["since_start"]),
        "ambiguous": len(merged["ambiguous"]),
    }
    return merged, verification, figures


def _wait_ready(progress: Any, workers: list[Any]) -> None:
    deadline_s = time.monotonic() + READY_TIMEOUT_S
    while any(value < 0 for value in progress):
        if time.monotonic() > deadline_s or not all(p.is_alive() for p in workers):
            raise RuntimeError("cart workers did not connect (see their error above)")
        time.sleep(0.02)


def _phase(
    name: str, results: Any, progress: Any, total: int, console: Console
) -> list[dict[str, Any]]:
    """Shows the phase's progress until every worker put its result; answers them."""
    collected: list[dict[str, Any]] = []
    columns = (
        TextColumn(f"[bold]{name:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    deadline_s = time.monotonic() + PHASE_TIMEOUT_S
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(name, total=total)
        while len(collected) < len(progress):
            try:
                kind, _, result = results.get(timeout=PROGRESS_REFRESH_S)
            except queue.Empty:
                if time.monotonic() > deadline_s:
                    raise RuntimeError(f"cart workers did not finish the {name} in time") from None
            else:
                if kind == "error":
                    raise RuntimeError(f"cart worker failed: {result['error']}")
                collected.append(result)
            bar.update(task, completed=sum(max(0, value) for value in progress))
        bar.update(task, completed=total)
    return collected


def _merge(
    fills: list[dict[str, Any]], storms: list[dict[str, Any]], storm_at: float
) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    for fill in fills:
        calls.update(fill["calls"])
    fill_s = max(f["ended"] for f in fills) - min(f["started"] for f in fills)
    carts = sum(f["carts"] for f in fills)
    histogram, since_start = new_histogram(), new_histogram()
    outcomes: Counter[str] = Counter()
    timeline: Counter[int] = Counter()
    for storm in storms:
        histogram.add(decode_histogram(storm["histogram"]))
        since_start.add(decode_histogram(storm["since_start"]))
        outcomes.update(storm["outcomes"])
        timeline.update(storm["timeline"])
    storm_s = max(1e-6, max(s["last_answer"] for s in storms) - storm_at)
    answered = sum(s["answered"] for s in storms)
    return {
        "histogram": histogram,
        "since_start": since_start,
        "timeline": [timeline.get(second, 0) for second in range(int(storm_s) + 1)],
        "outcomes": outcomes,
        "other_operations": calls,
        "attempted": sum(s["attempted"] for s in storms),
        "completed": answered,
        "throughput_per_s": answered / storm_s,
        "storm_s": storm_s,
        "acked": [order for s in storms for order in s["acked"]],
        "ambiguous": [buyer for s in storms for buyer in s["ambiguous"]],
        "fill": {
            "carts": carts,
            "unfilled": sum(len(f["unfilled"]) for f in fills),
            "fill_s": round(fill_s, 3),
            "add_items_per_s": round(carts / max(1e-6, fill_s), 1),
        },
    }


async def verify_checkout(
    info: dict[str, Any],
    params: ScenarioParams,
    campaign: dict[str, Any],
    merged: dict[str, Any],
    run_id: str,
    seed: int,
    dsn: str | None,
) -> dict[str, Any]:
    """The checks of step 5 in the module's docstring; every count must be 0."""
    rng = random.Random(seed)
    metadata = bearer(info["api_key"])
    planned = {cart.buyer_id: cart for cart in params.carts()}
    limit = params.per_buyer_limit
    campaign_id = campaign["campaign_id"]
    acked = list(merged["acked"])
    async with grpc.aio.insecure_channel(info["address"]) as channel:
        carts = cart_pb2_grpc.CartServiceStub(channel)
        # Unknown outcomes first: a retry with the key answers the order if there is one.
        resolved = await _bounded(
            [
                _checkout(carts, metadata, buyer, campaign_id, run_id)
                for buyer in merged["ambiguous"]
            ]
        )
        acked.extend(order for _, order in resolved if order is not None)
        units: Counter[str] = Counter()
        for _, _, _, lines in acked:
            for sku_id, quantity in lines:
                units[sku_id] += quantity
        states = await verify.campaign_states(channel, metadata, campaign_id)
        oversold, unaccounted, extra = verify.campaign_counts(
            states, campaign["units_by_sku"], units
        )
        stock = stock_pb2_grpc.StockServiceStub(channel)
        own_oversold, _ = await verify._check_stock(stock, metadata, {}, params.hot_sku_ids())
        orders = order_pb2_grpc.OrderServiceStub(channel)
        sample = rng.sample(acked, min(len(acked), verify.ORDERS_CHECKED_MAX))
        lost = await verify._check_orders(orders, metadata, sample)
        replays = rng.sample(acked, min(len(acked), REPLAYS_CHECKED_MAX))
        replayed = await _bounded(
            [_checkout(carts, metadata, buyer, campaign_id, run_id) for _, _, buyer, _ in replays]
        )
        replay_duplicates = sum(
            1
            for (order_id, _, _, _), (code, order) in zip(replays, replayed, strict=True)
            if code != "replayed" or order is None or order[0] != order_id
        )
        ordered_buyers = sorted({buyer for _, _, buyer, _ in acked})
        buyers = rng.sample(ordered_buyers, min(len(ordered_buyers), verify.BUYERS_CHECKED_MAX))
        limits = {sku_id: limit for sku_id in params.hot_sku_ids()} if limit else {}
        listed_duplicates, listed_violations = await verify._check_buyers(
            orders, metadata, buyers, limits
        )
        checked_carts = rng.sample(acked, min(len(acked), CARTS_CHECKED_MAX))
        not_empty = await _carts_not_empty(carts, metadata, checked_carts, campaign_id)
    mismatched = sum(
        1
        for _, _, buyer, lines in acked
        if lines != ((planned[buyer].sku_id, planned[buyer].quantity),)
    )
    over_limit = sum(1 for _, _, _, lines in acked for _, q in lines if limit and q > limit)
    found = None
    if dsn:
        found = await verify_postgres.missing_acked_orders(dsn, info["merchant_id"], acked)
    postgres_missing, postgres_checked = found if found is not None else (0, 0)
    return {
        "invariants": {
            "oversold": oversold + own_oversold,
            "lost_acked": lost + postgres_missing,
            "duplicates": replay_duplicates + listed_duplicates,
            "limit_violations": over_limit + listed_violations,
            "unaccounted_units": unaccounted,
            "extra_units": extra,
            "cart_mismatch": mismatched,
            "carts_not_empty": not_empty,
            "attempted_mismatch": merged["attempted"] - merged["completed"],
        },
        "checked": {
            "orders_looked_up": len(sample),
            "buyers_listed": len(buyers),
            "replay_checks": len(replays),
            "carts_checked": len(checked_carts),
            "acked_orders": len(acked),
            "acked_units": sum(units.values()),
            "ambiguous_retried": len(resolved),
            "ambiguous_ordered": sum(1 for _, order in resolved if order is not None),
            "postgres_orders_checked": postgres_checked,
            "campaign": {"id": campaign_id, "skus": states},
        },
    }


async def _checkout(
    carts: Any, metadata: Any, buyer_id: str, campaign_id: str, run_id: str
) -> tuple[str, tuple[str, str, str, tuple[tuple[str, int], ...]] | None]:
    """A buyer's checkout sent (again) with its key: (code, acked order or None)."""
    key = idempotency_key(run_id, buyer_id)
    request = cart_pb2.CheckoutRequest(
        buyer_id=buyer_id, campaign_id=campaign_id, idempotency_key=key
    )
    try:
        response = await carts.Checkout(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error_code(error), None
    lines = tuple(sorted((line.sku_id, line.quantity) for line in response.order.lines))
    code = "replayed" if response.replayed else "ok"
    return code, (response.order.order_id, key, buyer_id, lines)


async def _carts_not_empty(carts: Any, metadata: Any, acked: list[Any], campaign_id: str) -> int:
    async def has_lines(buyer_id: str) -> bool:
        response = await carts.GetCart(
            cart_pb2.GetCartRequest(buyer_id=buyer_id, campaign_id=campaign_id),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        return bool(response.cart.lines)

    return sum(await _bounded([has_lines(buyer) for _, _, buyer, _ in acked]))


async def _bounded(calls: list[Any]) -> list[Any]:
    """Awaits the calls with at most CONCURRENT_CALLS_MAX in flight (a grpc.aio server
    resets streams beyond about a thousand)."""
    slots = asyncio.Semaphore(verify.CONCURRENT_CALLS_MAX)

    async def one(call: Any) -> Any:
        async with slots:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))
