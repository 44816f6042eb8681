"""flashtx: an actor-based, high-throughput transaction engine for commerce peaks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flashtx.app import LocalEngine

__all__ = ["LocalEngine"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`flashtx.LocalEngine` on first use: an actor's process imports its own modules
    (``flashtx.actors.order_shard``), not the whole application (measured: 0.97 s of
    imports per actor process with it, on every start and restart)."""
    if name == "LocalEngine":
        from flashtx.app import LocalEngine

        return LocalEngine
    raise AttributeError(f"module 'flashtx' has no attribute {name!r}")
