"""Garbage collection in engine processes: long-lived state is frozen out of the scans.

A shard keeps every live order, hold and key in memory, and CPython's cyclic collector
rescans all of it on every full collection: measured with ``python -m bench.shard_cpu``,
collections took ~28 % of the shards' CPU per placed order (bench/RESULTS.md). Every
`gc_freeze_interval_ms` a background thread collects what is not frozen yet (the objects
made since the last round: garbage among them is freed) and freezes the survivors
(``gc.freeze``), which later collections skip. Frozen objects are still freed by
reference counting as usual; only a reference cycle that was alive at a freeze and dies
afterwards is missed, so every `gc_full_interval_s` everything is unfrozen and collected
once (one longer pause, bounded by the live state).

Installed by the Ray actor classes made in actors.topology (``engine_process``), never in
test, simulator or client processes.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any, TypeVar

from engine.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")
_installed = False


def install(config: Config) -> None:
    """Starts the freeze thread once per process (later calls do nothing)."""
    global _installed
    if _installed or config.gc_freeze_interval_ms <= 0:
        return
    _installed = True
    threading.Thread(target=_freeze_forever, name="gc-freeze", daemon=True,
                     args=(config.gc_freeze_interval_ms / 1000, config.gc_full_interval_s),
                     ).start()


def _freeze_forever(interval_s: float, full_interval_s: float) -> None:
    full_at = time.monotonic() + full_interval_s
    while True:
        time.sleep(interval_s)
        started = time.perf_counter()
        full = time.monotonic() >= full_at
        if full:
            gc.unfreeze()
            full_at = time.monotonic() + full_interval_s
        gc.collect()
        gc.freeze()
        took_ms = (time.perf_counter() - started) * 1000
        if full or took_ms > 100:
            log.info("gc: %s collection took %.0f ms; %d objects frozen",
                     "full" if full else "young", took_ms, gc.get_freeze_count())


def engine_process(cls: type[T]) -> type[T]:
    """`cls`, whose instances first install the GC policy of the Config they are given
    (for the Ray actor classes: only their processes run it)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        config = next((a for a in (*args, *kwargs.values()) if isinstance(a, Config)), None)
        if config is not None:
            install(config)
        cls.__init__(self, *args, **kwargs)  # type: ignore[misc]

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                       "__module__": cls.__module__, "__doc__": cls.__doc__})
