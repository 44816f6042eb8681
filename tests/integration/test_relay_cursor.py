"""The relay's cursor over the outbox, on the real Postgres and Redis: a row whose
transaction commits late is never skipped, and a batch sent twice (a relay restart before
its place was saved) adds each event once."""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as redis

from flashtx.adapters import embedded
from flashtx.adapters.events import StreamWriter, cursor_key, stream_key
from flashtx.adapters.postgres import OUTBOX_COLUMNS, Store
from tests.integration.conftest import unique_merchant_id
from tests.integration.retrying import eventually


async def _rows_after(store: Store, start: tuple[int, int], count: int) -> list[Any]:
    """The `count` rows after `start`, once readable: the outbox reads only rows of
    transactions older than every running one, and that horizon is the whole Postgres
    server's (a transaction of another database, such as the shared engine's, holds it)."""
    rows: list[Any] = []

    async def readable() -> None:
        rows[:] = await store.outbox_after(start, 100)
        assert len(rows) >= count

    await eventually(readable)
    return rows


def _row(event_id: str, merchant_id: str) -> tuple[object, ...]:
    return (event_id, merchant_id, "stock.adjusted", "", 0, b"payload-" + event_id.encode(), 1)


async def test_a_row_committed_late_is_relayed_not_skipped(own_store: Store) -> None:
    start = await own_store.relay_cursor()
    async with own_store.pool.acquire() as slow, own_store.pool.acquire() as fast:
        slow_tx = slow.transaction()
        await slow_tx.start()
        # Takes its outbox id (and transaction id) first, commits last.
        await slow.copy_records_to_table("outbox", schema_name="flashtx",
                                         records=[_row("slow", "m")], columns=OUTBOX_COLUMNS)
        await fast.copy_records_to_table("outbox", schema_name="flashtx",
                                         records=[_row("fast", "m")], columns=OUTBOX_COLUMNS)
        # While the slow transaction runs, nothing after it may be read: its row would sort
        # before what was read and be skipped for good.
        assert await own_store.outbox_after(start, 100) == []
        await slow_tx.commit()
    rows = await _rows_after(own_store, start, 2)
    assert [r["event_id"] for r in rows] == ["slow", "fast"]
    after_first = (rows[0]["txid"], rows[0]["outbox_id"])
    assert [r["event_id"] for r in await own_store.outbox_after(after_first, 100)] == ["fast"]
    await own_store.save_relay_cursor(after_first)
    assert await own_store.relay_cursor() == after_first


async def test_a_batch_sent_again_adds_each_event_once() -> None:
    client = redis.Redis.from_url(embedded.redis_url())
    deployment = secrets.token_hex(6)
    merchants = [unique_merchant_id("relay-a"), unique_merchant_id("relay-b")]
    writer = StreamWriter(client, 1000, deployment)
    rows = [(7, n, f"e{n}", merchants[n % 2], f"event {n}".encode()) for n in range(1, 9)]
    try:
        assert await writer.cursor() is None
        assert await writer.relay(rows[:5]) == 5
        assert await writer.cursor() == (7, 5)
        assert await writer.relay(rows[2:]) == 3  # rows 3..5 were added already
        assert await writer.relay(rows) == 0
        assert await writer.relay([(8, 1, "e9", merchants[0], b"event 9")]) == 1  # next tx
        seen = []
        for merchant_id in merchants:
            entries = await client.xrange(stream_key(merchant_id))
            seen += [fields[b"id"].decode() for _, fields in entries]
        assert sorted(seen) == sorted(f"e{n}" for n in range(1, 10))
    finally:
        await client.delete(cursor_key(deployment), *(stream_key(m) for m in merchants))
        await client.aclose()


