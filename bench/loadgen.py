"""One load-generating worker process: uvloop, its own channels or pools, its own seed.

Closed loop: ``concurrency`` tasks, each sends, waits for the answer, sends again.
Open loop: sends are scheduled at a fixed rate whatever the answers do, and latency is
measured from each send's *intended* time, so that a stalled server shows up as queueing
delay instead of being hidden by a client that politely waits (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import uvloop

from flashtx.bench.recorder import Recorder
from flashtx.bench.scenarios import CANCEL, PAY, READ, OperationSource, ScenarioParams
from flashtx.bench.targets import TargetClient, connect

PROGRESS_INTERVAL_S = 0.25
DRAIN_TIMEOUT_S = 15.0
SAAS_PAUSE_S = 0.1
SAAS_READS_PER_VISIT = 20
PAID_KEPT_MAX = 10_000


@dataclass(frozen=True)
class WorkerSpec:
    worker_index: int
    target_kind: str
    target_info: dict[str, Any]
    params: ScenarioParams
    run_id: str
    batch: bool
    batch_size: int
    # Closed loop when rate_per_s is 0.
    concurrency: int
    rate_per_s: float
    inflight_max: int
    warmup_s: float
    duration_s: float
    replay_share: float = 0.01
    saas_clients: int = 0


def worker_main(spec: WorkerSpec, progress: Any, start_at: Any, results: Any) -> None:
    """Process entry point: run the load and put the recorder's result on the queue.

    The worker connects, marks its progress slot 0 (ready), then waits for the parent to
    set ``start_at`` (epoch seconds), so that every worker starts on the same clock.
    """
    try:
        result = uvloop.run(_run(spec, progress, start_at))
    except Exception as error:  # reported to the parent, which fails the run loudly
        result = {"error": f"{type(error).__name__}: {error}"}
    results.put((spec.worker_index, result))


class _Worker:
    def __init__(
        self,
        spec: WorkerSpec,
        client: TargetClient,
        progress: Any,
        start_at_epoch_s: float,
    ):
        self.spec = spec
        self.client = client
        self.progress = progress
        self.source = OperationSource(spec.params, spec.worker_index, spec.run_id)
        # Local monotonic clock aligned on the shared wall-clock start.
        self.start_s = time.perf_counter() + (start_at_epoch_s - time.time())
        self.end_s = self.start_s + spec.warmup_s + spec.duration_s
        limited = frozenset(s.sku_id for s in spec.params.skus() if s.per_buyer_limit)
        self.recorder = Recorder(self.start_s + spec.warmup_s, self.end_s, limited)
        self.batch_size = spec.batch_size if spec.batch else 1
        self.paid_orders: deque[tuple[str, Any]] = deque(maxlen=PAID_KEPT_MAX)

    async def issue(self, intended_s: float) -> None:
        kind = self.source.next_kind()
        if kind == READ:
            code = await self.client.read(self.source.next_read_sku())
            self.recorder.other(READ, code, intended_s)
        elif kind in (PAY, CANCEL) and self.recorder.live_orders:
            await self._change_order(kind, intended_s)
        else:
            await self._place(intended_s)

    async def _place(self, intended_s: float) -> None:
        orders = [self.source.next_order() for _ in range(self.batch_size)]
        self.recorder.start_orders(intended_s, len(orders))
        try:
            outcomes = await self.client.place(orders, self.spec.batch)
        except asyncio.CancelledError:
            outcomes = [("timeout", "")] * len(orders)
            self.recorder.finish_orders(orders, outcomes, intended_s, time.perf_counter())
            raise
        self.recorder.finish_orders(orders, outcomes, intended_s, time.perf_counter())
        if self.client.checks_replay and self.source.next_uniform() < self.spec.replay_share:
            await self._check_replay(orders, outcomes)

    async def _check_replay(self, orders: list[Any], outcomes: list[tuple[str, str]]) -> None:
        """Re-sends one acknowledged order with its key: it must come back as the same order."""
        for order, (code, reference) in zip(orders, outcomes, strict=True):
            if code != "ok":
                continue
            ((retry_code, retry_reference),) = await self.client.place([order], False)
            if retry_code in ("ok", "replayed"):
                self.recorder.replay_checks += 1
                if retry_code == "ok" or retry_reference != reference:
                    self.recorder.duplicates += 1
            return

    async def _change_order(self, kind: str, intended_s: float) -> None:
        """Pays a reserved order, or cancels a reserved or (refund) a paid one."""
        from_paid = kind == CANCEL and self.paid_orders and self.source.next_uniform() < 0.5
        reference, order = (self.paid_orders if from_paid else self.recorder.live_orders).popleft()
        if kind == PAY:
            code = await self.client.pay(reference)
            if code == "ok":
                self.paid_orders.append((reference, order))
        else:
            code = await self.client.cancel(reference, order)
            if code == "ok":
                self.recorder.cancelled(order)
        self.recorder.other(kind, code, intended_s)

    async def closed_loop_task(self) -> None:
        while (now_s := time.perf_counter()) < self.end_s:
            await self.issue(now_s)

    async def open_loop(self) -> None:
        interval_s = self.batch_size / self.spec.rate_per_s
        slots = asyncio.Semaphore(self.spec.inflight_max)
        pending: set[asyncio.Task[None]] = set()
        intended_s = self.start_s
        while intended_s < self.end_s:
            delay_s = intended_s - time.perf_counter()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            # Waiting for a slot delays the send, never its intended time: queueing counts.
            await slots.acquire()
            task = asyncio.create_task(self.issue(intended_s))
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda _: slots.release())
            intended_s += interval_s
        await _drain(pending)

    async def saas_task(self) -> None:
        """A slow SaaS-style reader: bursts of stock reads with pauses, beside the load."""
        while time.perf_counter() < self.end_s:
            for _ in range(SAAS_READS_PER_VISIT):
                code = await self.client.read(self.source.next_read_sku())
                self.recorder.other("saas_read", code, time.perf_counter())
            await asyncio.sleep(SAAS_PAUSE_S)

    async def report_progress(self) -> None:
        slot = self.spec.worker_index
        while True:
            self.progress[slot] = self.recorder.completed_total
            await asyncio.sleep(PROGRESS_INTERVAL_S)


async def _drain(pending: set[asyncio.Task[None]]) -> None:
    if not pending:
        return
    _, still_pending = await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)
    for task in still_pending:
        task.cancel()
    await asyncio.gather(*still_pending, return_exceptions=True)


async def _wait_for_start(spec: WorkerSpec, progress: Any, start_at: Any) -> float:
    progress[spec.worker_index] = 0
    while start_at.value <= 0:
        await asyncio.sleep(0.01)
    return float(start_at.value)


async def _run(spec: WorkerSpec, progress: Any, start_at: Any) -> dict[str, Any]:
    client = connect(spec.target_kind, spec.target_info)
    await client.open()
    start_at_epoch_s = await _wait_for_start(spec, progress, start_at)
    worker = _Worker(spec, client, progress, start_at_epoch_s)
    reporter = asyncio.create_task(worker.report_progress())
    await asyncio.sleep(max(0.0, worker.start_s - time.perf_counter()))
    jobs = [worker.saas_task() for _ in range(spec.saas_clients)]
    if spec.rate_per_s > 0:
        jobs.append(worker.open_loop())
    else:
        jobs.extend(worker.closed_loop_task() for _ in range(spec.concurrency))
    try:
        await asyncio.gather(*jobs)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        progress[spec.worker_index] = worker.recorder.completed_total
        await client.close()
    return worker.recorder.result()
