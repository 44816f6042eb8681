"""The shape every target's client has, and what every target shares (the package's
docstring says what a target is)."""

from __future__ import annotations

import sys
from typing import Protocol

from flashtx.bench.scenarios import OrderSpec

__all__ = ["Outcome", "TargetClient", "report_first_error"]

# (code, order reference): the reference is what pay/cancel/verification use later.
Outcome = tuple[str, str]


_reported: set[str] = set()


def report_first_error(target: str, error: BaseException) -> None:
    """Prints the first unexpected error of each target in a worker: counted, not hidden."""
    if target not in _reported:
        _reported.add(target)
        print(f"{target}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


class TargetClient(Protocol):
    name: str
    # Whether a retry with the same idempotency key should answer "replayed" (engine only).
    checks_replay: bool

    async def open(self) -> None: ...

    async def place(self, orders: list[OrderSpec], batch: bool) -> list[Outcome]: ...

    async def read(self, sku_id: str) -> str: ...

    async def pay(self, order_ref: str) -> str: ...

    async def cancel(self, order_ref: str, order: OrderSpec) -> str: ...

    async def close(self) -> None: ...
