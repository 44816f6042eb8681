"""Starting and stopping a whole flashtx deployment from Python: the composition root."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import ray

from actors.topology import NAMESPACE, Topology
from engine.config import Config, load_config

__all__ = ["LocalEngine", "free_port"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalEngine:
    """A running deployment: Ray (joined or started), shards and gateways on one port."""

    topology: Topology
    config: Config
    owns_ray: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.topology.port}"

    @property
    def operator_key(self) -> str:
        return self.config.operator_key

    @classmethod
    def start(cls, port: int | None = None, ray_address: str | None = None,
              dashboard: bool = False, config: Config | None = None,
              **overrides: Any) -> LocalEngine:
        """Starts a deployment. `port=None` or 0 picks a free port; `overrides` are
        Config fields (gateways=2, stock_shards=4, ...)."""
        config = config or load_config(**overrides)
        if not config.operator_key:
            config = config.replace(operator_key=f"ftx1.operator.{secrets.token_urlsafe(24)}")
        owns_ray = not ray.is_initialized()
        if owns_ray:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=ray_address, namespace=NAMESPACE, include_dashboard=dashboard,
                     log_to_driver=False,
                     **({} if ray_address else {"num_cpus": os.cpu_count() or 2}))
        topology = Topology.start(config, port or free_port())
        return cls(topology, config, owns_ray)

    def stats(self) -> dict[str, Any]:
        return self.topology.stats()

    def check_invariants(self) -> None:
        self.topology.check_invariants()

    def stop(self) -> None:
        self.topology.stop()
        if self.owns_ray:
            ray.shutdown()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
