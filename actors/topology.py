"""Creates the actors of a flashtx deployment, with the options of `actors/options.py`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from flashtx.actors.connector import Connector
from flashtx.actors.controller import Controller
from flashtx.actors.gcpolicy import engine_process
from flashtx.actors.merchant_shard import MerchantShard
from flashtx.actors.options import SHARD_OPTIONS, placed, start_gateway
from flashtx.actors.order_shard import OrderShard
from flashtx.actors.ports import (
    MerchantPeer,
    OrderPeer,
    RayPeer,
    StockPeer,
    handle_of,
    ray_peers,
    stop,
    wait_all,
    wait_each,
)
from flashtx.actors.relay import Relay
from flashtx.actors.resharding import ReshardFailed, reshard_stock, spread
from flashtx.actors.routing import ShardGroup
from flashtx.actors.stock_shard import StockShard
from flashtx.adapters.connectors import ConnectorSpec, load_specs
from flashtx.engine.config import Config
from flashtx.engine.sharding import RoutingTable

log = logging.getLogger(__name__)


RemoteMerchantShard = ray.remote(engine_process(MerchantShard))
RemoteStockShard = ray.remote(engine_process(StockShard))
RemoteOrderShard = ray.remote(engine_process(OrderShard))
RemoteRelay = ray.remote(engine_process(Relay))
RemoteController = ray.remote(engine_process(Controller))
RemoteConnector = ray.remote(engine_process(Connector))


def _alive(handles: list[Any], method: str, *args: Any,
           timeout_s: float | None = None) -> tuple[list[Any], list[Any]]:
    """Calls `method` on every handle; answers (live handles, their results), skipping
    actors that have died (their handles are dropped by the caller)."""
    answers = wait_each((getattr(RayPeer(h), method)(*args) for h in handles), timeout_s)
    live, results = [], []
    for handle, answer in zip(handles, answers, strict=True):
        if isinstance(answer, ray.exceptions.RayActorError):
            log.warning("skipping a dead actor on %s", method)
            continue
        live.append(handle)
        results.append(answer)
    return live, results


@dataclass
class Topology:
    config: Config
    port: int
    merchants: ShardGroup[MerchantPeer]
    stock: ShardGroup[StockPeer]
    orders: ShardGroup[OrderPeer]
    gateways: list[Any] = field(default_factory=list)
    relay: Any = None
    connectors: dict[str, Any] = field(default_factory=dict)
    controller: Any = None
    clock_offset_ms: int = 0
    gateway_names: dict[str, Any] = field(default_factory=dict)  # name -> handle

    @classmethod
    def start(cls, config: Config, port: int,
              stock_table: RoutingTable | None = None) -> Topology:
        """Creates shards, then gateways on `port`; returns once every gateway serves.
        `stock_table`: the one a reshard stored (else uniform over `stock_shards`)."""
        slots = config.slots_total
        merchant_table = RoutingTable.uniform(slots, config.merchant_shards)
        stock_table = stock_table or RoutingTable.uniform(slots, config.stock_shards)
        order_table = RoutingTable.uniform(slots, config.order_shards)
        shard_options = placed(SHARD_OPTIONS, config)
        order_names = [f"order-{i}" for i in range(config.order_shards)]
        merchants: list[MerchantPeer] = ray_peers(
            (f"merchant-{i}", RemoteMerchantShard.options(name=f"merchant-{i}", **shard_options)
             .remote(i, config, merchant_table.slots_of(i), order_names))
            for i in range(config.merchant_shards))
        stock: list[StockPeer] = ray_peers(
            (f"stock-{i}", RemoteStockShard.options(name=f"stock-{i}", **shard_options)
             .remote(i, config, stock_table.slots_of(i), order_names))
            for i in range(stock_table.shards))
        orders: list[OrderPeer] = ray_peers(
            (name, RemoteOrderShard.options(name=name, **shard_options)
             .remote(i, config, stock_table, order_table))
            for i, name in enumerate(order_names))
        topology = cls(config, port, ShardGroup(merchants, merchant_table, slots),
                       ShardGroup(stock, stock_table, slots, by_sku=True),
                       ShardGroup(orders, order_table, slots))
        # Gateways start while the shards recover (a process start takes about a second):
        # a gateway binds its port once order shard 0 has recovered (it asks it for the
        # stock routing table first), and the deployment is up once all of them serve.
        for i in range(config.gateways):
            topology.add_gateway(i)
        try:
            wait_all([*(shard.check_invariants() for shard in stock),
                      *(shard.check_invariants() for shard in orders)])
        except BaseException:
            for gateway in topology.gateways:
                stop(gateway)
            raise
        if "none" not in (config.redis_url, config.postgres_dsn):
            topology.relay = RemoteRelay.options(name="relay", **SHARD_OPTIONS).remote(config)
            for spec in load_specs(config.connectors_file):
                topology.add_connector(spec)
        wait_all(RayPeer(gateway).ready() for gateway in topology.gateways)
        if config.autoscale:
            topology.start_controller()
        return topology

    def add_gateway(self, index: int, config: Config | None = None,
                    port: int | None = None) -> Any:
        """A gateway on the shared port, or one with its own config and port (e.g. TLS)."""
        gateway = start_gateway(index, config or self.config, port or self.port,
                                self.merchants, self.stock, self.orders)
        self.gateways.append(gateway)
        self.gateway_names[f"gateway-{index}"] = gateway
        return gateway

    def remove_gateway(self, gateway: Any, grace_s: float = 5.0) -> None:
        """Drains one gateway (in-flight calls finish) and stops it."""
        self.gateways = [g for g in self.gateways if g != gateway]
        try:
            wait_all([RayPeer(gateway).drain(grace_s)],
                     timeout_s=self.config.gateway_drain_delay_s + grace_s + 5)
        except (ray.exceptions.RayError, TimeoutError):
            log.warning("a gateway did not drain cleanly", exc_info=True)
        stop(gateway)

    def _call_gateways(self, method: str, *args: Any) -> list[Any]:
        """Calls every live gateway; dead ones leave the list."""
        self.gateways, results = _alive(self.gateways, method, *args)
        return results

    def start_controller(self, config: Config | None = None) -> Any:
        """Hands the gateways to a controller that scales them with load. They travel as
        names (a restarted controller looks them up), never as handles in Ray's object
        store."""
        names = {id(handle): name for name, handle in self.gateway_names.items()}
        gateways = [(int(names[id(g)].rsplit("-", 1)[1]), RayPeer(g, names[id(g)]))
                    for g in self.gateways]
        self.controller = RemoteController.options(name="controller", **SHARD_OPTIONS).remote(
            config or self.config, self.port, self.merchants, self.stock, self.orders,
            gateways)
        return self.controller

    def add_connector(self, spec: ConnectorSpec) -> Any:
        """Starts a connector in an actor of its own (named connector-<name>)."""
        connector = RemoteConnector.options(name=f"connector-{spec.name}", **SHARD_OPTIONS
                                            ).remote(spec, self.config.redis_url,
                                                     self.config.postgres_dsn)
        self.connectors[spec.name] = connector
        return connector

    def remove_connector(self, name: str) -> None:
        """Stops a connector; what it has not delivered stays in its stream for the next."""
        connector = self.connectors.pop(name, None)
        if connector is not None:
            stop(connector)

    def reshard_stock(self, shards_total: int) -> RoutingTable:
        """Adds stock shards and moves slots to them while traffic flows
        (actors.resharding: order shards pause stock-changing work, every stock shard
        rebuilds its slots, work resumes). Gateways switch last (they only read stock and
        write the catalogue, which shards refuse for slots they do not own); one that died
        is skipped. Blocks: from inside an event loop, call it in a thread.

        If the reshard fails it rolls back and raises ReshardFailed (the added shards are
        stopped); if the rollback fails too, stock-changing work stays paused and this
        raises, for an operator to run it again."""
        old, old_peers = self.stock.table, list(self.stock.peers)
        table = spread(old, shards_total)
        order_names = [f"order-{i}" for i in range(len(self.orders))]
        options = placed(SHARD_OPTIONS, self.config)
        added: list[StockPeer] = ray_peers(
            (f"stock-{i}", RemoteStockShard.options(name=f"stock-{i}", **options)
             .remote(i, self.config, table.slots_of(i), order_names))
            for i in range(len(old_peers), shards_total))
        wait_all(shard.check_invariants() for shard in added)
        try:
            settled = asyncio.run(reshard_stock(self.orders.peers, old_peers, added, old, table,
                                                durable=self.config.postgres_dsn != "none"))
        except ReshardFailed as failed:
            for shard in added:
                stop(shard)
            self.stock.update(old_peers, failed.table)
            self._call_gateways("reroute_stock", old_peers, failed.table)
            raise
        peers = [*old_peers, *added]
        self.stock.update(peers, settled)
        self._call_gateways("reroute_stock", peers, settled)
        return settled

    def stop_controller(self) -> None:
        """Takes the gateways back from the controller (as they are now) and stops it."""
        if self.controller is not None:
            names: list[str] = wait_all([RayPeer(self.controller).gateway_names()])[0]
            for name in names:
                if name not in self.gateway_names:  # started by the controller
                    self.gateway_names[name] = handle_of(RayPeer(name=name))
            self.gateways, _ = _alive([self.gateway_names[n] for n in names], "ready")
            live = {id(g) for g in self.gateways}
            self.gateway_names = {n: g for n, g in self.gateway_names.items() if id(g) in live}
            stop(self.controller)
            self.controller = None

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "gateways": self._call_gateways("stats"),
            "stock_shards": wait_all(s.stats() for s in self.stock.peers),
            "order_shards": wait_all(s.stats() for s in self.orders.peers),
        }

    def shift_clock(self, offset_ms: int) -> None:
        """Moves every actor's clock by `offset_ms` from real time (tests and drills)."""
        self.clock_offset_ms = offset_ms
        self._call_gateways("shift_clock", offset_ms)
        wait_all(actor.shift_clock(offset_ms) for actor in [
            *self.orders.peers, *self.stock.peers, *self.merchants.peers])

    def check_invariants(self) -> None:
        wait_all(s.check_invariants() for s in self.stock.peers)
        wait_all(s.check_invariants() for s in self.orders.peers)

    def stop(self, grace_s: float = 5.0) -> None:
        self.stop_controller()
        try:
            _alive(self.gateways, "drain", grace_s,
                   timeout_s=self.config.gateway_drain_delay_s + grace_s + 5)
        except Exception:  # a gateway that cannot drain is killed below all the same
            log.warning("gateways did not drain cleanly", exc_info=True)
        for actor in [*self.gateways, *self.orders.handles, *self.stock.handles,
                      *self.merchants.handles, *([self.relay] if self.relay else []),
                      *self.connectors.values()]:
            stop(actor)
        self.gateways.clear()
