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
