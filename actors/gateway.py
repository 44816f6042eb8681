"""Gateway: a grpc.aio server inside a Ray async actor. Several gateways share one port
(SO_REUSEPORT). It authenticates, validates, and micro-batches every request per
destination shard, so one Ray call carries many orders.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from flashtx.actors import clock, metrics, tracing
from flashtx.actors.batcher import MicroBatcher
from flashtx.actors.drain import DrainWatch
from flashtx.actors.loops import until_done
from flashtx.actors.ports import MerchantPeer, OrderPeer, StockPeer, find_peers
from flashtx.actors.routing import ShardGroup
from flashtx.actors.shard_health import ShardHealth
from flashtx.adapters.grpc_errors import FlashtxInterceptor, current_principal
from flashtx.adapters.grpc_service import Placement, add_servicers
from flashtx.adapters.wire import level_entry
from flashtx.engine.config import Config
from flashtx.engine.errors import (
    DomainError,
    NotFound,
    Overloaded,
    ResultCode,
    Unauthenticated,
    Unavailable,
)
from flashtx.engine.fanout import by_shard, merged
from flashtx.engine.merchants import Principal, hash_secret, operator_principal, parse_token
from flashtx.engine.messages import (
    ActionBatch,
    Adjusted,
    CampaignSkus,
    CartBatch,
    CheckoutBatch,
    PlaceBatch,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.orders import order_slot
from flashtx.engine.ratelimit import RateLimits
from flashtx.engine.sharding import RoutingTable
from flashtx.engine.stock import StockLevel

log = logging.getLogger(__name__)
P = TypeVar("P")


class Gateway(clock.ClockControl):
    def __init__(self, index: int, config: Config, port: int,
                 merchants: ShardGroup[MerchantPeer], stock: ShardGroup[StockPeer],
                 orders: ShardGroup[OrderPeer]) -> None:
        self.index = index
        self.config = config
        self.port = port
        tracing.configure(config, f"gateway-{index}")
        self._merchants, self._stock, self._orders = merchants, stock, orders
        self._operator_hash = config.operator_key_sha256 or hash_secret(config.operator_key)
        self._auth_cache: OrderedDict[str, tuple[Principal, int]] = OrderedDict()
        # Per SKU, its last level read and that level's answer bytes (adapters.wire).
        self._snapshots: OrderedDict[tuple[str, str], tuple[StockLevel, bytes]] = OrderedDict()
        # Snapshot refreshes under way: SKU -> (the read's future, its index in the read).
        # Concurrent reads of a stale SKU wait for the one refresh instead of each sending
        # their own (bounded: only reads in flight are here).
        self._refreshing: dict[tuple[str, str], tuple[asyncio.Future[Any], int]] = {}
        names_max = config.key_buckets_max
        self._key_orders = RateLimits(config.key_orders_per_s, config.key_orders_burst,
                                      names_max)
        self._key_reads = RateLimits(config.key_reads_per_s, config.key_reads_burst, names_max)
        self._merchant_orders = RateLimits(config.merchant_orders_per_s,
                                           config.merchant_orders_burst, names_max)
        self.inflight = 0
        self.reads_inflight = 0
        self.rpc_count = 0
        self.rpc_seconds = 0.0
        self.batches_sent = 0
        self.items_sent = 0
        batch: dict[str, Any] = dict(
                     items_max=config.batch_items_max, delay_s=config.batch_delay_ms_max / 1000,
                     queue_items_max=config.batch_queue_items_max,
                     retry_after_ms=config.overload_retry_after_ms,
                     inflight_batches_max=config.batch_inflight_max,
                     queue_delay_s_max=config.queue_delay_ms_max / 1000)
        self._batch_options = batch
        # Items queue as rows; each batch crosses to its shard as columns (engine.messages).
        # Why an order shard takes no work, as it says (its database failing).
        self._shard_health = [ShardHealth(i, functools.partial(self._database_of, i))
                              for i in range(len(orders))]
        self._place = [MicroBatcher(self._sender(orders, i, _send_place), _unavailable_place,
                                    **batch, observe=self._observer("gateway_to_order_place"),
                                    stalled=self._shard_health[i].explain)
                       for i in range(len(orders))]
        self._act = [MicroBatcher(self._sender(orders, i, _send_act), _unavailable_error,
                                  **batch, observe=self._observer("gateway_to_order_act"))
                     for i in range(len(orders))]
        self._cart = [MicroBatcher(self._sender(orders, i, _send_cart), _unavailable_error,
                                   **batch, observe=self._observer("gateway_to_order_cart"))
                      for i in range(len(orders))]
        self._checkout = [MicroBatcher(self._sender(orders, i, _send_checkout),
                                       _unavailable_place, **batch,
                                       observe=self._observer("gateway_to_order_checkout"),
                                       stalled=self._shard_health[i].explain)
                          for i in range(len(orders))]
        self._read = [MicroBatcher(self._sender(stock, i, _send_levels), _unavailable_error,
                                   **batch, observe=self._observer("gateway_to_stock_read"))
                      for i in range(len(stock))]
        self._gauges = asyncio.get_running_loop().create_task(self._report_forever())
        self.events_redis = (None if config.redis_url == "none"
                             else redis.Redis.from_url(config.redis_url))
        self._server: grpc.aio.Server | None = None
        self._draining: asyncio.Task[None] | None = None
        self._started = asyncio.get_running_loop().create_task(self._serve())

    # --- server lifecycle -------------------------------------------------------------------

    async def _serve(self) -> None:
        await self._follow_resharding()
        options = [("grpc.so_reuseport", 1),
                   ("grpc.max_receive_message_length", self.config.grpc_message_bytes_max),
                   ("grpc.max_send_message_length", self.config.grpc_message_bytes_max),
                   # Clients' keepalive pings during calls (flashtx.client: every 30 s) are
                   # welcome on a quiet event stream; more often than 20 s is abuse.
                   ("grpc.http2.min_ping_interval_without_data_ms", 20_000)]
        # With traces on, the gRPC instrumentation opens each call's span first (and
        # continues a client's traceparent); the batches that carry the call link to it.
        traced = ([aio_server_interceptor(tracer_provider=tracing.provider())]
                  if tracing.enabled() else [])
        server = grpc.aio.server(
            interceptors=[*traced, FlashtxInterceptor(self.authenticate, self._observe_rpc,
                                             self.config.gateway_unary_calls_max,
                                             self.config.overload_retry_after_ms)],
            options=options, maximum_concurrent_rpcs=self.config.grpc_concurrent_rpcs_max)
        names = add_servicers(server, self)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], server)
        address = f"{self.config.grpc_host}:{self.port}"
        credentials = _server_credentials(self.config)
        bound = (server.add_secure_port(address, credentials) if credentials
                 else server.add_insecure_port(address))
        if bound == 0:
            raise RuntimeError(f"cannot bind port {self.port}")
        await server.start()
        for name in ("", *names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("gateway %d serving on port %d", self.index, bound)

    def now_ms(self) -> int:
        return clock.now_ms()

    async def ready(self) -> int:
        await self._started
        return self.port

    async def drain(self, grace_s: float = 5.0) -> None:
        """Answers health NOT_SERVING (every service), waits `gateway_drain_delay_s` for
        balancers and clients to see it, then lets in-flight calls finish (`grace_s`) and
        stops. Asked again (a preStop hook, then the stop of the deployment), it waits for
        the drain under way."""
        await self._started
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(grace_s))
        await asyncio.shield(self._draining)

    async def _drain(self, grace_s: float) -> None:
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await asyncio.sleep(self.config.gateway_drain_delay_s)
            await self._server.stop(grace_s)

    async def spans(self) -> list[dict[str, Any]]:
        """Spans this process kept (trace_exporter = "memory")."""
        return tracing.finished_spans()

    async def stats(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), "inflight": self.inflight,
                "rpc_count": self.rpc_count,
                "rpc_seconds": self.rpc_seconds,
                "batches_sent": self.batches_sent, "items_sent": self.items_sent,
                "auth_cache": len(self._auth_cache), "snapshots": len(self._snapshots)}

    def _clock_shifted(self) -> None:
        self._auth_cache.clear()  # their expiry times were read on the old clock
        self._snapshots.clear()
        for limits in (self._key_orders, self._key_reads, self._merchant_orders):
            limits.clear()

    # --- auth -------------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Principal:
        now = clock.now_ms()
        cached = self._auth_cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        if token.startswith("ftx1.operator.") and hash_secret(token) == self._operator_hash:
            return operator_principal()
        merchant_id, _, _ = parse_token(token)
        try:
            principal = await self._merchant(merchant_id).authenticate(token)
        except DomainError:
            raise
        except Exception as error:
            raise Unauthenticated("cannot check the key now; retry") from error
        self._auth_cache[token] = (principal, now + self.config.auth_cache_ttl_ms)
        if len(self._auth_cache) > self.config.auth_cache_entries_max:
            self._auth_cache.popitem(last=False)
        return principal

    # --- backend for the servicers ----------------------------------------------------------

    async def place_orders(self, principal: Principal, placements: Sequence[Placement],
                           deadline_ms: int = 0) -> list[tuple[ResultCode, Any]]:
        self._admit(len(placements))
        self._charge(principal, len(placements))
        merchant_id, window_s = principal.merchant_id, principal.payment_window_s
        currency = principal.currency
        slot_of = self._orders.slot
        slots = [slot_of(merchant_id, buyer_id) for _, buyer_id, _, _ in placements]
        positions = by_shard(map(self._orders.shard_of_slot, slots))
        for shard, items in positions.items():  # whole or not at all (nothing queued yet)
            self._place[shard].admit(len(items))
        self.inflight += len(placements)
        try:
            futures = {shard: self._place[shard].submit_chunk([
                (merchant_id, *placements[i][:3], window_s, slots[i], deadline_ms,
                 principal.key_id, placements[i][3], currency) for i in items])
                for shard, items in positions.items()}
            if len(futures) == 1:  # every order on one shard: its answers are in order
                [answers] = futures.values()
                return list(await answers)
            return merged(len(placements), [(positions[shard], await answers)
                                            for shard, answers in futures.items()])
        finally:
            self.inflight -= len(placements)

    async def cart_action(self, principal: Principal, op: str, buyer_id: str,
                          campaign_id: str, sku_id: str = "", quantity: int = 0,
                          request_id: str = "") -> Any:
        """add / set / remove / get / clear on a buyer's cart; raises DomainError. A change
        costs the key one unit of its order rate, a get one of its read rate: a key looping
        cart changes is held to its rate like one placing orders."""
        self._admit(1)
        if op == "get":
            self._charge_reads(1)
        else:
            self._charge(principal, 1)
        merchant_id = principal.merchant_id
        shard = self._orders.shard_of(merchant_id, buyer_id)
        item = (op, merchant_id, buyer_id, campaign_id, sku_id, quantity, principal.cart_hold_s,
                request_id)
        self.inflight += 1
        try:
            if op == "get":
                with self._read_slot():
                    result = await self._cart[shard].submit(item)
            else:
                result = await self._cart[shard].submit(item)
        finally:
            self.inflight -= 1
        if isinstance(result, DomainError):
            raise result
        return result

    async def checkout(self, principal: Principal, buyer_id: str, campaign_id: str,
                       idempotency_key: str, deadline_ms: int = 0) -> tuple[ResultCode, Any]:
        self._admit(1)
        self._charge(principal, 1)
        merchant_id = principal.merchant_id
        slot = self._orders.slot(merchant_id, buyer_id)
        self.inflight += 1
        try:
            result: tuple[ResultCode, Any] = await self._checkout[
                self._orders.shard_of_slot(slot)].submit(
                (merchant_id, buyer_id, campaign_id, idempotency_key,
                 principal.payment_window_s, slot, deadline_ms, principal.key_id,
                 principal.currency))
            return result
        finally:
            self.inflight -= 1

    async def create_campaign(self, merchant_id: str, campaign_id: str, name: str,
                              starts_at_ms: int, ends_at_ms: int, buckets: int,
                              skus: list[tuple[str, int, int, int]]) -> Any:
        return await self._merchant(merchant_id).create_campaign(
            merchant_id, campaign_id, name, starts_at_ms, ends_at_ms, buckets,
            CampaignSkus.of(skus))

    async def get_campaign(self, merchant_id: str, campaign_id: str) -> Any:
        with self._read_slot():
            return await self._merchant(merchant_id).get_campaign(merchant_id,
                                             campaign_id)

    async def list_campaigns(self, merchant_id: str) -> Any:
        with self._read_slot():
            return await self._merchant(merchant_id).list_campaigns(merchant_id)

    async def end_campaign(self, merchant_id: str, campaign_id: str) -> Any:
        return await self._merchant(merchant_id).end_campaign(merchant_id, campaign_id)

    async def update_merchant(self, merchant_id: str, payment_window_s: int | None,
                              cart_hold_s: int | None) -> Any:
        result = await self._merchant(merchant_id).update(merchant_id,
                                           payment_window_s, cart_hold_s)
        # This gateway sees the new settings now; others within auth_cache_ttl_ms.
        for token in [t for t in self._auth_cache if t.startswith(f"ftx1.{merchant_id}.")]:
            del self._auth_cache[token]
        return result

    async def order_action(self, merchant_id: str, op: str, target: str, argument: Any,
                           only_key: str = "") -> Any:
        if op in ("get", "list"):
            with self._read_slot():
                return await self._order_action(merchant_id, op, target, argument, only_key)
        return await self._order_action(merchant_id, op, target, argument, only_key)

    @contextmanager
    def _read_slot(self, reads: int = 1) -> Iterator[None]:
        """The read traffic class: a per-key read rate, then a per-gateway budget."""
        self._charge_reads(reads)
        if self.reads_inflight >= self.config.reads_inflight_per_gateway_max:
            metrics.record(metrics.rejections(), 1, reason="reads_budget")
            raise Overloaded("this gateway serves its maximum of concurrent reads",
                             self.config.overload_retry_after_ms)
        self.reads_inflight += 1
        try:
            yield
        finally:
            self.reads_inflight -= 1

    async def _order_action(self, merchant_id: str, op: str, target: str, argument: Any,
                            only_key: str) -> Any:
        if op == "list":
            shard = self._orders.shard_of(merchant_id, target)
        else:
            slot = order_slot(target)
            if slot >= self.config.slots_total:
                raise NotFound(f"no order {target}", order_id=target)
            shard = self._orders.shard_of_slot(slot)
        result = await self._act[shard].submit((op, merchant_id, target, argument, only_key))
        if isinstance(result, DomainError):
            raise result
        return result

    async def stock_levels(self, merchant_id: str, sku_ids: Sequence[str],
                           strong: bool) -> list[bytes | None]:
        """Per SKU, its level as answer bytes (``adapters.wire.level_entry``); None for an
        unknown SKU. Snapshot reads answer from this gateway's copy when it is recent."""
        with self._read_slot(len(sku_ids)):
            return await self._stock_levels(merchant_id, sku_ids, strong)

    async def _stock_levels(self, merchant_id: str, sku_ids: Sequence[str],
                            strong: bool) -> list[bytes | None]:
        results: list[bytes | None] = [None] * len(sku_ids)
        snapshots, refreshing = self._snapshots, self._refreshing
        oldest_ms = clock.now_ms() - self.config.stock_snapshot_max_age_ms
        waits: list[tuple[int, asyncio.Future[Any], int]] = []  # (position, read, index)
        reads: dict[int, list[int]] = {}  # stock shard -> positions to read from it
        for i, sku_id in enumerate(sku_ids):
            key = (merchant_id, sku_id)
            if not strong:
                cached = snapshots.get(key)
                if cached is not None and cached[0].as_of_ms >= oldest_ms:
                    results[i] = cached[1]
                    continue
                flight = refreshing.get(key)
                if flight is not None:
                    waits.append((i, *flight))
                    continue
            reads.setdefault(self._stock.shard_of(merchant_id, sku_id), []).append(i)
        for shard, positions in reads.items():  # one read per shard, not one per SKU
            keys = [(merchant_id, sku_ids[i]) for i in positions]
            future = self._read[shard].submit_chunk(keys)
            if not strong:
                for index, key in enumerate(keys):
                    refreshing[key] = (future, index)
                future.add_done_callback(functools.partial(self._refreshed, keys))
            waits.extend((i, future, index) for index, i in enumerate(positions))
        for i, future, index in waits:
            level = (await future)[index]
            if isinstance(level, DomainError):
                raise level
            if level is not None:  # the first reader of a refresh encodes it, once
                cached = snapshots.get((merchant_id, level.sku_id))
                results[i] = (cached[1] if cached is not None and cached[0] is level
                              else self._remember(level))
        return results

    def _refreshed(self, keys: list[tuple[str, str]], future: asyncio.Future[Any]) -> None:
        for key in keys:
            flight = self._refreshing.get(key)
            if flight is not None and flight[0] is future:
                del self._refreshing[key]

    def _admit(self, items: int) -> None:
        """The bound on work in flight in this gateway (orders, cart changes)."""
        if self.inflight + items > self.config.gateway_inflight_max:
            metrics.record(metrics.rejections(), items, reason="gateway_inflight")
            raise Overloaded("gateway is at its in-flight limit",
                             self.config.overload_retry_after_ms)

    def _charge(self, principal: Principal, orders: int) -> None:
        """Per-merchant, then per-key order rate: refuses the whole call when either
        bucket is short (one merchant's keys together cannot take the gateway)."""
        self._take(self._merchant_orders, principal.merchant_id, orders,
                   "merchant_rate_limit", "order", who="merchant")
        self._take(self._key_orders, principal.key_id, orders, "key_rate_limit", "order")

    def _charge_reads(self, reads: int) -> None:
        """Per-key read rate (a batch read costs one per SKU)."""
        try:
            principal = current_principal()
        except LookupError:  # not inside an RPC (an internal read)
            return
        self._take(self._key_reads, principal.key_id, reads, "key_read_rate_limit", "read")

    @staticmethod
    def _take(limits: RateLimits, name: str, units: int, reason: str, what: str,
              who: str = "API key") -> None:
        retry_after_ms = limits.take(name, units, clock.now_ms())
        if retry_after_ms:
            metrics.record(metrics.rejections(), units, reason=reason)
            raise Overloaded(f"this {who} is over its {what} rate; retry later",
                             retry_after_ms, limit_per_s=str(limits.rate_per_s), limit=reason)

    def _remember(self, level: StockLevel) -> bytes:
        key = (level.merchant_id, level.sku_id)
        entry = level_entry(level)
        self._snapshots[key] = (level, entry)
        self._snapshots.move_to_end(key)
        if len(self._snapshots) > self.config.stock_snapshot_entries_max:
            self._snapshots.popitem(last=False)
        return entry

    async def upsert_skus(self, merchant_id: str, items: list[tuple[str, str, int, int, int]]
                          ) -> list[Any]:
        groups = by_shard(self._stock.shard_of(merchant_id, item[0]) for item in items)
        answers = await asyncio.gather(*(
            self._stock.peer(shard).upsert(SkuBatch.of((merchant_id, *items[i])
                                                       for i in positions))
            for shard, positions in groups.items()))
        return merged(len(items), zip(groups.values(), answers, strict=True))

    async def adjust_stock(self, merchant_id: str, sku_id: str, delta: int, reason: str,
                           request_id: str = "") -> Adjusted:
        return await self._stock.of(merchant_id, sku_id).adjust(merchant_id, sku_id, delta,
                                                                reason, request_id)

    async def create_merchant(self, merchant_id: str, name: str, payment_window_s: int,
                              cart_hold_s: int = 0, request_id: str = "",
                              currency: str = "") -> Any:
        if not merchant_id:  # generated; the same for the same request id (its retry)
            merchant_id = (f"m-{hash_secret('merchant:' + request_id)[:12]}" if request_id
                           else f"m-{secrets.token_hex(6)}")
        return await self._merchant(merchant_id).create(merchant_id, name, payment_window_s,
                                                        cart_hold_s, request_id, currency)

    async def get_merchant(self, merchant_id: str) -> Any:
        return await self._merchant(merchant_id).get(merchant_id)

    async def list_merchants(self, after: str, limit: int) -> list[dict[str, Any]]:
        shards = [self._merchants.peer(i) for i in range(len(self._merchants))]
        found = await asyncio.gather(*(m.list_merchants(after, limit) for m in shards))
        return heapq.nsmallest(limit, itertools.chain.from_iterable(found),
                               key=lambda m: str(m["merchant_id"]))

    async def create_api_key(self, merchant_id: str, scopes: list[int], label: str,
                             request_id: str = "") -> Any:
        return await self._merchant(merchant_id).create_key(merchant_id, scopes, label,
                                                            request_id)

    async def revoke_api_key(self, merchant_id: str, key_id: str) -> Any:
        result = await self._merchant(merchant_id).revoke_key(merchant_id, key_id)
        # This gateway forgets the key now; others within auth_cache_ttl_ms.
        for token in [t for t in self._auth_cache if f".{key_id}." in t]:
            del self._auth_cache[token]
        return result

    def _merchant(self, merchant_id: str) -> MerchantPeer:
        return self._merchants.of(merchant_id, "")

    async def _follow_resharding(self) -> None:
        """A gateway (re)started after a resharding routes by the table the shards use."""
        table = await until_done(self._orders.peer(0).stock_routing,
                                 f"gateway {self.index} routing")
        if table.version > self._stock.table.version:
            peers = await find_peers([f"stock-{i}" for i in range(table.shards)])
            await self.reroute_stock(peers, table)

    async def reroute_stock(self, peers: Sequence[StockPeer], table: RoutingTable) -> None:
        """Resharding: reads and catalogue writes go by the new table."""
        self._stock.update(peers, table)
        while len(self._read) < len(peers):
            self._read.append(MicroBatcher(
                self._sender(self._stock, len(self._read), _send_levels), _unavailable_error,
                **self._batch_options, observe=self._observer("gateway_to_stock_read")))
        self._snapshots.clear()

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _sender(group: ShardGroup[P], shard: int,
                send: Callable[[P, list[Any]], Awaitable[Any]]) -> Any:
        async def sent(items: list[Any]) -> Any:
            return await send(group.peer(shard), items)  # the peer of now (resharding)

        return sent

    def _database_of(self, shard: int) -> Awaitable[float | None]:
        return self._orders.peer(shard).database_failing_s()  # the peer of now

    def _observer(self, hop: str) -> Any:
        def observe(items: int) -> None:
            self.batches_sent += 1
            self.items_sent += items
            metrics.record(metrics.batch_items(), items, hop=hop)

        return observe

    def _observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_count += 1
        self.rpc_seconds += seconds
        metrics.record(metrics.rpc_latency(), seconds, method=method.rsplit("/", 1)[-1],
                       code=code)
        if code == "RESOURCE_EXHAUSTED":
            metrics.record(metrics.rejections(), 1, reason="overloaded")

    async def _report_forever(self) -> None:
        actor = f"gateway-{self.index}"
        watch = DrainWatch(self.config.gateway_drain_file, self.drain)
        while True:
            await asyncio.sleep(1.0)
            watch.check()  # a preStop hook asked this node's gateways to drain
            metrics.record(metrics.depth(), self.inflight, queue="gateway_inflight",
                           actor=actor)
            queued = sum(b.outstanding for b in (*self._place, *self._act, *self._read,
                                                 *self._cart, *self._checkout))
            metrics.record(metrics.depth(), queued, queue="gateway_batches", actor=actor)
            for kind, count in (("gateway", self.config.gateways),
                                ("stock_shard", len(self._stock)),
                                ("order_shard", len(self._orders)),
                                ("merchant_shard", len(self._merchants))):
                metrics.record(metrics.actors(), count, kind=kind)


