"""Typed ports between actors, and their Ray implementation: the one place that makes Ray
calls to shards and gateways.

A shard holds peers (``StockPeer``, ``OrderPeer``, ``MerchantPeer``), never actor handles,
and calls them like objects: ``await peer.reserve(batch)``. Each port method takes and
answers the named batches of ``engine.messages``. Two implementations exist: ``RayPeer``
here (a Ray actor handle), and ``flashtx.sim.world.SimPeer`` (in-process, on virtual time,
with the failures Ray can have). The shard classes are checked against the ports by mypy and
at run time (``tests/unit/test_ports.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast

import ray

from flashtx.engine.campaigns import Campaign
from flashtx.engine.errors import DomainError
from flashtx.engine.merchants import Principal
from flashtx.engine.messages import (
    ActionBatch,
    Adjusted,
    Answers,
    CampaignSkus,
    CartBatch,
    CheckoutBatch,
    Expected,
    Generation,
    Handover,
    HoldBatch,
    KeyCreated,
    MerchantCreated,
    MerchantView,
    PlaceBatch,
    ReserveBatch,
    ReturnBatch,
    Shares,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.sharding import RoutingTable
from flashtx.engine.stock import StockLevel

NAMESPACE = "flashtx"
T = TypeVar("T")


class Admin(Protocol):
    """What every shard answers to operators and tests."""

    def stats(self) -> Awaitable[dict[str, Any]]: ...
    def shift_clock(self, offset_ms: int) -> Awaitable[None]: ...


class StockPeer(Admin, Protocol):
    # hot path (from order shards)
    def reserve(self, batch: ReserveBatch) -> Awaitable[Answers]: ...
    def hold(self, batch: HoldBatch) -> Awaitable[Answers]: ...
    def commit(self, order_ids: list[str]) -> Awaitable[Answers]: ...
    def release(self, order_ids: list[str], owner: int,
                generation: Generation) -> Awaitable[list[bool]]: ...
    def abandon(self, order_ids: list[str], owner: int,
                generation: Generation) -> Awaitable[list[bool]]: ...
    def return_sold(self, batch: ReturnBatch) -> Awaitable[list[bool]]: ...
    def replace_owned(self, handover: Handover) -> Awaitable[int]: ...
    # reads and catalogue (from gateways and merchant shards)
    def levels(self, keys: SkuKeys) -> Awaitable[list[StockLevel | None]]: ...
    def upsert(self, batch: SkuBatch) -> Awaitable[list[StockLevel | DomainError]]: ...
    def adjust(self, merchant_id: str, sku_id: str, delta: int, reason: str,
               request_id: str = "") -> Awaitable[Adjusted]: ...
    # moving units between counters (campaign buckets)
    def instance(self, expect: Expected | None = None) -> Awaitable[str]: ...
    def cancel_expected(self, merchant_id: str, sku_id: str) -> Awaitable[None]: ...
    def transfer_out(self, merchant_id: str, sku_id: str, units: int, to: Shares,
                     new_skus: SkuBatch | None = None, campaign: Campaign | None = None,
                     at_most: bool = False) -> Awaitable[int]: ...
    def deposit(self, merchant_id: str, sku_id: str, name: str, price_minor: int,
                units: int, expected_instance: str) -> Awaitable[bool]: ...
    # resharding and checks
    def narrow(self, slots: Sequence[int]) -> Awaitable[None]: ...
    def rebuild(self, slots: Sequence[int]) -> Awaitable[int]: ...
    def check_invariants(self) -> Awaitable[bool]: ...


class OrderPeer(Admin, Protocol):
    # from gateways
    def place(self, batch: PlaceBatch) -> Awaitable[list[Any]]: ...
    def act(self, batch: ActionBatch) -> Awaitable[list[Any]]: ...
    def cart(self, batch: CartBatch) -> Awaitable[list[Any]]: ...
    def checkout(self, batch: CheckoutBatch) -> Awaitable[list[Any]]: ...
    def database_failing_s(self) -> Awaitable[float | None]: ...
    # from stock shards (recovery) and merchant shards (campaigns)
    def stock_state_for(self, stock_shard: int) -> Awaitable[Handover]: ...
    def campaign_changed(self, campaign: Campaign) -> Awaitable[None]: ...
    # resharding
    def stock_routing(self) -> Awaitable[RoutingTable]: ...
    def save_stock_routing(self, table: RoutingTable) -> Awaitable[None]: ...
    def reroute_stock(self, peers: Sequence[StockPeer],
                      table: RoutingTable) -> Awaitable[None]: ...
    def resume(self) -> Awaitable[None]: ...
    def check_invariants(self) -> Awaitable[bool]: ...


class MerchantPeer(Admin, Protocol):
    def authenticate(self, token: str) -> Awaitable[Principal]: ...
    def create(self, merchant_id: str, name: str, payment_window_s: int,
               cart_hold_s: int = 0, request_id: str = "",
               currency: str = "") -> Awaitable[MerchantCreated]: ...
    def update(self, merchant_id: str, payment_window_s: int | None,
               cart_hold_s: int | None) -> Awaitable[dict[str, Any]]: ...
    def get(self, merchant_id: str) -> Awaitable[MerchantView]: ...
    def list_merchants(self, after: str, limit: int) -> Awaitable[list[dict[str, Any]]]: ...
    def create_key(self, merchant_id: str, scopes: list[int], label: str,
                   request_id: str = "") -> Awaitable[KeyCreated]: ...
    def revoke_key(self, merchant_id: str, key_id: str) -> Awaitable[dict[str, Any]]: ...
    def campaigns_of(self, merchant_ids: Sequence[str] | None = None
                     ) -> Awaitable[list[Campaign]]: ...
    def create_campaign(self, merchant_id: str, campaign_id: str, name: str,
                        starts_at_ms: int, ends_at_ms: int, buckets: int,
                        campaign_skus: CampaignSkus) -> Awaitable[dict[str, Any]]: ...
    def get_campaign(self, merchant_id: str, campaign_id: str) -> Awaitable[dict[str, Any]]: ...
    def list_campaigns(self, merchant_id: str) -> Awaitable[list[dict[str, Any]]]: ...
    def end_campaign(self, merchant_id: str, campaign_id: str) -> Awaitable[dict[str, Any]]: ...


class GatewayPeer(Admin, Protocol):
    def ready(self) -> Awaitable[int]: ...
    def drain(self, grace_s: float = 5.0) -> Awaitable[None]: ...
    def reroute_stock(self, peers: Sequence[StockPeer],
                      table: RoutingTable) -> Awaitable[None]: ...


class RayPeer:
    """A port over a Ray actor: ``peer.method(*args)`` is ``handle.method.remote(*args)``,
    an awaitable ObjectRef. A peer of a named actor pickles as the name and looks the
    handle up at its first call: a peer among an actor's constructor arguments is a
    string, not a handle Ray must keep in its object store (where a lost node takes it,
    and the actor's restart with it)."""

    __slots__ = ("_handle", "name")

    def __init__(self, handle: Any = None, name: str = "") -> None:
        self._handle, self.name = handle, name

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = ray.get_actor(self.name, namespace=NAMESPACE)
        return self._handle

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.handle, method).remote

    def __reduce__(self) -> tuple[Any, ...]:
        return (RayPeer, (None, self.name) if self.name else (self._handle, ""))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RayPeer):
            return False
        if self.name or other.name:
            return self.name == other.name
        return bool(self._handle == other._handle)

    def __hash__(self) -> int:
        return hash(self.name or self._handle)


