"""What one worker process observes, in a form that merges across processes.

Two views of the same operations:

- the *measured* view counts only operations whose intended send time falls inside the
  measurement window (after warm-up): attempted, outcomes, latency, a per-second timeline;
- the *ledger* view keeps every acknowledged order of the whole run (warm-up included),
  because the engine's state after the run reflects all of them: units per SKU, units per
  buyer and SKU for limited SKUs, and a bounded list of orders to look up afterwards.
"""

from __future__ import annotations

import base64
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from flashtx.bench.scenarios import OrderSpec

LATENCY_US_MIN = 1
LATENCY_US_MAX = 120_000_000
LATENCY_SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    return base64.b64encode(histogram.encode()).decode() if histogram.total_count else ""


def decode_histogram(encoded: str) -> HdrHistogram:
    histogram = new_histogram()
    if encoded:
        histogram.add(HdrHistogram.decode(base64.b64decode(encoded)))
    return histogram


@dataclass
class Recorder:
    window_start_s: float
    window_end_s: float
    limited_skus: frozenset[str]
    acked_kept_max: int = 20_000
    live_orders_max: int = 10_000
    histogram: HdrHistogram = field(default_factory=new_histogram)
    timeline: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    other_operations: Counter[str] = field(default_factory=Counter)
    attempted: int = 0
    completed_total: int = 0
    acked_total: int = 0
    acked_kept: list[tuple[str, str, str, tuple[tuple[str, int], ...]]] = field(
        default_factory=list
    )
    units_by_sku: Counter[str] = field(default_factory=Counter)
    buyer_units: Counter[tuple[str, str]] = field(default_factory=Counter)
    replay_checks: int = 0
    duplicates: int = 0
    live_orders: deque[tuple[str, OrderSpec]] = field(default_factory=deque)

    def in_window(self, intended_s: float) -> bool:
        return self.window_start_s <= intended_s < self.window_end_s

    def start_orders(self, intended_s: float, count: int) -> None:
        if self.in_window(intended_s):
            self.attempted += count

    def finish_orders(
        self,
        orders: list[OrderSpec],
        outcomes: list[tuple[str, str]],
        intended_s: float,
        done_s: float,
    ) -> None:
        self.completed_total += len(orders)
        for order, (code, reference) in zip(orders, outcomes, strict=True):
            if code == "ok":
                self._ledger_add(order, reference)
        if not self.in_window(intended_s):
            return
        latency_us = max(LATENCY_US_MIN, min(LATENCY_US_MAX, int((done_s - intended_s) * 1e6)))
        self.histogram.record_value(latency_us, len(orders))
        self.timeline[int(done_s - self.window_start_s)] += len(orders)
        self.outcomes.update(code for code, _ in outcomes)

    def _ledger_add(self, order: OrderSpec, reference: str) -> None:
        self.acked_total += 1
        if len(self.acked_kept) < self.acked_kept_max:
            self.acked_kept.append((reference, order.idempotency_key, order.buyer_id, order.lines))
        for sku_id, quantity in order.lines:
            self.units_by_sku[sku_id] += quantity
            if sku_id in self.limited_skus:
                self.buyer_units[(order.buyer_id, sku_id)] += quantity
        self.live_orders.append((reference, order))
        if len(self.live_orders) > self.live_orders_max:
            self.live_orders.popleft()

    def cancelled(self, order: OrderSpec) -> None:
        for sku_id, quantity in order.lines:
            self.units_by_sku[sku_id] -= quantity
            if sku_id in self.limited_skus:
                self.buyer_units[(order.buyer_id, sku_id)] -= quantity

    def other(self, kind: str, code: str, intended_s: float) -> None:
        if self.in_window(intended_s):
            self.other_operations[f"{kind}:{code}"] += 1

    def result(self) -> dict[str, Any]:
        """A picklable summary for the parent process."""
        return {
            "histogram": encode_histogram(self.histogram),
            "timeline": dict(self.timeline),
            "outcomes": dict(self.outcomes),
            "other_operations": dict(self.other_operations),
            "attempted": self.attempted,
            "acked_total": self.acked_total,
            "acked_kept": self.acked_kept,
            "units_by_sku": dict(self.units_by_sku),
            "buyer_units": dict(self.buyer_units),
            "replay_checks": self.replay_checks,
            "duplicates": self.duplicates,
        }
