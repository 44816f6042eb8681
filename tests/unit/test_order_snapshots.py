"""Order snapshots: what is captured, the codec, and merging with the changes after."""

from __future__ import annotations

import dataclasses
import zlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashtx.engine import order_snapshots
from flashtx.engine.order_snapshots import SnapshotUnusable, capture, decode, encode, merge
from flashtx.engine.orders import Order, OrderStatus

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # UTF-8
ORDERS = st.builds(
    Order, order_id=TEXT, merchant_id=TEXT, buyer_id=TEXT, idempotency_key=TEXT,
    lines=st.lists(st.tuples(TEXT, st.integers(1, 10**6), st.integers(0, 10**12)),
                   min_size=1, max_size=4).map(tuple),
    status=st.sampled_from([OrderStatus.RESERVED, OrderStatus.PAID]),
    total_minor=st.integers(0, 2**62), created_at_ms=st.integers(0, 2**62),
    payment_deadline_ms=st.integers(0, 2**62), sequence=st.integers(1, 100),
    refunded=st.booleans(), updated_at_ms=st.integers(0, 2**62), key_id=TEXT,
    campaign_id=TEXT, stock_keys=st.lists(TEXT, max_size=4).map(tuple), currency=TEXT,
    payment_reference=TEXT)


def order(order_id: str, status: OrderStatus = OrderStatus.RESERVED, created: int = 0,
          sequence: int = 1) -> Order:
    return Order(order_id, "m", "b", f"k-{order_id}", (("sku", 1, 100),), status, 100,
                 created, created + 1000, sequence, False, created)


@given(st.lists(ORDERS, max_size=20))
def test_a_snapshot_decodes_to_the_orders_it_captured(orders: list[Order]) -> None:
    body, checksum = encode(capture(orders))
    assert decode(body, checksum) == orders


def test_capture_keeps_live_orders_as_they_were_at_that_instant() -> None:
    live, paid = order("a"), order("b", OrderStatus.PAID)
    finished = order("c", OrderStatus.FULFILLED)
    captured = capture([live, finished, paid])
    live.status, live.sequence = OrderStatus.CANCELLED, 2  # a change after the capture
    restored = decode(*encode(captured))
    assert [(o.order_id, o.status, o.sequence) for o in restored] == [
        ("a", OrderStatus.RESERVED, 1), ("b", OrderStatus.PAID, 1)]


def test_a_damaged_or_foreign_snapshot_is_refused() -> None:
    body, checksum = encode(capture([order("a")]))
    with pytest.raises(SnapshotUnusable, match="checksum"):
        decode(body[:-1] + bytes([body[-1] ^ 1]), checksum)
    other = msgpack.packb({"format": 99})
    with pytest.raises(SnapshotUnusable, match="format"):
        decode(other, zlib.crc32(other))
    garbage = b"\xc1not msgpack"
    with pytest.raises(SnapshotUnusable):
        decode(garbage, zlib.crc32(garbage))


def test_why_a_stored_snapshot_is_not_used() -> None:
    fmt = order_snapshots.FORMAT
    assert order_snapshots.unusable(fmt, 3, 3, outbox_id=10, pruned_through=10) == ""
    assert "format" in order_snapshots.unusable(fmt + 1, 3, 3, 10, 0)
    assert "imported" in order_snapshots.unusable(fmt, 2, 3, 10, 0)
    assert "pruned" in order_snapshots.unusable(fmt, 3, 3, 10, 11)


def test_merge_takes_changes_after_the_snapshot() -> None:
    kept, paid_later, finished_later = order("a", created=1), order("b", created=2), order(
        "c", created=3)
    snapshot = [finished_later, kept, paid_later]
    changed = [dataclasses.replace(paid_later, status=OrderStatus.PAID, sequence=2),
               dataclasses.replace(finished_later, status=OrderStatus.EXPIRED, sequence=2),
               order("d", created=0),  # placed after the snapshot
               order("e", OrderStatus.CANCELLED, created=5)]  # placed and finished after
    merged = merge(snapshot, changed)
    assert [(o.order_id, o.status) for o in merged] == [
        ("d", OrderStatus.RESERVED), ("a", OrderStatus.RESERVED), ("b", OrderStatus.PAID)]


def test_an_unchanged_shard_writes_again_before_the_prune_passes_its_snapshot() -> None:
    """Nothing changed: no snapshot, until the last one is half the outbox's retention old
    (a prune past its position would make it unusable); changed: always."""
    retention_s = 30
    assert order_snapshots.due(True, 1_000, 1_001, retention_s)
    assert not order_snapshots.due(False, 1_000, 1_000 + 14_999, retention_s)
    assert order_snapshots.due(False, 1_000, 1_000 + 15_000, retention_s)
    assert not order_snapshots.due(False, 1_000, 10**12, 0)  # never pruned: never stale
