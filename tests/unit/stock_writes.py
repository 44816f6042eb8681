"""Catalogue writes on a StockLedger, made the way the stock shard makes them."""

from __future__ import annotations

from flashtx.engine.stock import StockLedger, StockLevel

MERCHANT = "m"


def upsert(ledger: StockLedger, sku_id: str, on_hand: int, limit: int, now_ms: int,
           merchant_id: str = MERCHANT, name: str = "", price: int = 100) -> StockLevel:
    """A SKU written as the stock shard writes it: checked, a decrease held back from
    memory, then settled once the write is durable."""
    held_back = ledger.check_on_hand(merchant_id, sku_id, on_hand)
    ledger.hold_back(merchant_id, sku_id, held_back)
    sku = ledger.skus.get((merchant_id, sku_id))
    delta = on_hand - (sku.on_hand if sku is not None else 0) - held_back
    return ledger.settle(merchant_id, sku_id, delta, held_back, now_ms,
                         (name or sku_id, price, limit))


def adjust(ledger: StockLedger, sku_id: str, delta: int, now_ms: int,
           merchant_id: str = MERCHANT) -> StockLevel:
    """An adjustment as the stock shard makes it (check, hold back, settle)."""
    held_back = ledger.check_adjust(merchant_id, sku_id, delta)
    ledger.hold_back(merchant_id, sku_id, held_back)
    return ledger.settle(merchant_id, sku_id, delta, held_back, now_ms)
