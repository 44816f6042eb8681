"""Controller: scales gateway actors with load. Each round it reads every gateway's
counters, asks the pure policy (engine.autoscale) for a gateway count, and starts or
drains gateways to match; it asks Ray's autoscaler for the resources the gateways need,
so that Ray adds nodes when they ask for CPUs. A failed round is logged and the loop
goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from flashtx.actors.loops import every
from flashtx.actors.options import start_gateway
from flashtx.actors.ports import MerchantPeer, OrderPeer, RayPeer, StockPeer, stop
from flashtx.actors.routing import ShardGroup
from flashtx.engine.autoscale import Decision, Observation, ScalingPolicy
from flashtx.engine.config import Config

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, config: Config, port: int, merchants: ShardGroup[MerchantPeer],
                 stock: ShardGroup[StockPeer], orders: ShardGroup[OrderPeer],
                 gateways: list[tuple[int, RayPeer]]) -> None:
        self._config, self._port = config, port
        self._groups = (merchants, stock, orders)
        self._gateways = list(gateways)  # (index, peer by name), oldest first
        self._policy = ScalingPolicy(config.gateways_min, config.gateways_max,
                                     config.autoscale_requests_per_s_per_gateway,
                                     config.autoscale_inflight_per_gateway,
                                     config.autoscale_scale_in_after)
        self._below_for = 0
        self._last: tuple[float, int] | None = None
        self.history: list[tuple[float, int]] = []  # (time, gateways) after each change
        self._task = asyncio.get_running_loop().create_task(
            every(config.autoscale_interval_s, self._round, "autoscaling round"))

    async def _round(self) -> None:
        stats = await asyncio.gather(*(g.stats() for _, g in self._gateways))
        now = time.monotonic()
        count = sum(s["rpc_count"] for s in stats)
        rate = 0.0 if self._last is None else (count - self._last[1]) / (now - self._last[0])
        self._last = (now, count)
        seen = Observation(len(self._gateways), max(rate, 0.0),
                           sum(s["inflight"] for s in stats))
        decision: Decision = self._policy.decide(seen, self._below_for)
        self._below_for = decision.below_for
        if decision.gateways != len(self._gateways):
            await self._resize(decision.gateways)

    async def _resize(self, wanted: int) -> None:
        self._request_resources(wanted)
        while len(self._gateways) < wanted:
            index = max(i for i, _ in self._gateways) + 1
            handle = start_gateway(index, self._config, self._port, *self._groups,
                                   detached=True)  # outlives this controller
            gateway = RayPeer(handle, f"gateway-{index}")
            await gateway.ready()
            self._gateways.append((index, gateway))
            self.history.append((time.time(), len(self._gateways)))
            log.info("autoscaler added gateway-%d", index)
        while len(self._gateways) > wanted:
            index, gateway = self._gateways.pop()
            # Recorded with the change stats() shows at once, not after the drain.
            self.history.append((time.time(), len(self._gateways)))
            await gateway.drain(5.0)  # in-flight calls finish; new ones go elsewhere
            stop(gateway)
            log.info("autoscaler drained gateway-%d", index)

    def _request_resources(self, gateways: int) -> None:
        if self._config.gateway_cpus <= 0:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"CPU": self._config.gateway_cpus}] * gateways)

    async def stats(self) -> dict[str, Any]:
        return {"gateways": [i for i, _ in self._gateways], "history": self.history,
                "below_for": self._below_for}

    async def gateway_names(self) -> list[str]:
        return [g.name for _, g in self._gateways]
