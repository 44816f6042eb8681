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


async def test_a_stop_asked_for_while_serve_starts_drains_once_it_has_started() -> None:
    """SIGTERM as soon as Ray has started, while the shards and gateways are still being
    created: `serve` finishes starting, then drains and exits 0 (Ray's own handler would
    end the process at once, mid-start, with no drain)."""
    import asyncio
    import signal
    import sys

    from flashtx.app import free_port, new_operator_key
    from tests.integration.retrying import fresh_database

    async with fresh_database("flashtx_stop_at_start") as dsn:
        env = {**os.environ, "FLASHTX_POSTGRES_DSN": dsn, "FLASHTX_REDIS_URL": "none",
               "FLASHTX_OPERATOR_KEY": new_operator_key(), "RAY_USAGE_STATS_ENABLED": "0"}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flashtx", "serve", "--port", str(free_port()), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        assert server.stdout is not None
        seen: list[str] = []

        async def until_ray_is_up() -> None:
            assert server.stdout is not None
            async for line in server.stdout:  # ray.init's last line: the shards are next
                seen.append(line.decode())
                if "Started a local Ray instance" in seen[-1]:
                    server.send_signal(signal.SIGTERM)
                    return
            raise AssertionError("serve ended before Ray started: " + "".join(seen)[-3000:])

        try:
            await asyncio.wait_for(until_ray_is_up(), 120)
        except BaseException:
            server.kill()
            raise
        rest = (await asyncio.wait_for(server.stdout.read(), 120)).decode()
        code = await asyncio.wait_for(server.wait(), 60)
        output = "".join(seen) + rest
        assert code == 0, output[-3000:]
        assert "flashtx serving" in output and "draining gateways" in output, output[-3000:]


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
