"""The engine's settings for a bench run: what ``--engine-config`` overrides and the API
key's rates, shared by the bench's command line and the targets' set-up."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["BENCH_KEY_RATES", "ORDERS_PER_S_MAX", "UNITS_PER_ORDER_MAX", "engine_overrides"]


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--engine-config FIELD=VALUE`` pairs, numbers as numbers."""
    overrides: dict[str, Any] = {}
    for pair in args.engine_config:
        field, separator, text = pair.partition("=")
        if not separator:
            raise SystemExit(f"--engine-config wants FIELD=VALUE, not {pair!r}")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        overrides[field.strip()] = value
    return overrides


# The default stock is sized for this rate (orders/s) over the whole run, and the local
# engine's per-key order rate raised above it: the bench's one API key must not cap it.
ORDERS_PER_S_MAX = 200_000
UNITS_PER_ORDER_MAX = 2
BENCH_KEY_RATES = {"key_orders_per_s": 10.0 * ORDERS_PER_S_MAX,
                   "key_orders_burst": 10.0 * ORDERS_PER_S_MAX,
                   "merchant_orders_per_s": 10.0 * ORDERS_PER_S_MAX,
                   "merchant_orders_burst": 10.0 * ORDERS_PER_S_MAX,
                   "key_reads_per_s": 100.0 * ORDERS_PER_S_MAX,
                   "key_reads_burst": 100.0 * ORDERS_PER_S_MAX}
