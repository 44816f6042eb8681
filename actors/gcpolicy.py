"""Garbage collection in engine processes: fewer, larger young collections.

A shard keeps every live order, hold and key in memory, and allocates a few container
objects per order on the hot path. With CPython's default thresholds (a young collection
every 700 allocations) the collector ran constantly and its collections cost ~28 % of
the shards' CPU per placed order (``python -m bench.shard_cpu --gc default``). Engine
processes raise the first threshold to `gc_young_objects` allocations (and collect the
middle generation less often), which removed most of that cost.

Freezing long-lived objects out of the scans (``gc.freeze``) gained a little more but
was not kept: a reference cycle alive at a freeze and dead afterwards (an error kept
with its traceback in a batch in flight, say) is never reclaimed, and the only cure,
unfreezing everything and collecting it, is a pause as long as the live state is big.

Installed by the Ray actor classes made in actors.topology (``engine_process``), never in
test, simulator or client processes.
"""

from __future__ import annotations

import gc
from typing import Any, TypeVar

from flashtx.actors import metrics
from flashtx.engine.config import Config

T = TypeVar("T")
_installed = False


def install(config: Config) -> None:
    """Sets this process's collector thresholds once (later calls do nothing)."""
    global _installed
    if _installed or config.gc_young_objects <= 0:
        return
    _installed = True
    gc.set_threshold(config.gc_young_objects, 20, 10)


def engine_process(cls: type[T]) -> type[T]:
    """`cls`, whose instances first install the GC policy of the Config they are given
    and record their process's start (for the Ray actor classes: only their processes
    run it)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        config = next((a for a in (*args, *kwargs.values()) if isinstance(a, Config)), None)
        if config is not None:
            install(config)
        metrics.record_start(cls.__name__)
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                       "__module__": cls.__module__, "__doc__": cls.__doc__})
