"""Every Prometheus metric flashtx exports, defined once. Ray's metrics agent serves them
on each node (``ray.init(_metrics_export_port=...)`` / ``ray start --metrics-export-port``)
and the Ray dashboard's metrics view shows them. Recorded per batch, not per order."""

from __future__ import annotations

import asyncio
import time
from functools import cache
from typing import Any

from ray.util import metrics

START_REPORT_INTERVAL_S = 10.0
_LATENCY_S = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
_SIZES: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 8190]


@cache
def orders() -> metrics.Counter:
    return metrics.Counter("flashtx_orders", "Orders placed, by outcome (result code).",
                           tag_keys=("outcome",))


@cache
def rpc_latency() -> metrics.Histogram:
    return metrics.Histogram("flashtx_rpc_latency_seconds", "gRPC latency by method and code.",
                             boundaries=_LATENCY_S, tag_keys=("method", "code"))


@cache
def batch_items() -> metrics.Histogram:
    return metrics.Histogram("flashtx_batch_items", "Items per call, by hop.",
                             boundaries=_SIZES, tag_keys=("hop",))


@cache
def rejections() -> metrics.Counter:
    return metrics.Counter("flashtx_rejections", "Requests refused, by reason.",
                           tag_keys=("reason",))


@cache
def depth() -> metrics.Gauge:
    return metrics.Gauge("flashtx_queue_depth", "Items waiting, by queue and actor.",
                         tag_keys=("queue", "actor"))


@cache
def commit_seconds() -> metrics.Histogram:
    return metrics.Histogram("flashtx_commit_seconds", "Duration of one group commit.",
                             boundaries=_LATENCY_S, tag_keys=("actor",))


@cache
def outbox_pruned() -> metrics.Counter:
    return metrics.Counter("flashtx_outbox_pruned", "Outbox rows deleted once relayed and past"
                           " the retention.")


@cache
def lag_seconds() -> metrics.Gauge:
    return metrics.Gauge("flashtx_lag_seconds", "Age of the oldest item not yet moved on.",
                         tag_keys=("what",))


@cache
def actors() -> metrics.Gauge:
    return metrics.Gauge("flashtx_actors", "Actors of the deployment, by kind.",
                         tag_keys=("kind",))


@cache
def units_moved() -> metrics.Counter:
    return metrics.Counter("flashtx_units_moved", "Stock units moved between counters, by why"
                           " (campaign: into its buckets; rebalance: bucket to bucket;"
                           " settle: back to the SKU after the campaign).",
                           tag_keys=("why",))


@cache
def carts() -> metrics.Gauge:
    return metrics.Gauge("flashtx_carts", "Carts held, by order shard.", tag_keys=("actor",))


@cache
def connector_events() -> metrics.Counter:
    return metrics.Counter("flashtx_connector_events", "Events a connector handled, by"
                           " connector and outcome (delivered, dead_lettered, gap: events"
                           " trimmed before it read them, one per gap).",
                           tag_keys=("connector", "outcome"))


@cache
def dead_letters() -> metrics.Gauge:
    return metrics.Gauge("flashtx_dead_letters", "Events in a connector's dead-letter stream"
                         " (replay them with `flashtx replay-dead-letters`).",
                         tag_keys=("connector",))


@cache
def started_at() -> metrics.Gauge:
    return metrics.Gauge("flashtx_actor_start_time_seconds", "When each engine actor's"
                         " process started (Unix time): a recent one among old ones is a"
                         " restart.", tag_keys=("kind", "actor"))


_reporting: set[asyncio.Task[None]] = set()


def record_start(kind: str) -> None:
    """Called in each engine actor's process as it starts (a restart calls it again).
    The value is set again every few seconds for the process's life: a gauge set once, as
    the process starts, can be lost before Ray's metrics agent takes it."""
    try:
        import ray

        actor = ray.get_runtime_context().get_actor_name() or kind
    except Exception:  # noqa: BLE001 - outside Ray: no name
        actor = kind
    started = time.time()
    record(started_at(), started, kind=kind, actor=actor)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a synchronous actor: set once
        return

    async def again() -> None:
        while True:
            await asyncio.sleep(START_REPORT_INTERVAL_S)
            record(started_at(), started, kind=kind, actor=actor)

    task = loop.create_task(again())
    _reporting.add(task)
    task.add_done_callback(_reporting.discard)


def record(metric: Any, value: float, **tags: str) -> None:
    """Records, never raising: metrics must not break the order path."""
    try:
        if isinstance(metric, metrics.Counter):
            metric.inc(value, tags=tags)
        elif isinstance(metric, metrics.Histogram):
            metric.observe(value, tags=tags)
        else:
            metric.set(value, tags=tags)
    except Exception:  # noqa: BLE001 - best effort by design
        pass
