"""Each shard class implements its port: checked by mypy (``_conformance``, in the type
check of ``.ci/run``) and here at run time (every port method exists on the class, is a
coroutine function, and takes the port's parameters by the same names), so that neither
the runtime nor the simulator imports a module only to have it checked."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from flashtx.actors.gateway import Gateway
from flashtx.actors.merchant_shard import MerchantShard
from flashtx.actors.order_shard import OrderShard
from flashtx.actors.ports import GatewayPeer, MerchantPeer, OrderPeer, StockPeer
from flashtx.actors.stock_shard import StockShard


def _conformance(stock: StockShard, order: OrderShard, merchant: MerchantShard,
                 gateway: Gateway) -> tuple[StockPeer, OrderPeer, MerchantPeer, GatewayPeer]:
    """mypy fails the type check here when a shard stops implementing its port."""
    return stock, order, merchant, gateway


PAIRS = [(StockPeer, StockShard), (OrderPeer, OrderShard), (MerchantPeer, MerchantShard),
         (GatewayPeer, Gateway)]


def port_methods(port: type[Any]) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(port)
            if inspect.isfunction(member) and not name.startswith("_")}


def parameters(signature: inspect.Signature) -> list[tuple[str, Any]]:
    """Parameters by name and default, without self and what Ray adds (tracing)."""
    return [(p.name, p.default) for p in signature.parameters.values()
            if p.name != "self" and not p.name.startswith("_ray")]


@pytest.mark.parametrize(("port", "shard"), PAIRS, ids=lambda value: value.__name__)
def test_each_shard_class_implements_every_method_of_its_port(port: type[Any],
                                                              shard: type[Any]) -> None:
    methods = port_methods(port)
    assert methods, f"{port.__name__} declares no methods"
    for name, declared in methods.items():
        implementation = getattr(shard, name, None)
        assert implementation is not None, f"{shard.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(implementation), f"{shard.__name__}.{name}"
        assert parameters(inspect.signature(implementation)) == parameters(declared), (
            f"{shard.__name__}.{name} takes other parameters than {port.__name__}.{name}")


def test_a_missing_method_is_found() -> None:
    class Partial:
        async def stats(self) -> dict[str, Any]:
            return {}

    with pytest.raises(AssertionError, match="lacks"):
        test_each_shard_class_implements_every_method_of_its_port(StockPeer, Partial)
