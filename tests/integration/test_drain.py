"""A gateway drains when its node's drain file appears (`gateway_drain_file`: what the
Kubernetes preStop hook of cluster/kuberay.yaml writes): health NOT_SERVING on every
service first, then the server stops; a second drain (the deployment's stop) waits for
the one under way."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.test_security import start_gateway

pytestmark = pytest.mark.cluster

SERVICES = ("", "flashtx.v1.OrderService", "flashtx.v1.StockService")


async def statuses(address: str) -> list[str]:
    """Each service's health status name, or the call's error code name."""
    found = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in SERVICES:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                            timeout=5)
                found.append(health_pb2.HealthCheckResponse.ServingStatus.Name(
                    response.status))
            except grpc.aio.AioRpcError as error:
                found.append(error.code().name)
    return found


async def until(address: str, wanted: set[str], deadline: float) -> list[str]:
    while (seen := await statuses(address)) and not set(seen) <= wanted:
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.1)
    return seen


async def test_a_gateway_drains_when_its_drain_file_appears(engine, tmp_path: Path) -> None:
    drain_file = tmp_path / "flashtx-drain"
    address = await start_gateway(engine, 96, gateway_drain_file=str(drain_file),
                                  gateway_drain_delay_s=5.0)
    assert await statuses(address) == ["SERVING"] * len(SERVICES)
    drain_file.touch()
    deadline = time.monotonic() + 60
    # Every service says NOT_SERVING (balancers take the pod out) before the server stops.
    seen = await until(address, {"NOT_SERVING", "UNAVAILABLE"}, deadline)
    assert "NOT_SERVING" in seen, seen
    # Then it stops: no answer on its port.
    assert await until(address, {"UNAVAILABLE"}, deadline) == ["UNAVAILABLE"] * len(SERVICES)
