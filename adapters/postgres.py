"""Postgres: versioned migrations and the reads and writes the actors make (asyncpg).

Writes from the hot path are group commits: many orders' rows go in one transaction
with ``COPY``, together with their outbox rows. Recovery reads rebuild one shard's state
from the ledger tables (filtered by slot).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from flashtx.engine.config import Config
from flashtx.engine.errors import IdempotencyConflict, InvariantViolation
from flashtx.engine.sharding import RoutingTable

# (merchant_id, sku_id, delta, reason, at_ms) -> an outbox row (OUTBOX_COLUMNS)
StockEventRow = Callable[[str, str, int, str, int], tuple[Any, ...]]

log = logging.getLogger(__name__)

# Any fixed number: every flashtx process that migrates takes this advisory lock first.
_MIGRATION_LOCK = 0x0F1A57
# What a read raises when the database is down, slow (a timeout is an OSError) or its
# connection was lost: worth a retry, not a crash.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

ORDER_COLUMNS = ("order_id", "merchant_id", "buyer_id", "idempotency_key", "slot",
                 "total_minor", "created_at_ms", "payment_deadline_ms")
# The engine also records the placing key (migration 0004; imports leave it empty).
# Campaign orders (migration 0005) too.
PLACED_ORDER_COLUMNS = (*ORDER_COLUMNS, "key_id", "campaign_id", "currency")  # 0010
LINE_COLUMNS = ("order_id", "line_no", "merchant_id", "sku_id", "sku_slot", "quantity",
                "unit_price_minor")
# The engine records where each line's stock came from (migration 0005).
PLACED_LINE_COLUMNS = (*LINE_COLUMNS, "stock_key")
CAMPAIGN_COLUMNS = ("merchant_id", "campaign_id", "name", "starts_at_ms", "ends_at_ms",
                    "buckets", "skus", "created_at_ms", "ended")
CART_COLUMNS = ("merchant_id", "buyer_id", "campaign_id", "slot", "lines", "updated_at_ms",
                "expires_at_ms")
TRANSITION_COLUMNS = ("order_id", "sequence", "merchant_id", "slot", "status", "event",
                      "refunded", "at_ms")
# The engine also records a payment's reference (migration 0011; imports leave it empty).
PLACED_TRANSITION_COLUMNS = (*TRANSITION_COLUMNS, "reference")
OUTBOX_COLUMNS = ("event_id", "merchant_id", "event_type", "order_id", "sequence", "payload",
                  "created_at_ms")
# The outbox lag metric counts waiting rows up to this many (a count of millions of rows
# every few seconds would itself slow the relay down).
OUTBOX_LAG_COUNT_MAX = 100_000
# Units of fulfilled orders (migration 0012).
SETTLED_COLUMNS = ("owners", "owner", "merchant_id", "buyer_id", "stock_key", "sku_id",
                   "campaign_id", "units")
# Taken (exclusive) to rebuild settled_sales for another number of order shards, and
# (shared) by every commit that adds to it.
_SETTLED_LOCK = 0x0F1A58
# settled_sales from the ledger, for $1 order shards.
REBUILD_SETTLED_SQL = (
    "INSERT INTO flashtx.settled_sales (owners, owner, merchant_id, buyer_id, stock_key,"
    " sku_id, campaign_id, units)"
    " SELECT $1::int, o.slot % $1::int, o.merchant_id,"
    "  CASE WHEN o.campaign_id = '' THEN '' ELSE o.buyer_id END,"
    "  CASE WHEN l.stock_key = '' THEN l.sku_id ELSE l.stock_key END, l.sku_id,"
    "  o.campaign_id, sum(l.quantity)"
    " FROM flashtx.orders o JOIN flashtx.order_lines l USING (order_id)"
    " WHERE o.finished_at_ms IS NOT NULL AND EXISTS (SELECT 1 FROM flashtx.order_transitions t"
    "   WHERE t.order_id = o.order_id AND t.status = 3)"  # fulfilled: a final state
    " GROUP BY 1, 2, 3, 4, 5, 6, 7")
ADJUSTMENT_COLUMNS = ("merchant_id", "sku_id", "slot", "delta", "reason", "at_ms")


def migrations() -> list[tuple[int, str]]:
    folder = Path(__file__).parent / "migrations"
    return sorted((int(entry.name.split("_")[0]), entry.read_text())
                  for entry in folder.glob("*.sql"))


async def migrate(connection: asyncpg.Connection) -> list[int]:
    """Applies missing migrations; safe to run twice and from several processes at once.
    Returns the versions it applied."""
    applied: list[int] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS public.flashtx_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in await connection.fetch(
            "SELECT version FROM public.flashtx_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO public.flashtx_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied


# The engine's statements are short index lookups and COPYs. Postgres' JIT compiles a
# query whose estimated cost is high (stale statistics on a fresh, fast-growing table
# are enough): measured, that took ~200 ms of CPU per relay read of 1,000 outbox rows, for
# a query that runs in 10 ms without it. Off for every engine connection.
_SERVER_SETTINGS = {"jit": "off"}


class UnsafeDatabase(RuntimeError):
    """The database is set up in a way the engine cannot be correct on (the message says
    what to change)."""


@dataclass(frozen=True)
class Timeouts:
    """The engine's database timeouts (engine.config: postgres_*; docs/operating.md)."""

    command_s: float
    connect_s: float
    idle_in_transaction_ms: int
    keepalives_idle_s: int
    keepalives_interval_s: int
    keepalives_count: int

    @classmethod
    def of(cls, config: Config | None = None) -> Timeouts:
        """The configured timeouts (None: the defaults)."""
        config = config or Config()
        return cls(config.postgres_command_timeout_s, config.postgres_connect_timeout_s,
                   config.postgres_idle_in_transaction_timeout_ms,
                   config.postgres_keepalives_idle_s, config.postgres_keepalives_interval_s,
                   config.postgres_keepalives_count)

    def server_settings(self) -> dict[str, str]:
        """Session settings: the server drops what a vanished client left behind."""
        return {**_SERVER_SETTINGS,
                "idle_in_transaction_session_timeout": str(self.idle_in_transaction_ms),
                "tcp_keepalives_idle": str(self.keepalives_idle_s),
                "tcp_keepalives_interval": str(self.keepalives_interval_s),
                "tcp_keepalives_count": str(self.keepalives_count)}