def _server_credentials(config: Config) -> grpc.ServerCredentials | None:
    if not config.tls_cert_file:
        return None
    key = Path(config.tls_key_file).read_bytes()
    certificate = Path(config.tls_cert_file).read_bytes()
    client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    return grpc.ssl_server_credentials([(key, certificate)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _unavailable_place(error: BaseException) -> tuple[ResultCode, str]:
    log.warning("order shard call failed: %r", error)
    return (ResultCode.UNAVAILABLE, "order shard unavailable; retry with the same key")


def _unavailable_error(error: BaseException) -> DomainError:
    log.warning("shard call failed: %r", error)
    return Unavailable("shard unavailable; retry")


def _send_place(peer: OrderPeer, rows: list[Any]) -> Awaitable[Any]:
    batch = PlaceBatch.of(rows)
    batch.trace = tracing.carrier()  # the batch's span: the order shard's is its child
    return peer.place(batch)


def _send_act(peer: OrderPeer, rows: list[Any]) -> Awaitable[Any]:
    return peer.act(ActionBatch.of(rows))


def _send_cart(peer: OrderPeer, rows: list[Any]) -> Awaitable[Any]:
    return peer.cart(CartBatch.of(rows))


def _send_checkout(peer: OrderPeer, rows: list[Any]) -> Awaitable[Any]:
    return peer.checkout(CheckoutBatch.of(rows))


def _send_levels(peer: StockPeer, rows: list[Any]) -> Awaitable[Any]:
    return peer.levels(SkuKeys.of(rows))
