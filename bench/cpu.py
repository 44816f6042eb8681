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
          "merchant shards", "postgres", "relay", "redis", "ray", "other")


def role_of(process: psutil.Process, load_pids: set[int]) -> str:
    if process.pid in load_pids:
        return "load generator"
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
        for pid, (seconds, process) in after.items():
            spent = seconds - before[pid][0] if pid in before else seconds
            # A process born in the window counts whole (its CPU before the window is 0).
            self.seconds[role_of(process, self.load_pids)] += max(0.0, spent)

    def result(self, orders: int, window_s: float) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join(timeout=window_s + 30)
        per_order = {stage: round(self.seconds.get(stage, 0.0) / max(1, orders) * 1e6, 1)
                     for stage in STAGES}
        return {"orders": orders, "window_s": window_s,
                "cpu_s": {stage: round(self.seconds.get(stage, 0.0), 3) for stage in STAGES},
                "us_per_order": per_order,
                "us_per_order_total": round(sum(per_order.values()) - per_order["other"], 1)}