async def test_order_events_written_without_their_event_are_built_from_the_ledger(
        own_store: Store) -> None:
    """Rows of an engine that stored no event bytes (before the outbox carried them)."""
    from flashtx.adapters.events import event_payload
    from flashtx.adapters.postgres import (
        PLACED_LINE_COLUMNS,
        PLACED_ORDER_COLUMNS,
        TRANSITION_COLUMNS,
    )
    from flashtx_client.v1 import event_pb2

    start = await own_store.relay_cursor()
    order_id = "0007ab12cd000000001"
    async with own_store.pool.acquire() as connection, connection.transaction():
        await connection.copy_records_to_table(
            "orders", schema_name="flashtx", columns=PLACED_ORDER_COLUMNS,
            records=[(order_id, "m", "buyer", "key", 7, 300, 1_000, 901_000, "k", "", "")])
        await connection.copy_records_to_table(
            "order_lines", schema_name="flashtx", columns=PLACED_LINE_COLUMNS,
            records=[(order_id, 0, "m", "a", 3, 1, 100, ""),
                     (order_id, 1, "m", "b", 4, 2, 100, "")])
        await connection.copy_records_to_table(
            "order_transitions", schema_name="flashtx", columns=TRANSITION_COLUMNS,
            records=[(order_id, 2, "m", 7, 2, "pay", False, 2_000)])
        await connection.copy_records_to_table(
            "outbox", schema_name="flashtx", columns=OUTBOX_COLUMNS,
            records=[(f"{order_id}:1", "m", "order.reserved", order_id, 1, b"", 1_000),
                     (f"{order_id}:2", "m", "order.paid", order_id, 2, b"", 2_000)])
    rows = await _rows_after(own_store, start, 2)
    events = [event_pb2.Event.FromString(event_payload(row)) for row in rows]
    assert [(e.type, e.sequence, e.order.status, e.order.updated_at_ms) for e in events] == [
        ("order.reserved", 1, 1, 1_000), ("order.paid", 2, 2, 2_000)]
    assert all([(line.sku_id, line.quantity) for line in e.order.lines] == [("a", 1), ("b", 2)]
               and e.order.total_minor == 300 and e.order.buyer_id == "buyer" for e in events)


async def test_relayed_rows_past_the_retention_are_pruned_and_nothing_else(
        own_store: Store) -> None:
    start = await own_store.relay_cursor()
    rows = [("old-relayed", 1_000), ("new-relayed", 9_000), ("old-waiting", 1_000)]
    async with own_store.pool.acquire() as connection:
        await connection.copy_records_to_table(
            "outbox", schema_name="flashtx", columns=OUTBOX_COLUMNS,
            records=[(event_id, "m", "stock.adjusted", "", 0, b"x", at_ms)
                     for event_id, at_ms in rows])
    written = await _rows_after(own_store, start, 3)
    assert [r["event_id"] for r in written] == [event_id for event_id, _ in rows]
    relayed = (written[1]["txid"], written[1]["outbox_id"])  # the first two are relayed
    await own_store.save_relay_cursor(relayed)
    # Retention: rows created before 5,000 ms may go, once relayed.
    assert await own_store.prune_outbox(await own_store.relay_cursor(), 5_000, 100) == 1
    assert await own_store.prune_outbox(await own_store.relay_cursor(), 5_000, 100) == 0
    left = await own_store.outbox_after(start, 100)
    assert [r["event_id"] for r in left] == ["new-relayed", "old-waiting"]
    # The largest id pruned is kept: an order snapshot older than it is not used, and a
    # recovery reading the changes after an older snapshot sees the prune.
    pruned = written[0]["outbox_id"]
    assert await own_store.setting("outbox_pruned_through", "-1") == str(pruned)
    snapshot = (1, 0, pruned - 1, 0, 0, 0, b"")
    await own_store.save_order_snapshot(1, 0, snapshot)
    _, generation_now, pruned_through = await own_store.load_order_snapshot(1, 0)
    assert (generation_now, pruned_through) == (0, pruned)
    assert await own_store.orders_changed_after(pruned - 1, range(4096)) == ([], pruned)
