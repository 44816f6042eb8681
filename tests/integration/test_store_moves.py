"""A unit move's adjustments on the real Postgres: a stock shard whose commit answer was
lost asks whether the move was written (``Store.has_adjustment``) before it puts units
back in memory (the simulator's ``tests/sim/test_campaigns.py`` drives the shard)."""

from __future__ import annotations

import secrets

from flashtx.adapters.postgres import Store


async def test_a_written_move_is_found_by_its_reason(own_store: Store) -> None:
    reason = f"transfer:{secrets.token_hex(6)}"
    skus = [("m", "a~sale", 7, "A", 50, 0, 1)]
    adjustments = [("m", "a", 3, -2, reason, 1), ("m", "a~sale", 7, 2, reason, 1)]
    assert not await own_store.has_adjustment(3, "m", "a", reason)
    await own_store.transfer(adjustments, skus, None)
    assert await own_store.has_adjustment(3, "m", "a", reason)
    assert await own_store.has_adjustment(7, "m", "a~sale", reason)
    assert not await own_store.has_adjustment(3, "m", "a", "transfer:another")
    assert not await own_store.has_adjustment(3, "m", "b", reason)
