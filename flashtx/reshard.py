"""`flashtx reshard`: adds stock shards to a running deployment, while orders flow.

The deployment's `flashtx serve` process owns its actors (new shards must be its own, or
they would end with the command that asked for them), so the command asks it through
Postgres: it writes a request (setting `reshard_request`), `serve` sees it within
`POLL_S`, runs the reshard (`Topology.reshard_stock`: order shards pause stock-changing
work for a moment, every stock shard rebuilds its slots, work resumes; a failure rolls
back) and writes the outcome (setting `reshard_result`) that the command waits for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import asyncpg

from flashtx.adapters.postgres import DATABASE_ERRORS

if TYPE_CHECKING:
    from flashtx.app import LocalEngine

log = logging.getLogger(__name__)
POLL_S = 1.0
# Connecting also fails with ValueError when the DSN is not one.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, ValueError)
REQUEST, RESULT = "reshard_request", "reshard_result"


class ReshardError(RuntimeError):
    """The reshard was refused, failed or was not answered (the message says which)."""


async def _read(connection: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    value = await connection.fetchval("SELECT value FROM flashtx.settings WHERE name = $1",
                                      name)
    return None if value is None else dict(json.loads(value))


async def _write(connection: asyncpg.Connection, name: str, value: dict[str, Any]) -> None:
    await connection.execute(
        "INSERT INTO flashtx.settings (name, value) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", name, json.dumps(value))


async def request(dsn: str, stock_shards: int, timeout_s: float) -> dict[str, Any]:
    """Asks the serving deployment on `dsn` for `stock_shards` stock shards and waits for
    the outcome: the result document, or ReshardError."""
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except _CONNECT_ERRORS as error:
        raise ReshardError(f"cannot reach the database: {error}") from error
    try:
        now_ms = int(time.time() * 1000)
        ask = {"id": secrets.token_hex(8), "stock_shards": stock_shards, "at_ms": now_ms,
               "expires_at_ms": now_ms + int(timeout_s * 1000)}
        try:
            await _write(connection, REQUEST, ask)
        except asyncpg.UndefinedTableError:
            raise ReshardError("no flashtx deployment has used this database") from None
        deadline = time.monotonic() + timeout_s
        while True:
            result = await _read(connection, RESULT)
            if result is not None and result.get("id") == ask["id"] and (
                    result["state"] != "running"):  # taken: the outcome is still to come
                if result["state"] != "done":
                    raise ReshardError(str(result.get("message", "the reshard failed")))
                return result
            if time.monotonic() > deadline:
                raise ReshardError(await _give_up(connection, str(ask["id"]), timeout_s))
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def _give_up(connection: asyncpg.Connection, ask_id: str, timeout_s: float) -> str:
    """What is known when the wait ends: the request is withdrawn if no `serve` took it
    (then nothing changed, and nothing will), else it is running or ended meanwhile.
    Taking a request (``_take``) and withdrawing it lock the same row: never both."""
    async with connection.transaction():
        asked = await connection.fetchval(
            "SELECT value FROM flashtx.settings WHERE name = $1 FOR UPDATE", REQUEST)
        result = await _read(connection, RESULT)
        if result is None or result.get("id") != ask_id:
            if asked is not None and json.loads(asked).get("id") == ask_id:
                await connection.execute("DELETE FROM flashtx.settings WHERE name = $1",
                                         REQUEST)
            return (f"no answer within {timeout_s:g} s: is `flashtx serve` running on this"
                    " database? (the request is withdrawn: nothing was changed)")
    if result.get("state") == "running":
        return (f"no outcome within {timeout_s:g} s: `flashtx serve` is running the reshard"
                f" (to {result.get('stock_shards')} stock shards); `flashtx status` shows"
                " the stock shards once it is done (or rolled back)")
    if result.get("state") == "done":
        return (f"the reshard ended after {timeout_s:g} s: done, {result.get('stock_shards')}"
                " stock shards")
    return str(result.get("message", "the reshard failed"))


async def _take(connection: asyncpg.Connection, asked: dict[str, Any]) -> bool:
    """Marks the request as running, unless its command withdrew it meanwhile."""
    async with connection.transaction():
        current = await connection.fetchval(
            "SELECT value FROM flashtx.settings WHERE name = $1 FOR UPDATE", REQUEST)
        if current is None or json.loads(current).get("id") != asked["id"]:
            return False
        await _write(connection, RESULT, {"id": asked["id"], "state": "running",
                                          "stock_shards": asked.get("stock_shards")})
        return True


def serve_pending(engine: LocalEngine) -> dict[str, Any] | None:
    """Runs a reshard request that has no outcome yet (called by `flashtx serve` every
    POLL_S); its outcome, or None when there was none."""
    dsn = engine.config.postgres_dsn
    if dsn == "none":
        return None

    async def pending() -> dict[str, Any] | None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            asked, answered = (await _read(connection, REQUEST),
                               await _read(connection, RESULT))
            if asked is None or (answered is not None and answered.get("id") == asked["id"]):
                return None
            if time.time() * 1000 > asked.get("expires_at_ms", 0):
                return None  # its command gave up waiting: never run it behind its back
            return asked if await _take(connection, asked) else None
        finally:
            await connection.close()

    try:
        asked = asyncio.run(pending())
    except DATABASE_ERRORS as error:  # the database is away: next time
        log.warning("reshard requests: cannot read them: %r", error)
        return None
    if asked is None:
        return None
    current = len(engine.topology.stock.peers)
    wanted = int(asked.get("stock_shards", 0))
    outcome: dict[str, Any] = {"id": asked["id"], "stock_shards_before": current}
    if wanted <= current:
        outcome.update(state="refused", stock_shards=current,
                       message=f"the deployment has {current} stock shards; a reshard only"
                               f" adds shards (asked for {wanted})")
    else:
        try:
            table = engine.topology.reshard_stock(wanted)
            outcome.update(state="done", stock_shards=table.shards,
                           routing_version=table.version)
        except Exception as error:  # rolled back (or not): the operator learns which
            outcome.update(state="failed", stock_shards=len(engine.topology.stock.peers),
                           message=f"{type(error).__name__}: {error}")

    async def answer() -> None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await _write(connection, RESULT, outcome)
        finally:
            await connection.close()

    log.warning("reshard %s: %s", asked["id"], outcome)
    for _ in range(30):  # the outcome must reach the operator; the database may blink
        try:
            asyncio.run(answer())
            break
        except DATABASE_ERRORS as error:
            log.warning("reshard %s: writing its outcome failed: %r", asked["id"], error)
            time.sleep(POLL_S)
    return outcome
