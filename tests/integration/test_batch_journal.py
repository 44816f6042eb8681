"""The batch journal on a real database (migration 0014): one row per commit with its
orders' keys, a key taken by another order refuses the row whole, materializing writes
the query tables once (a second try changes nothing), and a restart materializes what
is left, its own rows and those of another layout, in order."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from flashtx.actors.batch_journal import BatchTables, materialize_pending
from flashtx.actors.persistence import order_rows, transition_rows
from flashtx.adapters import embedded
from flashtx.adapters.postgres import Store, migrations
from flashtx.engine.errors import InvariantViolation
from flashtx.engine.orders import Order, OrderChange, OrderStatus, new_order_id
from flashtx.engine.sharding import slot_of
from tests.integration.conftest import _database, database_on

SLOTS = 4096
MERCHANT = "journal-shop"


def _order(n: int, buyer: str, key: str) -> Order:
    slot = slot_of(MERCHANT, buyer, SLOTS)
    return Order(new_order_id(slot, "j1", n), MERCHANT, buyer, key, (("a", 1, 100),),
                 OrderStatus.RESERVED, 100, 1_000 + n, 61_000, 1, False, 1_000 + n, "", "",
                 (), "USD")


def _tables(*orders: Order) -> BatchTables:
    entries: list[object] = []
    for order in orders:
        row, lines = order_rows(order, SLOTS)
        entries.append(("order", row, lines))
        placed = OrderChange(order.order_id, MERCHANT, 1, 1, "placed", order.created_at_ms)
        entries.append(("transition", *transition_rows(placed, order), None))
    return BatchTables.of(entries, 2)


async def _append(store: Store, owner: int, position: int, tables: BatchTables) -> None:
    await store.append_journal(2, owner, position, 5_000, len(tables.orders),
                               tables.encode(position), tables.key_columns())


async def test_a_batch_is_one_row_materialized_once(own_store: Store) -> None:
    store = own_store
    first, second = _order(1, "b1", "k1"), _order(2, "b2", "k2")
    tables = _tables(first, second)
    await _append(store, 0, 7, tables)
    assert await store.has_journal(2, 0, 7)
    # Journaled, not materialized: the query tables do not hold it yet.
    assert await store.load_order(first.order_id) is None
    assert [row[:3] for row in await store.pending_journal()] == [(2, 0, 7)]
    assert await store.materialize_journal(2, 0, [7], tables)
    assert not await store.materialize_journal(2, 0, [7], tables)  # done: nothing again
    found = await store.load_order(first.order_id)
    assert found is not None and found[0]["idempotency_key"] == "k1"
    assert await store.pending_journal() == []
    assert not await store.has_journal(2, 0, 7)


async def test_a_key_held_by_another_order_refuses_the_row_whole(own_store: Store) -> None:
    store = own_store
    await _append(store, 0, 1, _tables(_order(1, "b1", "k1")))
    # Another shard (another buyer) with the same key, in a batch with a free key.
    clash = _tables(_order(2, "b2", "k1"), _order(3, "b3", "k3"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await _append(store, 1, 1, clash)
    assert [row[:3] for row in await store.pending_journal()] == [(2, 0, 1)]
    taken = await store.keys_taken([MERCHANT, MERCHANT], ["k1", "k3"])
    assert taken == {(MERCHANT, "k1"): _order(1, "b1", "k1").order_id}


async def test_a_restart_materializes_its_rows_and_another_layouts(own_store: Store) -> None:
    store = own_store
    orders = [_order(n, f"b{n}", f"k{n}") for n in range(4)]
    await _append(store, 0, 1, _tables(orders[0]))
    await _append(store, 0, 2, _tables(orders[1]))
    await _append(store, 1, 1, _tables(orders[2]))  # shard 1 of 2: not shard 0's
    await store.append_journal(1, 0, 1, 5_000, 1, _tables(orders[3]).encode(1),
                               _tables(orders[3]).key_columns())  # a layout of one shard
    assert await materialize_pending(store, 2, 0) == 3
    assert [row[:3] for row in await store.pending_journal()] == [(2, 1, 1)]
    for order in (orders[0], orders[1], orders[3]):
        assert await store.load_order(order.order_id) is not None
    assert await store.load_order(orders[2].order_id) is None


async def test_rows_of_one_batch_partly_gone_are_an_invariant_violation(
        own_store: Store) -> None:
    store = own_store
    tables = _tables(_order(1, "b1", "k1"))
    await _append(store, 0, 1, tables)
    with pytest.raises(InvariantViolation):
        await store.materialize_journal(2, 0, [1, 2], tables)
    assert [row[:3] for row in await store.pending_journal()] == [(2, 0, 1)]


async def test_a_database_of_the_release_before_upgrades() -> None:
    """A database at migration 13 holding an order written as the release before wrote
    them (its rows straight into the tables): migration 14 reserves its key, so a shard
    of this release refuses another order with it, and reads find the order as before."""
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_upgrade_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    dsn = database_on(server_dsn, name)
    try:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                "CREATE TABLE public.flashtx_migrations (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            for version, sql in migrations():
                if version < 14:
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO public.flashtx_migrations (version) VALUES ($1)", version)
            old = _order(1, "b1", "k-old")
            row, lines = order_rows(old, SLOTS)
            await connection.execute(
                "INSERT INTO flashtx.orders (order_id, merchant_id, buyer_id, idempotency_key,"
                " slot, total_minor, created_at_ms, payment_deadline_ms, key_id, campaign_id,"
                " currency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", *row)
            await connection.copy_records_to_table(
                "order_lines", schema_name="flashtx", records=lines,
                columns=("order_id", "line_no", "merchant_id", "sku_id", "sku_slot",
                         "quantity", "unit_price_minor", "stock_key"))
        finally:
            await connection.close()
        store = await Store.open(dsn, 2)  # applies migration 14
        try:
            assert await store.keys_taken([MERCHANT], ["k-old"]) == {
                (MERCHANT, "k-old"): old.order_id}
            with pytest.raises(asyncpg.UniqueViolationError):
                await _append(store, 0, 1, _tables(_order(2, "b2", "k-old")))
            found = await store.load_order(old.order_id)
            assert found is not None and found[0]["idempotency_key"] == "k-old"
            assert await materialize_pending(store, 2, 0) == 0
        finally:
            await store.close()
    finally:
        await _database(server_dsn, name, create=False)
