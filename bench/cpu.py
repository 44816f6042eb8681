"""``flashtx bench --profile``: CPU time per order, by stage, over the measured window.

Each stage of the order path runs in its own processes (Ray gives every actor one), so the
CPU each process spent between the start and the end of the measured window, divided by
the orders answered in it, is that stage's CPU cost per order, with no profiler attached:

    load generator   the bench's client processes (build, send, read answers)
    gateway          gRPC decode, validation, batching, the answer's protobuf (ray::Gateway)
    order shards     idempotency, placing, journal rows (ray::OrderShard)
    stock shards     reserve, commit, release (ray::StockShard)
    merchant shards  merchants, keys, campaigns (ray::MerchantShard)
    postgres         the group commits, the relay's reads, everything else of the database
    materializer pg  the database's work for the batch journal's materializer (its
                     sessions' application_name, MATERIALIZER_APPLICATION), off the ack path
    relay            outbox to Redis Streams (ray::Relay)
    echo server      the echo baseline's gRPC server (bench.echo_server)
    redis            the streams (redis-server)
    ray              raylet, GCS, dashboard and other Ray processes

Every process on the machine counts (the database and Redis included), so on a shared
machine other users' work shows as "other" and the figures of the database and Redis
include any other clients they had in the window.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil

_ROLES = (
    ("flashtx.bench.echo_server", "echo server"),
    ("ray::Gateway", "gateway"),
    ("ray::OrderShard", "order shards"),
    ("ray::StockShard", "stock shards"),
    ("ray::MerchantShard", "merchant shards"),
    ("ray::Relay", "relay"),
    ("ray::", "ray"),
    ("postgres", "postgres"),
    ("redis-server", "redis"),
    ("raylet", "ray"),
    ("gcs_server", "ray"),
    ("dashboard", "ray"),
    ("ray/", "ray"),
)
STAGES = ("load generator", "echo server", "gateway", "order shards", "stock shards",
          "merchant shards", "postgres", "materializer pg", "relay", "redis", "ray", "other")
# Off the ack path: reported apart, and in the total beside it.
BEHIND = ("materializer pg",)


def role_of(process: psutil.Process, load_pids: set[int],
            materializer_pids: frozenset[int] = frozenset()) -> str:
    if process.pid in load_pids:
        return "load generator"
    if process.pid in materializer_pids:
        return "materializer pg"
    try:
        name = " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "other"
    for marker, role in _ROLES:
        if marker in name:
            return role
    return "other"


def cpu_by_pid() -> dict[int, tuple[float, psutil.Process]]:
    """CPU seconds (user + system) of every process now."""
    seen: dict[int, tuple[float, psutil.Process]] = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        seen[process.pid] = (times.user + times.system, process)
    return seen


@dataclass
class WindowCpu:
    """Samples every process's CPU time at two moments (a thread waits for them)."""

    start_at_s: float  # wall clock (time.time())
    end_at_s: float
    load_pids: set[int]
    dsn: str | None = None  # the engine's database: its materializer's sessions found
    seconds: Counter[str] = field(default_factory=Counter)
    _thread: threading.Thread | None = None

    def start(self) -> WindowCpu:
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        time.sleep(max(0.0, self.start_at_s - time.time()))
        before = cpu_by_pid()
        time.sleep(max(0.0, self.end_at_s - time.time()))
        after = cpu_by_pid()
        materializer = materializer_pids(self.dsn) if self.dsn else frozenset()
        for pid, (seconds, process) in after.items():
            spent = seconds - before[pid][0] if pid in before else seconds
            # A process born in the window counts whole (its CPU before the window is 0).
            self.seconds[role_of(process, self.load_pids, materializer)] += max(0.0, spent)

    def result(self, orders: int, window_s: float) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join(timeout=window_s + 30)
        per_order = {stage: round(self.seconds.get(stage, 0.0) / max(1, orders) * 1e6, 1)
                     for stage in STAGES}
        total = sum(per_order.values()) - per_order["other"]
        return {"orders": orders, "window_s": window_s,
                "cpu_s": {stage: round(self.seconds.get(stage, 0.0), 3) for stage in STAGES},
                "us_per_order": per_order,
                "us_per_order_ack_path": round(total - sum(per_order[s] for s in BEHIND), 1),
                "us_per_order_total": round(total, 1)}


def materializer_pids(dsn: str) -> frozenset[int]:
    """The database backends of the engine's materializers (pg_stat_activity)."""
    import asyncio

    import asyncpg

    from flashtx.adapters.postgres import MATERIALIZER_APPLICATION

    async def fetch() -> frozenset[int]:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                MATERIALIZER_APPLICATION)
        finally:
            await connection.close()
        return frozenset(row[0] for row in rows)

    try:
        return asyncio.run(fetch())
    except Exception:  # noqa: BLE001 - the profile goes on, the work counted as postgres
        return frozenset()
