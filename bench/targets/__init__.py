"""What the load generator talks to: the engine and the three baselines, behind one shape.

A target is set up once in the parent process (``prepare``: create the merchant, load the
catalog, start a server) and answers a picklable ``info`` dict; each worker process then
builds its own client from that dict with ``connect(kind, info)``.

Every operation answers an outcome code, a short lower-case string: ``ok`` (accepted),
``replayed``, ``out_of_stock``, ``limit_exceeded``, ``conflict``, ``overloaded``,
``unavailable``, ``invalid``, ``not_found``, ``failed_precondition``,
``campaign_not_active``, ``timeout`` or ``error``. Everything but ``ok`` counts as
rejected, under its code.
"""

from __future__ import annotations

from typing import Any

from flashtx.bench.targets.base import Outcome, TargetClient, report_first_error

__all__ = ["Outcome", "TargetClient", "connect", "report_first_error"]

def connect(kind: str, info: dict[str, Any]) -> TargetClient:
    """The worker-side client for a prepared target."""
    if kind in ("engine", "echo"):
        from flashtx.bench.targets.grpc_client import GrpcClient

        return GrpcClient(kind, info)
    if kind == "postgres":
        from flashtx.bench.targets.postgres import PostgresClient

        return PostgresClient(info)
    if kind == "copy":
        from flashtx.bench.targets.bare_copy import CopyClient

        return CopyClient(info)
    if kind == "redis":
        from flashtx.bench.targets.redis_lua import RedisClient

        return RedisClient(info)
    raise ValueError(f"unknown target {kind!r}")
