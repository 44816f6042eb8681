"""StockShard: owns the stock ledger for the slots routed to it (key: merchant + SKU)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from actors import clock
from engine.config import Config
from engine.errors import DomainError, ResultCode
from engine.stock import StockLedger, StockLevel

log = logging.getLogger(__name__)

Reserve = tuple[str, str, str, tuple[tuple[str, int], ...], int]
SkuUpsert = tuple[str, str, str, int, int, int]


class StockShard:
    def __init__(self, index: int, config: Config) -> None:
        self.index = index
        self._config = config
        self._ledger = StockLedger(config.skus_per_shard_max)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    # --- hot path ---------------------------------------------------------------------------

    async def reserve(self, items: Sequence[Reserve]) -> list[tuple[ResultCode, object]]:
        """items: (order_id, merchant_id, buyer_id, lines, expires_at_ms); all-or-nothing
        per order on this shard."""
        now = clock.now_ms()
        reserve = self._ledger.reserve
        results = [reserve(order_id, merchant_id, buyer_id, lines, expires_at_ms, now)
                   for order_id, merchant_id, buyer_id, lines, expires_at_ms in items]
        self._journal()
        return results

    async def commit(self, order_ids: Sequence[str]) -> list[tuple[ResultCode, str]]:
        now = clock.now_ms()
        results = [self._ledger.commit(order_id, now) for order_id in order_ids]
        self._journal()
        return results

    async def release(self, order_ids: Sequence[str]) -> list[bool]:
        now = clock.now_ms()
        results = [self._ledger.release(order_id, now) for order_id in order_ids]
        self._journal()
        return results

    async def levels(self, keys: Sequence[tuple[str, str]]) -> list[StockLevel | None]:
        """keys: (merchant_id, sku_id); None for an unknown SKU."""
        now = clock.now_ms()
        skus = self._ledger.skus
        level = self._ledger.level
        return [level(m, s, now) if (m, s) in skus else None for m, s in keys]

    # --- catalogue --------------------------------------------------------------------------

    async def upsert(self, items: Sequence[SkuUpsert]) -> list[StockLevel | DomainError]:
        """items: (merchant_id, sku_id, name, price_minor, on_hand, per_buyer_limit)."""
        now = clock.now_ms()
        results: list[StockLevel | DomainError] = []
        for merchant_id, sku_id, name, price, on_hand, limit in items:
            try:
                results.append(self._ledger.upsert_sku(merchant_id, sku_id, name, price,
                                                       on_hand, limit, now))
            except DomainError as error:
                results.append(error)
        self._journal()
        return results

    async def adjust(self, merchant_id: str, sku_id: str, delta: int,
                     reason: str) -> StockLevel:
        level = self._ledger.adjust(merchant_id, sku_id, delta, reason, clock.now_ms())
        self._journal()
        return level

    # --- housekeeping -----------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        return {"index": self.index, "skus": len(self._ledger.skus),
                "reservations": len(self._ledger.reservations)}

    async def check_invariants(self) -> bool:
        self._ledger.check_invariants()
        return True

    def _journal(self) -> None:
        # Persistence drains the ledger's changes here; in memory they are dropped.
        self._ledger.drain_changes()

    async def _sweep_forever(self) -> None:
        interval_s = self._config.expiry_sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            try:
                expired = self._ledger.expire(clock.now_ms(), self._config.expiry_sweep_items_max)
                if expired:
                    log.info("stock shard %d freed %d expired reservations", self.index,
                             len(expired))
                    self._journal()
            except Exception:  # the loop must outlive its own errors
                log.exception("stock expiry sweep failed")