async def connect_pool(dsn: str, size_max: int, timeouts: Timeouts | None = None,
                       application_name: str = "flashtx") -> asyncpg.Pool:
    """A pool whose sessions carry `application_name` (pg_stat_activity: which part of
    the engine a backend serves)."""
    timeouts = timeouts or Timeouts.of()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size_max,
                                     timeout=timeouts.connect_s,
                                     command_timeout=timeouts.command_s,
                                     server_settings={**timeouts.server_settings(),
                                                      "application_name": application_name})
    assert pool is not None
    return pool


def _insert_from_arrays(table: str, columns: Sequence[str], types: Sequence[str],
                        offset: int) -> str:
    return (f"INSERT INTO flashtx.{table} ({', '.join(columns)}) SELECT * FROM unnest("
            + ", ".join(f"${offset + i + 1}::{t}[]" for i, t in enumerate(types)) + ")")


# A small group commit in one statement (one round trip, no BEGIN/COMMIT): the rows of
# each table travel as arrays. Measured on this machine, 5 orders a commit: 50 µs of
# client CPU per order instead of 146 with a transaction of COPYs; from ~50 orders on,
# COPY is cheaper, and commits that big use it.
_SMALL_COMMIT_SQL = (
    "WITH o AS (" + _insert_from_arrays(
        "orders", PLACED_ORDER_COLUMNS,
        ("text", "text", "text", "text", "int", "bigint", "bigint", "bigint", "text", "text",
         "text"), 0) + "), l AS (" + _insert_from_arrays(
        "order_lines", PLACED_LINE_COLUMNS,
        ("text", "int", "text", "text", "int", "int", "bigint", "text"),
        len(PLACED_ORDER_COLUMNS)) + "), t AS ("
    + _insert_from_arrays(
        "order_transitions", PLACED_TRANSITION_COLUMNS,
        ("text", "int", "text", "int", "smallint", "text", "bool", "bigint", "text"),
        len(PLACED_ORDER_COLUMNS) + len(PLACED_LINE_COLUMNS)) + ") "
    + _insert_from_arrays(
        "outbox", OUTBOX_COLUMNS,
        ("text", "text", "text", "text", "int", "bytea", "bigint"),
        len(PLACED_ORDER_COLUMNS) + len(PLACED_LINE_COLUMNS) + len(PLACED_TRANSITION_COLUMNS)))
SMALL_COMMIT_ROWS_MAX = 48

# A batch's journal row with its orders' keys (migration 0014): one statement.
_APPEND_JOURNAL_SQL = (
    "WITH k AS (INSERT INTO flashtx.order_keys (merchant_id, idempotency_key, order_id)"
    " SELECT * FROM unnest($7::text[], $8::text[], $9::text[]))"
    " INSERT INTO flashtx.order_journal (owners, owner, position, created_at_ms, orders,"
    " payload) VALUES ($1, $2, $3, $4, $5, $6)")
# The application_name of the materializer's sessions.
MATERIALIZER_APPLICATION = "flashtx-materializer"
# Taken per writing shard by the transaction that materializes its journal rows.
_JOURNAL_LOCK = 0x0F1A5A << 24


def _lost(connection: asyncpg.Connection) -> bool:
    """A held connection whose link closed: the pool took it back (detaching it) then."""
    try:
        return bool(connection.is_closed())
    except asyncpg.InterfaceError:
        return True


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


_ORDER_SELECT = (
    # No transition: the implied "placed" (migration 0008).
    "SELECT o.*, coalesce(t.sequence, 1) AS sequence,"
    " coalesce(t.status, 1::smallint) AS status,"
    " coalesce(t.refunded, false) AS refunded,"
    " coalesce(t.at_ms, o.created_at_ms) AS updated_at_ms,"
    " coalesce(t.reference, '') AS payment_reference"
    " FROM flashtx.orders o LEFT JOIN LATERAL (SELECT sequence, status, refunded, at_ms,"
    "   reference FROM flashtx.order_transitions t WHERE t.order_id = o.order_id"
    "   ORDER BY sequence DESC LIMIT 1) t ON true")


async def _orders_where(connection: asyncpg.Connection, condition: str, *args: Any,
                        order: str = "o.created_at_ms, o.order_id"
                        ) -> list[tuple[Any, list[Any]]]:
    """Orders matching `condition` with their latest state, and their lines (two
    queries, merged here)."""
    orders = await connection.fetch(f"{_ORDER_SELECT} WHERE {condition} ORDER BY {order}",
                                    *args)
    if not orders:
        return []
    lines = await connection.fetch(
        "SELECT order_id, sku_id, quantity, unit_price_minor, stock_key"
        " FROM flashtx.order_lines WHERE order_id = ANY($1::text[])"
        " ORDER BY order_id, line_no", [row["order_id"] for row in orders])
    by_order: dict[str, list[tuple[str, int, int, str]]] = {}
    for line in lines:
        by_order.setdefault(line[0], []).append((line[1], line[2], line[3], line[4]))
    return [(row, by_order.get(row["order_id"], [])) for row in orders]


