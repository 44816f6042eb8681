"""Runs one target under load: worker processes, a live progress bar, merged results."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flashtx.bench.cpu import WindowCpu
from flashtx.bench.loadgen import DRAIN_TIMEOUT_S, WorkerSpec, worker_main
from flashtx.bench.recorder import decode_histogram, new_histogram

READY_TIMEOUT_S = 60.0
RESULT_GRACE_S = 60.0
PROGRESS_REFRESH_S = 0.25


@dataclass(frozen=True)
class LoadShape:
    """What every target gets, identically: the same processes, loop, rate and windows."""

    processes: int
    concurrency: int
    channels: int
    batch: bool
    batch_size: int
    rate_per_s: float  # 0: closed loop
    inflight_max: int
    warmup_s: float
    duration_s: float
    pool_size: int
    saas_clients: int
    columns: bool = False  # gRPC targets send PlaceOrderColumns instead of PlaceOrders


def run_target(
    kind: str, info: dict[str, Any], shape: LoadShape, base: WorkerSpec, console: Console,
    profile: bool = False, dsn: str | None = None,
) -> dict[str, Any]:
    """Runs the load against one prepared target and answers its merged result (with
    `profile`, also the CPU time per order of each stage: bench.cpu)."""
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", [-1] * shape.processes, lock=False)
    start_at = context.Value("d", 0.0, lock=False)
    results = context.Queue()
    info = {**info, "channels": shape.channels, "pool_size": shape.pool_size}
    workers = [
        context.Process(
            target=worker_main,
            args=(_worker_spec(base, kind, info, shape, index), progress, start_at, results),
            daemon=True,
        )
        for index in range(shape.processes)
    ]
    for process in workers:
        process.start()
    try:
        _wait_ready(progress, workers)
        start_at.value = time.time() + 0.2
        window = None
        if profile:
            measure_at = start_at.value + shape.warmup_s
            window = WindowCpu(measure_at, measure_at + shape.duration_s,
                               {p.pid for p in workers if p.pid is not None}, dsn).start()
        _show_progress(kind, shape, progress, start_at.value, console)
        collected = _collect(results, shape)
    finally:
        for process in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    merged = merge(collected, shape)
    if window is not None:
        merged["cpu"] = window.result(merged["completed"], shape.duration_s)
    return merged


def _worker_spec(
    base: WorkerSpec, kind: str, info: dict[str, Any], shape: LoadShape, index: int
) -> WorkerSpec:
    return replace(
        base,
        worker_index=index,
        target_kind=kind,
        target_info={**info, "columns": shape.columns} if kind in ("engine", "echo") else info,
        batch=shape.batch,
        batch_size=shape.batch_size,
        concurrency=shape.concurrency,
        rate_per_s=shape.rate_per_s / shape.processes,
        inflight_max=shape.inflight_max,
        warmup_s=shape.warmup_s,
        duration_s=shape.duration_s,
        saas_clients=shape.saas_clients,
        replay_share=base.replay_share if kind == "engine" else 0.0,
    )


def _wait_ready(progress: Any, workers: list[Any]) -> None:
    deadline_s = time.monotonic() + READY_TIMEOUT_S
    while any(value < 0 for value in progress):
        if time.monotonic() > deadline_s or not all(p.is_alive() for p in workers):
            raise RuntimeError("load workers did not connect (see their error above)")
        time.sleep(0.02)


def _show_progress(
    kind: str, shape: LoadShape, progress: Any, start_at_epoch_s: float, console: Console
) -> None:
    total_s = shape.warmup_s + shape.duration_s
    columns = (
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[phase]:<8} {task.fields[rate]:>10} orders/s"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(kind, total=total_s, phase="warm-up", rate="-")
        last_count, last_s = 0, time.time()
        while (now_s := time.time()) < start_at_epoch_s + total_s:
            time.sleep(PROGRESS_REFRESH_S)
            count = sum(progress)
            rate = (count - last_count) / max(1e-6, now_s - last_s)
            last_count, last_s = count, now_s
            elapsed_s = now_s - start_at_epoch_s
            phase = "warm-up" if elapsed_s < shape.warmup_s else "measure"
            bar.update(task, completed=min(total_s, elapsed_s), phase=phase, rate=f"{rate:,.0f}")
        bar.update(task, completed=total_s, phase="drain")


def _collect(results: Any, shape: LoadShape) -> list[dict[str, Any]]:
    collected: list[dict[str, Any]] = []
    deadline_s = time.monotonic() + DRAIN_TIMEOUT_S + RESULT_GRACE_S
    while len(collected) < shape.processes:
        try:
            _, result = results.get(timeout=max(0.1, deadline_s - time.monotonic()))
        except queue.Empty as error:
            raise RuntimeError("load workers did not report in time") from error
        if "error" in result:
            raise RuntimeError(f"load worker failed: {result['error']}")
        collected.append(result)
    return collected


def merge(collected: list[dict[str, Any]], shape: LoadShape) -> dict[str, Any]:
    """Sums the workers' results into one: histogram, timeline, outcomes and ledger."""
    histogram = new_histogram()
    timeline: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()
    others: Counter[str] = Counter()
    units: Counter[str] = Counter()
    buyer_units: Counter[tuple[str, str]] = Counter()
    acked_kept: list[Any] = []
    for result in collected:
        histogram.add(decode_histogram(result["histogram"]))
        timeline.update(result["timeline"])
        outcomes.update(result["outcomes"])
        others.update(result["other_operations"])
        units.update(result["units_by_sku"])
        buyer_units.update(result["buyer_units"])
        acked_kept.extend(result["acked_kept"])
    completed = sum(outcomes.values())
    return {
        "histogram": histogram,
        "timeline": [timeline.get(second, 0) for second in range(int(shape.duration_s) + 1)],
        "outcomes": outcomes,
        "other_operations": others,
        "attempted": sum(r["attempted"] for r in collected),
        "completed": completed,
        "throughput_per_s": completed / shape.duration_s,
        "ledger": {
            "units_by_sku": units,
            "buyer_units": buyer_units,
            "acked_kept": acked_kept,
            "acked_total": sum(r["acked_total"] for r in collected),
            "replay_checks": sum(r["replay_checks"] for r in collected),
            "duplicates": sum(r["duplicates"] for r in collected),
        },
    }
