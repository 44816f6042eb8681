"""flashtx: an actor-based, high-throughput transaction engine for commerce peaks."""

from flashtx.app import LocalEngine

__all__ = ["LocalEngine"]
__version__ = "0.1.0"
