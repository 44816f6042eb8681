"""The recovery bench's fill writes the engine's current row shapes: what it writes is
what a shard loads (it once broke silently when columns were added)."""

from __future__ import annotations

import secrets

from adapters import embedded
from adapters.postgres import Store
from bench.recovery import MERCHANT, fill
from engine.config import load_config
from tests.integration.conftest import _database, database_on


async def test_the_recovery_fill_is_loaded_back_by_the_shards_query() -> None:
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_recovery_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    try:
        dsn = database_on(server_dsn, name)
        await fill(dsn, 500, batch=200)
        store = await Store.open(dsn, 2)
        try:
            loaded = await store.load_orders(range(load_config().slots_total))
        finally:
            await store.close()
    finally:
        await _database(server_dsn, name, create=False)
    assert len(loaded) == 500
    statuses = sorted(row["status"] for row, _ in loaded)
    assert statuses == [1] * 50 + [2] * 450  # a tenth still reserved, the rest paid
    assert all(row["merchant_id"] == MERCHANT and len(lines) == 1 for row, lines in loaded)
