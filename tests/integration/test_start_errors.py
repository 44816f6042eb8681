"""A deployment that cannot start says why, once, before any actor starts."""

from __future__ import annotations

import os

import pytest
import ray

from flashtx.app import EngineStartError, LocalEngine
from tests.integration.conftest import database_on


def test_a_database_that_does_not_exist_is_one_clear_error() -> None:
    server = os.environ.get("FLASHTX_POSTGRES_DSN") or ""
    if not server:
        from flashtx.adapters import embedded

        server = embedded.postgres_dsn()
    dsn = database_on(server, "flashtx_no_such_database")
    started = ray.is_initialized()
    with pytest.raises(EngineStartError, match="flashtx_no_such_database"):
        LocalEngine.start(postgres_dsn=dsn, redis_url="none")
    assert ray.is_initialized() == started  # nothing was started


async def test_an_outbox_sequence_with_a_cache_is_refused_at_start() -> None:
    """Snapshots take the outbox sequence's last value as their position: with CACHE > 1
    a session hands out smaller ids after it, and replay would miss those rows. The engine
    refuses such a database in one line, before any actor starts."""
    import asyncio

    import asyncpg

    from flashtx.adapters.postgres import Store
    from tests.integration.retrying import fresh_database

    async with fresh_database("flashtx_seq_cache") as dsn:
        await (await Store.open(dsn, 1)).close()
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("ALTER SEQUENCE flashtx.outbox_outbox_id_seq CACHE 20")
        finally:
            await connection.close()
        started = ray.is_initialized()
        with pytest.raises(EngineStartError, match="CACHE 20") as caught:
            await asyncio.to_thread(LocalEngine.start, postgres_dsn=dsn, redis_url="none")
        assert "\n" not in str(caught.value)
        assert ray.is_initialized() == started