class Store:
    """Every SQL statement flashtx runs against its own tables."""

    def __init__(self, pool: asyncpg.Pool,
                 open_materializer_pool: Callable[[], Awaitable[asyncpg.Pool]] | None = None
                 ) -> None:
        self.pool = pool
        # The materializer's transactions run on a session of their own, named
        # MATERIALIZER_APPLICATION (its work is told apart: `bench --profile`).
        self._open_materializer_pool = open_materializer_pool
        self._materializer_pool: asyncpg.Pool | None = None
        # Group commits come one at a time (one journal per shard): they keep a
        # connection of their own instead of taking one from the pool (and resetting it)
        # for every commit.
        self._commit_connection: asyncpg.Connection | None = None
        self._commit_lock = asyncio.Lock()
        self._materialize_lock = asyncio.Lock()  # one materializing transaction at a time

    @classmethod
    async def open(cls, dsn: str, size_max: int = 4, timeouts: Timeouts | None = None
                   ) -> Store:
        """A pool whose calls time out (`timeouts`); migrations run first on a connection
        of their own, with no command timeout (an index built on a long history)."""
        timeouts = timeouts or Timeouts.of()
        connection = await asyncpg.connect(dsn, timeout=timeouts.connect_s,
                                           server_settings=_SERVER_SETTINGS)
        try:
            await migrate(connection)
            cache = await connection.fetchval(
                "SELECT cache_size FROM pg_sequences WHERE schemaname = 'flashtx'"
                " AND sequencename = 'outbox_outbox_id_seq'")
            if cache is not None and cache > 1:
                # A snapshot's position is the sequence's last value: with a cache, a
                # session hands out ids below it later, and replay would miss their rows.
                raise UnsafeDatabase(
                    f"the outbox id sequence hands out ids {cache} at a time (CACHE {cache});"
                    " order snapshots need them one at a time: ALTER SEQUENCE"
                    " flashtx.outbox_outbox_id_seq CACHE 1")
            if await connection.fetchval("SHOW autovacuum") == "off":
                # Finished orders (marked) and pruned outbox rows leave dead tuples: without
                # vacuum the live-orders index and the outbox only grow, and recovery and
                # the relay slow down with history (measured: bench/RESULTS.md, soak).
                log.warning("Postgres runs with autovacuum off: run VACUUM on flashtx.orders"
                            " and flashtx.outbox regularly")
        finally:
            await connection.close()
        return cls(await connect_pool(dsn, size_max, timeouts),
                   lambda: connect_pool(dsn, 1, timeouts, MATERIALIZER_APPLICATION))

    async def close(self) -> None:
        if self._materializer_pool is not None:
            await self._materializer_pool.close()
        connection, self._commit_connection = self._commit_connection, None
        if connection is not None and not _lost(connection):
            await self.pool.release(connection)
        await self.pool.close()

    # --- group commit -------------------------------------------------------------------------

    async def commit_orders(self, orders: Sequence[tuple[Any, ...]],
                            lines: Sequence[tuple[Any, ...]],
                            transitions: Sequence[tuple[Any, ...]],
                            outbox: Sequence[tuple[Any, ...]],
                            carts: Sequence[tuple[Any, ...]] = (),
                            carts_gone: Sequence[tuple[str, str, str]] = (),
                            finished: Sequence[tuple[str, int]] = (),
                            settled: Sequence[tuple[Any, ...]] = ()) -> None:
        """All of it or none of it: one statement for a small commit, else one
        transaction with one COPY per table. Carts (written behind) ride along: `carts`
        rows are upserted, `carts_gone` keys deleted. `finished`: (order_id, at_ms) of
        orders fulfilled, cancelled or expired by this commit; `settled`: units of the
        fulfilled ones, SETTLED_COLUMNS rows added to settled_sales."""
        async with self._commit_lock:
            connection = self._commit_connection
            if connection is None or _lost(connection):
                connection = self._commit_connection = await self.pool.acquire()
            try:
                if not carts and not carts_gone and not finished and (
                        len(orders) + len(transitions) <= SMALL_COMMIT_ROWS_MAX):
                    await connection.execute(
                        _SMALL_COMMIT_SQL, *_columns(orders, len(PLACED_ORDER_COLUMNS)),
                        *_columns(lines, len(PLACED_LINE_COLUMNS)),
                        *_columns(transitions, len(PLACED_TRANSITION_COLUMNS)),
                        *_columns(outbox, len(OUTBOX_COLUMNS)))
                else:
                    async with connection.transaction():
                        await self._write_tables(connection, orders, lines, transitions,
                                                 outbox, carts, carts_gone, finished, settled)
            except BaseException:
                # Whatever state the connection is in (a lost answer, a cancelled call),
                # it goes back to the pool, which resets or closes it; the next commit
                # takes another.
                self._commit_connection = None
                try:
                    await self.pool.release(connection)
                except Exception as error:  # the commit's own error is the one to report
                    log.warning("releasing a failed commit connection: %r", error)
                raise

    @staticmethod
    async def _write_tables(connection: asyncpg.Connection, orders: Sequence[tuple[Any, ...]],
                            lines: Sequence[tuple[Any, ...]],
                            transitions: Sequence[tuple[Any, ...]],
                            outbox: Sequence[tuple[Any, ...]],
                            carts: Sequence[tuple[Any, ...]],
                            carts_gone: Sequence[tuple[str, str, str]],
                            finished: Sequence[tuple[str, int]] = (),
                            settled: Sequence[tuple[Any, ...]] = ()) -> None:
        """The query tables' rows, in the caller's transaction."""
        if carts_gone:
            await connection.executemany(
                "DELETE FROM flashtx.carts WHERE merchant_id = $1 AND buyer_id = $2"
                " AND campaign_id = $3", carts_gone)
        if carts:
            await connection.executemany(
                "INSERT INTO flashtx.carts (merchant_id, buyer_id, campaign_id, slot, lines,"
                " updated_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)"
                " ON CONFLICT (merchant_id, buyer_id, campaign_id) DO UPDATE SET"
                " lines = EXCLUDED.lines, updated_at_ms = EXCLUDED.updated_at_ms,"
                " expires_at_ms = EXCLUDED.expires_at_ms", carts)
        if orders:
            await connection.copy_records_to_table(
                "orders", schema_name="flashtx", records=orders,
                columns=PLACED_ORDER_COLUMNS)
        if lines:
            await connection.copy_records_to_table(
                "order_lines", schema_name="flashtx", records=lines,
                columns=PLACED_LINE_COLUMNS)
        if transitions:
            await connection.copy_records_to_table(
                "order_transitions", schema_name="flashtx", records=transitions,
                columns=PLACED_TRANSITION_COLUMNS)
        if outbox:
            await connection.copy_records_to_table(
                "outbox", schema_name="flashtx", records=outbox, columns=OUTBOX_COLUMNS)
        if finished:  # after the orders' rows: an order may be placed in this commit
            await connection.execute(
                "UPDATE flashtx.orders o SET finished_at_ms = f.at_ms"
                " FROM unnest($1::text[], $2::bigint[]) f(order_id, at_ms)"
                " WHERE o.order_id = f.order_id", *_columns(finished, 2))
        if settled:
            await connection.execute("SELECT pg_advisory_xact_lock_shared($1)",
                                     _SETTLED_LOCK)
            await connection.execute(
                f"INSERT INTO flashtx.settled_sales ({', '.join(SETTLED_COLUMNS)})"
                " SELECT * FROM unnest($1::int[], $2::int[], $3::text[], $4::text[],"
                " $5::text[], $6::text[], $7::text[], $8::bigint[])"
                " ON CONFLICT (owners, owner, merchant_id, buyer_id, stock_key, sku_id,"
                " campaign_id)"
                " DO UPDATE SET units = flashtx.settled_sales.units + EXCLUDED.units",
                *_columns(settled, len(SETTLED_COLUMNS)))


    # --- the batch journal (migration 0014) -----------------------------------------------------

    async def append_journal(self, owners: int, owner: int, position: int,
                             created_at_ms: int, orders: int, payload: bytes,
                             keys: tuple[list[str], list[str], list[str]]) -> None:
        """A batch's journal row and its orders' idempotency keys, in one statement (one
        round trip): a key another order holds fails it whole (UniqueViolationError)."""
        async with self._commit_lock:
            connection = self._commit_connection
            if connection is None or _lost(connection):
                connection = self._commit_connection = await self.pool.acquire()
            try:
                await connection.execute(_APPEND_JOURNAL_SQL, owners, owner, position,
                                         created_at_ms, orders, payload, *keys)
            except BaseException:
                self._commit_connection = None
                try:
                    await self.pool.release(connection)
                except Exception as error:
                    log.warning("releasing a failed commit connection: %r", error)
                raise

    async def has_journal(self, owners: int, owner: int, position: int) -> bool:
        """Did an earlier try commit this batch (its answer lost)? Asked before the
        materializer has it, so the row is still there when it did."""
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM flashtx.order_journal WHERE owners = $1"
                " AND owner = $2 AND position = $3)", owners, owner, position))

    async def keys_taken(self, merchant_ids: Sequence[str], keys: Sequence[str]
                         ) -> dict[tuple[str, str], str]:
        """(merchant, idempotency key) -> the order holding it, of those given (its key
        reserved, or its row written: orders imported or written to the tables directly)."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT merchant_id, idempotency_key, k.order_id"
                " FROM unnest($1::text[], $2::text[]) w(merchant_id, idempotency_key)"
                " JOIN flashtx.order_keys k USING (merchant_id, idempotency_key)"
                " UNION SELECT merchant_id, idempotency_key, o.order_id"
                " FROM unnest($1::text[], $2::text[]) w(merchant_id, idempotency_key)"
                " JOIN flashtx.orders o USING (merchant_id, idempotency_key)",
                list(merchant_ids), list(keys))
        return {(row[0], row[1]): row[2] for row in rows}

    async def materialize_journal(self, owners: int, owner: int, positions: list[int],
                                  tables: Any) -> bool:
        """Writes batches' rows to the query tables and deletes their journal rows, in
        one transaction, under the writer's lock (a restarted shard of another layout
        may materialize the same rows). False: already materialized (nothing done);
        InvariantViolation when only some of `positions` are left."""
        async with self._materialize_lock:
            if self._materializer_pool is None:
                self._materializer_pool = (self.pool if self._open_materializer_pool is None
                                           else await self._open_materializer_pool())
            return await self._materialize(self._materializer_pool, owners, owner,
                                           positions, tables)

    async def _materialize(self, pool: asyncpg.Pool, owners: int, owner: int,
                           positions: list[int], tables: Any) -> bool:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)",
                                     _JOURNAL_LOCK + owners * 4096 + owner)
            deleted = await connection.fetchval(
                "WITH d AS (DELETE FROM flashtx.order_journal WHERE owners = $1"
                " AND owner = $2 AND position = ANY($3::bigint[]) RETURNING 1)"
                " SELECT count(*) FROM d", owners, owner, positions)
            if deleted == 0:
                return False
            if deleted != len(positions):
                raise InvariantViolation(
                    f"journal of shard {owner}/{owners}: {deleted} of {len(positions)}"
                    " batches left to materialize")
            await self._write_tables(connection, tables.orders, tables.lines,
                                     tables.transitions, tables.outbox, tables.kept_carts(),
                                     tables.gone_carts(), tables.finished,
                                     tables.settled_rows())
        return True

    async def pending_journal(self) -> list[tuple[int, int, int, bytes]]:
        """Every journal row not materialized: (owners, owner, position, payload), each
        writer's in order."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT owners, owner, position, payload FROM flashtx.order_journal"
                " ORDER BY owners, owner, position")
        return [(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    # --- catalogue and stock ------------------------------------------------------------------

    async def has_event(self, event_id: str) -> bool:
        """Did a commit write this outbox event (a retried commit asks of its first)?"""
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM flashtx.outbox WHERE event_id = $1)", event_id))

    async def has_adjustment(self, slot: int, merchant_id: str, sku_id: str,
                             reason: str) -> bool:
        """Did a write record this adjustment (a move whose commit answer was lost)?"""
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM flashtx.stock_adjustments WHERE slot = $1"
                " AND merchant_id = $2 AND sku_id = $3 AND reason = $4)",
                slot, merchant_id, sku_id, reason))

    async def save_skus(self, skus: Sequence[tuple[Any, ...]],
                        adjustments: Sequence[tuple[Any, ...]],
                        outbox: Sequence[tuple[Any, ...]]) -> None:
        """skus: (merchant_id, sku_id, slot, name, price_minor, per_buyer_limit, at_ms)."""
        async with self.pool.acquire() as connection, connection.transaction():
            if skus:
                await self._upsert_skus(connection, skus)
            if adjustments:
                await connection.copy_records_to_table(
                    "stock_adjustments", schema_name="flashtx", records=adjustments,
                    columns=ADJUSTMENT_COLUMNS)
            if outbox:
                await connection.copy_records_to_table(
                    "outbox", schema_name="flashtx", records=outbox, columns=OUTBOX_COLUMNS)

    async def set_on_hand(self, skus: Sequence[tuple[Any, ...]],
                          targets: Sequence[tuple[str, str, int, int, str, int]],
                          event: StockEventRow) -> list[int]:
        """Upserts `skus` rows (as save_skus) and sets each target's on-hand, i.e. the sum of
        its adjustments, to a value: targets are (merchant_id, sku_id, slot, on_hand,
        reason, at_ms). The difference is computed here, under the SKU row's lock, so a
        retried write changes nothing. Returns the differences written, in order."""
        async with self.pool.acquire() as connection, connection.transaction():
            if skus:
                await self._upsert_skus(connection, skus)
            sums = await connection.fetch(
                "SELECT t.i, coalesce((SELECT sum(a.delta) FROM flashtx.stock_adjustments a"
                "  WHERE a.merchant_id = t.m AND a.sku_id = t.s), 0)::bigint AS on_hand"
                " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(m, s, i)",
                [t[0] for t in targets], [t[1] for t in targets])
            durable = {row["i"] - 1: row["on_hand"] for row in sums}
            deltas = [on_hand - durable[i] for i, (_, _, _, on_hand, _, _) in enumerate(targets)]
            rows = [(m, s, slot, delta, reason, at_ms)
                    for (m, s, slot, _, reason, at_ms), delta in zip(targets, deltas, strict=True)
                    if delta]
            if rows:
                await connection.copy_records_to_table(
                    "stock_adjustments", schema_name="flashtx", records=rows,
                    columns=ADJUSTMENT_COLUMNS)
                await connection.copy_records_to_table(
                    "outbox", schema_name="flashtx", columns=OUTBOX_COLUMNS,
                    records=[event(m, s, delta, reason, at_ms)
                             for m, s, _, delta, reason, at_ms in rows])
            return deltas

    async def adjust_once(self, adjustment: tuple[str, str, int, int, str, int],
                          request_id: str, event: StockEventRow) -> bool:
        """Adds one adjustment (merchant_id, sku_id, slot, delta, reason, at_ms) with its
        event; with a `request_id`, only once: False when it was added before. The same id
        for another SKU or delta raises IdempotencyConflict."""
        merchant_id, sku_id, slot, delta, reason, at_ms = adjustment
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT 1 FROM flashtx.skus WHERE merchant_id = $1 AND sku_id = $2 FOR UPDATE",
                merchant_id, sku_id)
            if request_id:
                before = await connection.fetchrow(
                    "SELECT sku_id, delta FROM flashtx.stock_adjustments"
                    " WHERE merchant_id = $1 AND request_id = $2", merchant_id, request_id)
                if before is not None:
                    if (before["sku_id"], before["delta"]) != (sku_id, delta):
                        raise IdempotencyConflict(
                            f"request_id {request_id} was used for another adjustment",
                            request_id=request_id)
                    return False
            await connection.execute(
                "INSERT INTO flashtx.stock_adjustments (merchant_id, sku_id, slot, delta,"
                " reason, at_ms, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                merchant_id, sku_id, slot, delta, reason, at_ms, request_id or None)
            await connection.copy_records_to_table(
                "outbox", schema_name="flashtx", columns=OUTBOX_COLUMNS,
                records=[event(merchant_id, sku_id, delta, reason, at_ms)])
            return True

    @staticmethod
    async def _upsert_skus(connection: asyncpg.Connection,
                           skus: Sequence[tuple[Any, ...]]) -> None:
        await connection.executemany(
            "INSERT INTO flashtx.skus (merchant_id, sku_id, slot, name, price_minor,"
            " per_buyer_limit, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (merchant_id, sku_id) DO UPDATE SET name = EXCLUDED.name,"
            " price_minor = EXCLUDED.price_minor,"
            " per_buyer_limit = EXCLUDED.per_buyer_limit,"
            " updated_at_ms = EXCLUDED.updated_at_ms", skus)

    async def transfer(self, adjustments: Sequence[tuple[Any, ...]],
                       skus: Sequence[tuple[Any, ...]],
                       campaign: tuple[Any, ...] | None) -> None:
        """Units moving between counters (a SKU and its campaign buckets): the adjustments
        on both sides, new counters' rows and the campaign's row, in one transaction."""
        async with self.pool.acquire() as connection, connection.transaction():
            if campaign is not None:
                await connection.execute(
                    "INSERT INTO flashtx.campaigns (merchant_id, campaign_id, name,"
                    " starts_at_ms, ends_at_ms, buckets, skus, created_at_ms, ended)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)", *campaign)
            if skus:
                await connection.executemany(
                    "INSERT INTO flashtx.skus (merchant_id, sku_id, slot, name, price_minor,"
                    " per_buyer_limit, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (merchant_id, sku_id) DO NOTHING", skus)
            await connection.copy_records_to_table(
                "stock_adjustments", schema_name="flashtx", records=adjustments,
                columns=ADJUSTMENT_COLUMNS)

    async def end_campaign(self, merchant_id: str, campaign_id: str) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(
                "UPDATE flashtx.campaigns SET ended = true WHERE merchant_id = $1"
                " AND campaign_id = $2", merchant_id, campaign_id)

    async def load_campaigns(self) -> list[Any]:
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(
                "SELECT * FROM flashtx.campaigns ORDER BY created_at_ms"))

    async def load_carts(self, slots: Iterable[int]) -> list[Any]:
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(
                "SELECT * FROM flashtx.carts WHERE slot = ANY($1::int[])", list(slots)))

    async def update_merchant(self, merchant_id: str, payment_window_s: int,
                              cart_hold_s: int) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(
                "UPDATE flashtx.merchants SET payment_window_s = $2, cart_hold_s = $3"
                " WHERE merchant_id = $1", merchant_id, payment_window_s, cart_hold_s)

    async def load_skus(self, slots: Iterable[int]) -> list[Any]:
        """SKUs of these slots with their on_hand (holds and sales come from orders)."""
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(
                "SELECT s.merchant_id, s.sku_id, s.name, s.price_minor, s.per_buyer_limit,"
                " COALESCE(a.on_hand, 0) AS on_hand FROM flashtx.skus s"
                " LEFT JOIN (SELECT merchant_id, sku_id, sum(delta) AS on_hand"
                "   FROM flashtx.stock_adjustments WHERE slot = ANY($1::int[])"
                "   GROUP BY merchant_id, sku_id) a USING (merchant_id, sku_id)"
                " WHERE s.slot = ANY($1::int[])", list(slots)))

    # --- orders -------------------------------------------------------------------------------

    async def load_orders(self, slots: Iterable[int]) -> list[tuple[Any, list[Any]]]:
        """The live orders of these slots (not fulfilled, cancelled or expired: migration
        0012) with their latest state and their lines."""
        async with self.pool.acquire() as connection:
            return await _orders_where(connection, "o.slot = ANY($1::int[])"
                                       " AND o.finished_at_ms IS NULL", list(slots))

    async def load_order(self, order_id: str) -> tuple[Any, list[Any]] | None:
        """One order, live or finished, as load_orders answers it; None if there is none."""
        async with self.pool.acquire() as connection:
            found = await _orders_where(connection, "o.order_id = $1", order_id)
        return found[0] if found else None

    async def orders_by_keys(self, merchant_ids: Sequence[str],
                             keys: Sequence[str]) -> list[tuple[Any, list[Any]]]:
        """The orders placed with these (merchant, idempotency key) pairs, where any."""
        async with self.pool.acquire() as connection:
            return await _orders_where(
                connection, "(o.merchant_id, o.idempotency_key) IN (SELECT * FROM"
                " unnest($1::text[], $2::text[]))", list(merchant_ids), list(keys))

    async def buyer_orders(self, slot: int, merchant_id: str, buyer_id: str,
                           before: tuple[int, str] | None, limit: int, only_key: str = ""
                           ) -> list[tuple[Any, list[Any]]]:
        """A buyer's orders, newest first by (created_at_ms, order_id), before `before`."""
        created, order_id = before if before is not None else (2**62, "")
        async with self.pool.acquire() as connection:
            return await _orders_where(
                connection, "o.slot = $1 AND o.merchant_id = $2 AND o.buyer_id = $3"
                " AND (o.created_at_ms, o.order_id) < ($4, $6)"
                " AND ($7 = '' OR o.key_id = $7)",
                slot, merchant_id, buyer_id, created, limit, order_id, only_key,
                order="o.created_at_ms DESC, o.order_id DESC LIMIT $5")

    async def has_finished_orders(self, slots: Iterable[int]) -> bool:
        """Has any order of these slots finished (left memory, or never loaded)?"""
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM flashtx.orders o, unnest($1::int[]) s(slot)"
                " WHERE o.slot = s.slot AND o.finished_at_ms IS NOT NULL)", list(slots)))

    async def load_settled(self, owners: int, owner: int) -> list[Any]:
        """Units of fulfilled orders of order shard `owner` of `owners`, per (merchant,
        buyer, stock key, SKU, campaign). Rebuilt from the ledger first when they were
        summed for another number of order shards (or never: migration 0012)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SETTLED_LOCK)
            summed_for = await connection.fetchval(
                "SELECT value FROM flashtx.settings WHERE name = 'settled_sales_owners'")
            if summed_for != str(owners):
                log.warning("settled_sales: summing fulfilled orders for %d order shards"
                            " (were: %s)", owners, summed_for)
                await connection.execute("DELETE FROM flashtx.settled_sales")
                await connection.execute(REBUILD_SETTLED_SQL, owners)
                await connection.execute(
                    "INSERT INTO flashtx.settings (name, value)"
                    " VALUES ('settled_sales_owners', $1)"
                    " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", str(owners))
            return list(await connection.fetch(
                "SELECT merchant_id, buyer_id, stock_key, sku_id, campaign_id, units"
                " FROM flashtx.settled_sales WHERE owners = $1 AND owner = $2",
                owners, owner))

    async def forget_settled_sums(self) -> None:
        """The next order shard to start sums settled_sales again from the ledger (after
        rows were written outside the engine: an import)."""
        async with self.pool.acquire() as connection:
            await connection.execute(
                "DELETE FROM flashtx.settings WHERE name = 'settled_sales_owners'")

    # --- outbox -------------------------------------------------------------------------------

    async def outbox_after(self, cursor: tuple[int, int], limit: int) -> list[Any]:
        """Outbox rows after `cursor` (txid, outbox_id), in commit order (per order: in
        sequence order). Only rows of transactions older than every running one: a
        transaction still running may yet commit rows that sort before the ones it would
        skip. Rows carry their serialized event, but order events written before the
        engine stored them (an empty payload) come with the order as it was after the
        change, from the ledger: `lines` [(sku_id, quantity, unit_price_minor)] and the
        order's columns (event_payload builds those events)."""
        async with self.pool.acquire() as connection:
            rows = [dict(row) for row in await connection.fetch(
                # Ordered by the table's columns (o.txid), not the output's bigint txid:
                # the index range scan, whatever the outbox's size (ordered by the output
                # column, every read sorted the whole outbox once the relay lagged).
                "SELECT o.txid::text::bigint AS txid, o.outbox_id, o.event_id, o.merchant_id,"
                " o.event_type, o.order_id, o.sequence, o.payload, o.created_at_ms"
                " FROM flashtx.outbox o"
                " WHERE (o.txid, o.outbox_id) > ($1::text::xid8, $2::bigint)"
                "   AND o.txid < pg_snapshot_xmin(pg_current_snapshot())"
                " ORDER BY o.txid, o.outbox_id LIMIT $3", str(cursor[0]), cursor[1], limit)]
            older = [row for row in rows if not row["payload"] and row["order_id"]]
            if older:
                await self._with_ledger_orders(connection, older)
        return rows

    @staticmethod
    async def _with_ledger_orders(connection: asyncpg.Connection,
                                  rows: list[dict[str, Any]]) -> None:
        joined = await connection.fetch(
            "SELECT e.n, o.buyer_id, o.idempotency_key, o.total_minor,"
            " o.created_at_ms AS placed_at_ms, o.payment_deadline_ms, o.campaign_id,"
            " s.status, s.refunded, l.sku_id, l.quantity, l.unit_price_minor"
            " FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS e(order_id, sequence, n)"
            " JOIN flashtx.orders o USING (order_id)"
            " LEFT JOIN flashtx.order_transitions s"
            "   ON s.order_id = e.order_id AND s.sequence = e.sequence"
            " LEFT JOIN flashtx.order_lines l ON l.order_id = e.order_id"
            " ORDER BY e.n, l.line_no",
            [row["order_id"] for row in rows], [row["sequence"] for row in rows])
        for row in rows:
            row["lines"] = []
        for found in joined:  # one row per order line
            row = rows[found["n"] - 1]
            row.update({key: found[key] for key in (
                "buyer_id", "idempotency_key", "total_minor", "placed_at_ms",
                "payment_deadline_ms", "campaign_id", "status", "refunded")})
            if found["sku_id"] is not None:
                row["lines"].append((found["sku_id"], found["quantity"],
                                     found["unit_price_minor"]))

    async def relay_cursor(self) -> tuple[int, int]:
        """Where the relay stood when it last saved its place (migration 0007)."""
        value = await self.setting("relay_cursor", "0:0")
        txid, outbox_id = value.split(":")
        return int(txid), int(outbox_id)

    async def save_relay_cursor(self, cursor: tuple[int, int]) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(
                "UPDATE flashtx.settings SET value = $1 WHERE name = 'relay_cursor'",
                f"{cursor[0]}:{cursor[1]}")

    async def prune_outbox(self, cursor: tuple[int, int], before_ms: int, limit: int) -> int:
        """Deletes up to `limit` outbox rows at or before the relay's `cursor` (relayed)
        and created before `before_ms`, oldest first; answers how many. The largest id
        deleted is kept (setting outbox_pruned_through): an order snapshot older than it
        cannot be replayed."""
        async with self.pool.acquire() as connection, connection.transaction():
            deleted = await connection.fetchval(
                "WITH gone AS (DELETE FROM flashtx.outbox WHERE outbox_id = ANY(ARRAY("
                " SELECT outbox_id FROM flashtx.outbox"
                " WHERE (txid, outbox_id) <= ($1::text::xid8, $2::bigint)"
                "   AND created_at_ms < $3 ORDER BY txid, outbox_id LIMIT $4))"
                " RETURNING outbox_id)"
                " SELECT ARRAY[count(*), coalesce(max(outbox_id), 0)] FROM gone",
                str(cursor[0]), cursor[1], before_ms, limit)
            count, largest = deleted
            if count:
                await connection.execute(
                    "INSERT INTO flashtx.settings (name, value)"
                    " VALUES ('outbox_pruned_through', $1::bigint::text)"
                    " ON CONFLICT (name) DO UPDATE SET value ="
                    " greatest(flashtx.settings.value::bigint, $1::bigint)::text", largest)
        return int(count)

    # --- order snapshots (migration 0013) -------------------------------------------------------

    async def outbox_position(self) -> int:
        """The last outbox id handed out (committed or not): a row written from now on
        has a larger one."""
        async with self.pool.acquire() as connection:
            return int(await connection.fetchval(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END"
                " FROM flashtx.outbox_outbox_id_seq"))

    async def orders_generation(self) -> int:
        return int(await self.setting("orders_generation", "0"))

    async def save_order_snapshot(self, owners: int, owner: int, snapshot: Sequence[Any]
                                  ) -> None:
        """snapshot: (format, generation, outbox_id, taken_at_ms, orders, checksum,
        body); replaces the shard's previous one."""
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO flashtx.order_snapshots (owners, owner, format, generation,"
                " outbox_id, taken_at_ms, orders, checksum, body)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (owners, owner) DO UPDATE SET format = EXCLUDED.format,"
                " generation = EXCLUDED.generation, outbox_id = EXCLUDED.outbox_id,"
                " taken_at_ms = EXCLUDED.taken_at_ms, orders = EXCLUDED.orders,"
                " checksum = EXCLUDED.checksum, body = EXCLUDED.body", owners, owner, *snapshot)

    async def load_order_snapshot(self, owners: int, owner: int
                                  ) -> tuple[Any, int, int] | None:
        """(the shard's snapshot row, the orders generation now, the largest outbox id
        pruned), or None when it has none."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT s.*, (SELECT value FROM flashtx.settings"
                "   WHERE name = 'orders_generation') AS generation_now,"
                " (SELECT value FROM flashtx.settings"
                "   WHERE name = 'outbox_pruned_through') AS pruned_through"
                " FROM flashtx.order_snapshots s WHERE owners = $1 AND owner = $2",
                owners, owner)
        if row is None:
            return None
        return row, int(row["generation_now"] or 0), int(row["pruned_through"] or 0)

    async def orders_changed_after(self, outbox_id: int, slots: Iterable[int]
                                   ) -> tuple[list[tuple[Any, list[Any]]], int]:
        """(the orders of these slots with an outbox row after `outbox_id`, as they are
        now, live or finished, as load_orders answers them; the largest outbox id pruned,
        read after them: when it is past `outbox_id`, rows may have gone meanwhile)."""
        async with self.pool.acquire() as connection:
            changed = await _orders_where(
                connection, "o.order_id IN (SELECT DISTINCT order_id FROM flashtx.outbox"
                " WHERE outbox_id > $1 AND order_id <> '') AND o.slot = ANY($2::int[])",
                outbox_id, list(slots))
            pruned = await connection.fetchval(
                "SELECT value FROM flashtx.settings WHERE name = 'outbox_pruned_through'")
        return changed, int(pruned or 0)

    async def outbox_lag(self, cursor: tuple[int, int],
                         count_max: int = OUTBOX_LAG_COUNT_MAX) -> tuple[int, int | None]:
        """(rows after `cursor`, counted up to `count_max`; created_at_ms of the first of
        them): two index range reads, however far behind the relay is."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM flashtx.outbox"
                "   WHERE (txid, outbox_id) > ($1::text::xid8, $2::bigint) LIMIT $3) w)"
                "   AS waiting,"
                " (SELECT created_at_ms FROM flashtx.outbox"
                "   WHERE (txid, outbox_id) > ($1::text::xid8, $2::bigint)"
                "   ORDER BY txid, outbox_id LIMIT 1) AS oldest",
                str(cursor[0]), cursor[1], count_max)
        return int(row["waiting"]), row["oldest"]

    # --- merchants ----------------------------------------------------------------------------

    async def save_key(self, key: Sequence[Any]) -> None:
        """key: (merchant_id, key_id, secret_hash, scopes, label, created_at_ms, revoked,
        request_id). Written again: revoked and the secret's hash (a retried create)."""
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO flashtx.api_keys (merchant_id, key_id, secret_hash, scopes, label,"
                " created_at_ms, revoked, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (merchant_id, key_id) DO UPDATE SET revoked = EXCLUDED.revoked,"
                " secret_hash = EXCLUDED.secret_hash", *key)

    async def next_incarnation(self, now_ms: int) -> int:
        """A number for a starting order shard, greater than every one handed out before,
        and at least `now_ms`: generations of its stock handovers count from it, so a
        shard started on a host whose clock is behind still outranks the one before."""
        async with self.pool.acquire() as connection:
            return int(await connection.fetchval(
                "INSERT INTO flashtx.settings (name, value) VALUES ('incarnation', $1)"
                " ON CONFLICT (name) DO UPDATE SET value = GREATEST("
                "flashtx.settings.value::bigint + 1, $2::bigint)::text RETURNING value",
                str(now_ms), now_ms))

    async def setting(self, name: str, default: str) -> str:
        """The stored value of a setting; stores `default` first if there is none."""
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO flashtx.settings (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO NOTHING", name, default)
            return str(await connection.fetchval(
                "SELECT value FROM flashtx.settings WHERE name = $1", name))

    async def stock_routing(self) -> RoutingTable | None:
        """The stock routing table set by the last resharding (None: the configured one)."""
        async with self.pool.acquire() as connection:
            value = await connection.fetchval(
                "SELECT value FROM flashtx.settings WHERE name = 'stock_routing'")
        if value is None:
            return None
        stored = json.loads(value)
        return RoutingTable(int(stored["version"]), tuple(stored["shard_of_slot"]),
                            bool(stored.get("settled", True)))

    async def save_stock_routing(self, table: RoutingTable) -> None:
        value = json.dumps({"version": table.version, "shard_of_slot": table.shard_of_slot,
                            "settled": table.settled})
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO flashtx.settings (name, value) VALUES ('stock_routing', $1)"
                " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", value)

    async def save_merchant_with_key(self, merchant: Sequence[Any],
                                     key: Sequence[Any]) -> None:
        """Written again by a retried create (request_id): the merchant row as it was, the
        key's secret hash the new one. The merchant shard refuses an existing merchant_id
        before it writes, so a conflict here is always such a retry."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO flashtx.merchants (merchant_id, name, payment_window_s,"
                " created_at_ms, cart_hold_s, currency) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (merchant_id) DO NOTHING", *merchant)
            await connection.execute(
                "INSERT INTO flashtx.api_keys (merchant_id, key_id, secret_hash, scopes, label,"
                " created_at_ms, revoked, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (merchant_id, key_id) DO UPDATE SET"
                " secret_hash = EXCLUDED.secret_hash", *key)

    async def load_merchants(self) -> tuple[list[Any], list[Any]]:
        async with self.pool.acquire() as connection:
            merchants = await connection.fetch("SELECT * FROM flashtx.merchants")
            keys = await connection.fetch("SELECT * FROM flashtx.api_keys")
        return list(merchants), list(keys)
