"""Every Ray actor option of a flashtx deployment, written in one place (as Ray Serve's
controller does), and the gateway's start, which the topology and the controller share."""

from __future__ import annotations

from typing import Any

import ray

from flashtx.actors.gateway import Gateway
from flashtx.actors.gcpolicy import engine_process
from flashtx.actors.ports import NAMESPACE, MerchantPeer, OrderPeer, StockPeer
from flashtx.actors.routing import ShardGroup
from flashtx.engine.config import Config

__all__ = ["GATEWAY_OPTIONS", "SHARD_OPTIONS", "placed", "start_gateway"]

# A shard restarts from durable state after a crash (max_restarts); a call in flight to a
# dead actor fails instead of being replayed (max_task_retries=0): the caller retries
# with its idempotency key. Actors reserve no CPU so a small box can hold them all; the
# gateway count, not Ray's CPU slots, bounds the work.
SHARD_OPTIONS: dict[str, Any] = dict(num_cpus=0, max_restarts=-1, max_task_retries=0,
                                     max_concurrency=10_000, namespace=NAMESPACE)
GATEWAY_OPTIONS: dict[str, Any] = dict(num_cpus=0, max_restarts=-1, max_task_retries=0,
                                       max_concurrency=10_000, namespace=NAMESPACE)


def placed(options: dict[str, Any], config: Config) -> dict[str, Any]:
    """Options with the placement resource, when nodes are reserved for the engine."""
    if not config.actor_resource:
        return options
    return {**options, "resources": {config.actor_resource: 0.01}}


RemoteGateway = ray.remote(engine_process(Gateway))


def start_gateway(index: int, config: Config, port: int, merchants: ShardGroup[MerchantPeer],
                  stock: ShardGroup[StockPeer], orders: ShardGroup[OrderPeer],
                  detached: bool = False) -> Any:
    """A gateway actor. `detached`: it outlives the actor that created it (the controller
    creates gateways the topology takes back when the controller stops); whoever holds
    the deployment kills it in `Topology.stop`."""
    options = {**placed(GATEWAY_OPTIONS, config), "num_cpus": config.gateway_cpus}
    if detached:
        options["lifetime"] = "detached"
    return RemoteGateway.options(name=f"gateway-{index}", **options).remote(
        index, config, port, merchants, stock, orders)
