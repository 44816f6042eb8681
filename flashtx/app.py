"""Starting and stopping a whole flashtx deployment from Python: the composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import ray

from flashtx.actors.routing import NAMESPACE
from flashtx.actors.topology import Topology
from flashtx.adapters import embedded
from flashtx.adapters.lease import DatabaseHeld, DatabaseLease
from flashtx.adapters.postgres import Store, Timeouts, UnsafeDatabase
from flashtx.engine.config import Config, load_config
from flashtx.engine.merchants import hash_secret
from flashtx.engine.sharding import RoutingTable

log = logging.getLogger(__name__)
RAY_START_TRIES = 5  # local Ray starts, when one times out on a busy host (each ~35 s)

__all__ = ["LocalEngine", "free_port"]


# Ray's workers listen on 10002-19999 by default; outgoing connections take their local
# ports from the kernel's ephemeral range. A port picked between the two is not taken
# meanwhile by a connection (which would make the later bind fail with "address in use").
_PORTS_LOW = 20_000


def _ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(p) for p in ports.read().split())
            return low, high
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port() -> int:
    """A port free on every address now, outside the ranges Ray and outgoing connections
    take ports from where the system leaves room for that (else any free port)."""
    low = _ephemeral_ports()[0]
    candidates = random.sample(range(_PORTS_LOW, low), min(200, max(0, low - _PORTS_LOW)))
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def new_operator_key() -> str:
    return f"ftx1.operator.{secrets.token_hex(4)}.{secrets.token_urlsafe(24)}"


@dataclass
class LocalEngine:
    """A running deployment: Ray (joined or started), shards and gateways on one port."""

    topology: Topology
    config: Config
    owns_ray: bool
    # The operator key when this start chose it (first start, or given); None when only
    # its hash is known (it was shown at the first start).
    operator_key: str | None
    # The deployment's hold on its database (adapters/lease.py); None without one.
    lease: DatabaseLease | None = None

    def lease_lost(self) -> bool:
        """Another deployment took the database: this one must stop."""
        return self.lease is not None and self.lease.lost.is_set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.topology.port}"

    @classmethod
    def start(cls, port: int | None = None, ray_address: str | None = None,
              dashboard: bool = False, config: Config | None = None,
              **overrides: Any) -> LocalEngine:
        """Starts a deployment. `port=None` or 0 picks a free port; `overrides` are
        Config fields (gateways=2, stock_shards=4, postgres_dsn=..., ...)."""
        config = config or load_config(**overrides)
        config = config.replace(postgres_dsn=config.postgres_dsn or embedded.postgres_dsn(),
                                redis_url=config.redis_url or embedded.redis_url())
        config, operator_key, stock_table = asyncio.run(_prepare_database(config))
        lease = _lease(config)
        try:
            return cls._start(config, operator_key, stock_table, lease, port, ray_address,
                              dashboard)
        except BaseException:
            if lease is not None:
                lease.release()
            raise

    @classmethod
    def _start(cls, config: Config, operator_key: str | None,
               stock_table: RoutingTable | None, lease: DatabaseLease | None,
               port: int | None, ray_address: str | None, dashboard: bool) -> LocalEngine:
        owns_ray = not ray.is_initialized()
        if owns_ray:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # Ray lowers its workers' priority (nice 15) by default; here the workers are
            # the engine, and must not starve behind its own clients or Postgres.
            os.environ.setdefault("RAY_worker_niceness", "0")
            local: dict[str, Any] = {"num_cpus": os.cpu_count() or 2}
            if config.metrics_export_port:
                local["_metrics_export_port"] = config.metrics_export_port
            # Without an address, always a new local cluster: never a stray `ray start`
            # cluster that happens to run on this machine.
            with _stop_signal_kept():
                for attempt in range(1, RAY_START_TRIES + 1):
                    try:
                        ray.init(address=ray_address or "local", namespace=NAMESPACE,
                                 include_dashboard=dashboard, log_to_driver=False,
                                 logging_config=ray.LoggingConfig(
                                     encoding=config.log_format.upper(),
                                     log_level=config.log_level),
                                 **({} if ray_address else local))
                        break
                    except Exception as error:
                        # Ray gives its raylet a fixed 30 s to register (node.py): a host
                        # short of CPU misses it. A new local cluster is tried again.
                        if (ray_address or attempt == RAY_START_TRIES
                                or "timed out during startup" not in str(error)):
                            raise
                        log.warning("Ray did not start in time (%s); trying again", error)
                        ray.shutdown()
        topology = Topology.start(config, port or free_port(), stock_table)
        return cls(topology, config, owns_ray, operator_key, lease)

    def stats(self) -> dict[str, Any]:
        return self.topology.stats()

    def check_invariants(self) -> None:
        self.topology.check_invariants()

    def stop(self) -> None:
        try:
            self.topology.stop()
            if self.owns_ray:
                ray.shutdown()
        finally:
            if self.lease is not None:
                self.lease.release()  # after the shards stopped writing

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _stop_signal_kept() -> Iterator[None]:
    """ray.init replaces the SIGTERM handler with one that exits at once (no drain, and
    in the middle of whatever the process does). A caller that set its own (`flashtx
    serve`: stop, then drain) keeps it: SIGTERM waits, blocked, while Ray starts, and is
    delivered to the caller's handler once it is back."""
    previous = signal.getsignal(signal.SIGTERM)
    own = callable(previous) and threading.current_thread() is threading.main_thread()
    if not own:
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