def ray_peers(named: Iterable[tuple[str, Any]]) -> list[Any]:
    """Ports over named actors ((name, handle) pairs); the caller names the port type."""
    return [RayPeer(handle, name) for name, handle in named]


def handle_of(peer: Any) -> Any:
    """The Ray actor behind a peer (to kill it, or in tests)."""
    return peer.handle if isinstance(peer, RayPeer) else peer


async def find_peers(names: Sequence[str], timeout_s: float = 60.0) -> list[Any]:
    """Ports over named actors, waiting for those not created yet (start-up order)."""
    found: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    for name in names:
        while True:
            try:
                found.append(RayPeer(ray.get_actor(name, namespace=NAMESPACE), name))
                break
            except ValueError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
    return found


def wait_all(calls: Iterable[Awaitable[T]], timeout_s: float | None = None) -> list[T]:
    """Blocks until Ray port calls (ObjectRefs) answer; for code outside an event loop
    (the deployment, operators' tools)."""
    refs: list[Any] = list(calls)
    return cast(list[T], ray.get(refs, timeout=timeout_s))


def wait_each(calls: Iterable[Awaitable[T]], timeout_s: float | None = None
              ) -> list[T | ray.exceptions.RayActorError]:
    """As ``wait_all``, but a call to an actor that died answers its RayActorError
    instead of raising (the caller drops that actor)."""
    answers: list[T | ray.exceptions.RayActorError] = []
    for ref in list(calls):
        try:
            answers.append(cast(T, ray.get(ref, timeout=timeout_s)))  # type: ignore[call-overload]
        except ray.exceptions.RayActorError as error:
            answers.append(error)
    return answers


def stop(actor: Any) -> None:
    """Stops the actor behind a peer or handle at once (no restart)."""
    ray.kill(handle_of(actor))
