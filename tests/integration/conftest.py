"""One real local Ray cluster and one flashtx deployment for the whole session, on a
database of its own on the real Postgres (FLASHTX_POSTGRES_DSN, else an embedded one);
each test makes its own merchant, so tests do not see each other's data."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
import ray

from flashtx.adapters import embedded
from flashtx.adapters.postgres import Store
from flashtx.app import LocalEngine, free_port, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, stock_pb2
from tests.integration.retrying import until_answered
from tests.integration.tcp_proxy import CuttableProxy, proxied, proxied_dsn

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Ray exports metrics every second (not every ten) in tests: metric tests wait less.
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")

_merchants = itertools.count()
# Merchant ids are unique per session: Redis (event streams) outlives a test database.
SESSION = secrets.token_hex(3)
# JSON logs: test_logs reads them from this engine's processes (no deployment of its own).
ENGINE_OPTIONS = dict(gateways=2, stock_shards=2, order_shards=2, expiry_sweep_interval_ms=50,
                      auth_cache_ttl_ms=1000, journal_entries_max=2000, commit_orders_max=500,
                      log_format="json")


async def _database(server_dsn: str, name: str, create: bool) -> None:
    connection = await asyncpg.connect(server_dsn)
    try:
        if create:
            await connection.execute(f'CREATE DATABASE "{name}"')
        else:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start Ray clusters (or serve processes) of their own run before the
    shared engine starts: they need not share the CPU with its idle actors."""
    def uses_engine(item: pytest.Item) -> bool:
        return "engine" in getattr(item, "fixturenames", ())

    items.sort(key=lambda item: "/integration/" in str(item.fspath) and uses_engine(item))


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    """A fresh database on the configured (or embedded) server, dropped afterwards."""
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_test_{secrets.token_hex(4)}"
    asyncio.run(_database(server_dsn, name, create=True))
    yield database_on(server_dsn, name)
    asyncio.run(_database(server_dsn, name, create=False))


def database_on(server_dsn: str, name: str) -> str:
    """The DSN of database `name` on the server of `server_dsn`."""
    base, _, query = server_dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def run_on_a_new_database(prefix: str, run: Callable[[str], T]) -> T:
    """`run(dsn)` on a database of its own on the test server, dropped afterwards."""
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_database(server_dsn, name, create=True))
    try:
        return run(database_on(server_dsn, name))
    finally:
        asyncio.run(_database(server_dsn, name, create=False))


def run_bench(module: str, args: list[str], data_dir: Path, timeout_s: float
              ) -> subprocess.CompletedProcess[str]:
    """Runs `python -m module args --dsn DSN` on a database of its own, as an operator
    runs a bench: its own Ray, its data under `data_dir`."""
    return run_on_a_new_database(module.rsplit(".", 1)[-1], lambda dsn: subprocess.run(
        [sys.executable, "-m", module, *args, "--dsn", dsn], cwd=REPO_ROOT,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(data_dir)},
        capture_output=True, text=True, timeout=timeout_s))


def unique_merchant_id(prefix: str) -> str:
    return f"{prefix}-{SESSION}-{next(_merchants)}"


@pytest.fixture(scope="session")
def redis_link() -> CuttableProxy:
    """The engine reaches Redis through this proxy, so a test can cut the link."""
    url = urlsplit(embedded.redis_url())
    if url.scheme == "unix":
        return CuttableProxy(url.path)
    return CuttableProxy((url.hostname or "127.0.0.1", url.port or 6379))


@pytest.fixture(scope="session")
def postgres_link(database_dsn: str) -> CuttableProxy:
    """The engine reaches Postgres through this proxy, so a test can cut the link."""
    proxy, _ = proxied(database_dsn)
    return proxy


@pytest.fixture(scope="session")
def engine(database_dsn: str, postgres_link: CuttableProxy,
           redis_link: CuttableProxy) -> Iterator[LocalEngine]:
    _, through_proxy = proxied_dsn(database_dsn, postgres_link)
    with LocalEngine.start(postgres_dsn=through_proxy, operator_key=new_operator_key(),
                           redis_url=f"redis://127.0.0.1:{redis_link.port}/0",
                           metrics_export_port=free_port(), **ENGINE_OPTIONS) as running:
        yield running


@pytest.fixture(autouse=True)
def _restore_topology(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the shared engine leaves it as it found it: a controller it
    started is stopped, gateways and connectors it added are removed, its clock shift is
    undone. (A stock reshard cannot be undone: the engine keeps the new shard count.)"""
    if "engine" not in request.fixturenames:
        yield
        return
    topology = request.getfixturevalue("engine").topology
    gateways, connectors = list(topology.gateways), set(topology.connectors)
    controller, clock_offset_ms = topology.controller, topology.clock_offset_ms
    yield
    if topology.controller is not None and controller is None:
        topology.stop_controller()
    for gateway in [g for g in topology.gateways if g not in gateways]:
        topology.remove_gateway(gateway)
    for name in set(topology.connectors) - connectors:
        topology.remove_connector(name)
    if topology.clock_offset_ms != clock_offset_ms:
        topology.shift_clock(clock_offset_ms)
    assert all(g in topology.gateways for g in gateways), "a shared gateway died"


@pytest.fixture
async def operator(engine: LocalEngine) -> AsyncIterator[Client]:
    async with Client(engine.address, engine.operator_key) as client:
        yield client


@pytest.fixture
async def shop(engine: LocalEngine, operator: Client) -> AsyncIterator[Client]:
    """An admin client of a fresh merchant. The call retries UNAVAILABLE as any client
    does: a new channel can land on a gateway that a previous test's autoscaling is
    stopping."""
    request = merchant_pb2.CreateMerchantRequest(merchant_id=unique_merchant_id("shop"),
                                                 name="Test shop")
    outcome, created = await until_answered(
        lambda: operator.merchants.CreateMerchant(request, timeout=30))
    assert outcome == "OK", outcome
    async with Client(engine.address, created.admin_key_secret) as client:
        yield client


async def add_skus(client: Client, *skus: stock_pb2.Sku) -> None:
    response = await client.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=list(skus)))
    assert all(r.code == 1 for r in response.results), response


@pytest.fixture
async def own_store() -> AsyncIterator[Store]:
    """A Store on a database of its own (the shared engine must not see these rows),
    dropped afterwards."""
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_own_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    store = await Store.open(database_on(server_dsn, name), 4)
    try:
        yield store
    finally:
        await store.close()
        await _database(server_dsn, name, create=False)


async def restarted_order_shards(shards: list[Any], deadline_s: float = 90
                                 ) -> list[dict[str, Any]]:
    """Kills the order shards; answers their stats once Ray has restarted every one and
    each has recovered."""
    before = ray.get([s.stats.remote() for s in shards])
    for shard in shards:
        ray.kill(shard, no_restart=False)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            after = ray.get([s.stats.remote() for s in shards], timeout=5)
            if all(a["instance"] != b["instance"] for a, b in zip(after, before, strict=True)):
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "the order shards did not come back"
        await asyncio.sleep(0.1)
    ray.get([s.check_invariants.remote() for s in shards])  # answers once recovered
    return list(ray.get([s.stats.remote() for s in shards]))