class EngineStartError(RuntimeError):
    """The engine cannot start as configured (the message says why)."""


def _without_password(config: Config) -> str:
    parts = urllib.parse.urlsplit(config.postgres_dsn)
    if parts.password is None:
        return config.postgres_dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def stored_stock_layout(config: Config, table: RoutingTable | None
                        ) -> tuple[Config, RoutingTable | None]:
    """The stock routing table a reshard stored wins over `stock_shards` (the shards it
    names are where the stock is); a table for another slot count cannot be used."""
    if table is None:
        return config, None
    if len(table.shard_of_slot) != config.slots_total:
        raise EngineStartError(
            f"the database's stock routing table has {len(table.shard_of_slot)} slots and"
            f" slots_total is {config.slots_total}: start with slots_total ="
            f" {len(table.shard_of_slot)}")
    if table.shards != config.stock_shards:
        log.warning("stock shards: %d, as the last reshard left them (stock_shards = %d"
                    " is for a new database)", table.shards, config.stock_shards)
    return config.replace(stock_shards=table.shards), table


def _lease(config: Config) -> DatabaseLease | None:
    """The deployment's lease on its database (none without a database), or one line
    saying who holds it."""
    if config.postgres_dsn == "none":
        return None
    timeouts = Timeouts.of(config)
    lease = DatabaseLease(config.postgres_dsn, connect_timeout_s=timeouts.connect_s,
                          server_settings=timeouts.server_settings())
    try:
        lease.acquire(config.postgres_lease_wait_s)
    except DatabaseHeld as error:
        raise EngineStartError(f"cannot use the database {_without_password(config)}:"
                               f" {error}") from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise EngineStartError(f"cannot use the database {_without_password(config)}:"
                               f" {error}") from error
    return lease


async def _prepare_database(config: Config
                            ) -> tuple[Config, str | None, RoutingTable | None]:
    """The operator key (``_operator_key``) and the stock layout a reshard stored. The
    database is opened (and migrated) here first: one clear error before any actor
    starts, rather than every shard failing its start."""
    if config.postgres_dsn == "none":
        config, operator_key = await _operator_key(config, None)
        return config, operator_key, None
    try:
        store = await Store.open(config.postgres_dsn, 1)
    except (OSError, asyncpg.PostgresError, UnsafeDatabase) as error:
        raise EngineStartError(f"cannot use the database {_without_password(config)}:"
                               f" {error}") from error
    try:
        config, operator_key = await _operator_key(config, store)
        config, table = stored_stock_layout(config, await store.stock_routing())
    finally:
        await store.close()
    return config, operator_key, table


async def _operator_key(config: Config, store: Store | None) -> tuple[Config, str | None]:
    """A configured key wins. Else the first start generates one and stores its hash;
    later starts use the stored hash (the key itself was shown once)."""
    if config.operator_key:
        return config.replace(operator_key_sha256=hash_secret(config.operator_key)), (
            config.operator_key)
    candidate = new_operator_key()
    if store is None:
        return config.replace(operator_key=candidate,
                              operator_key_sha256=hash_secret(candidate)), candidate
    stored = await store.setting("operator_key_sha256", hash_secret(candidate))
    chosen = candidate if stored == hash_secret(candidate) else None
    return config.replace(operator_key_sha256=stored), chosen
