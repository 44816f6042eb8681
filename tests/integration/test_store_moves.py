"""A unit move's adjustments on the real Postgres: a stock shard whose commit answer was
lost asks whether the move was written (``Store.has_adjustment``) before it puts units
back in memory (the simulator's ``tests/sim/test_campaigns.py`` drives the shard)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from adapters import embedded
from adapters.postgres import Store
from tests.integration.conftest import _database, database_on


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_moves_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    store = await Store.open(database_on(server_dsn, name), 2)
    try:
        yield store
    finally:
        await store.close()
        await _database(server_dsn, name, create=False)


async def test_a_written_move_is_found_by_its_reason(store: Store) -> None:
    reason = f"transfer:{secrets.token_hex(6)}"
    skus = [("m", "a~sale", 7, "A", 50, 0, 1)]
    adjustments = [("m", "a", 3, -2, reason, 1), ("m", "a~sale", 7, 2, reason, 1)]
    assert not await store.has_adjustment(3, "m", "a", reason)
    await store.transfer(adjustments, skus, None)
    assert await store.has_adjustment(3, "m", "a", reason)
    assert await store.has_adjustment(7, "m", "a~sale", reason)
    assert not await store.has_adjustment(3, "m", "a", "transfer:another")
    assert not await store.has_adjustment(3, "m", "b", reason)
