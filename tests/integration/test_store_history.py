"""The Postgres reads and writes of bounded history (migration 0012), on a real database:
a commit that finishes orders marks them and sums fulfilled units; recovery reads live
orders alone; finished orders are found by id, by key and in a buyer's pages."""

from __future__ import annotations

from flashtx.actors.persistence import (
    commit_order_entries,
    finished_rows,
    order_rows,
    transition_rows,
)
from flashtx.adapters.postgres import Store
from flashtx.engine.orders import Order, OrderChange, OrderStatus, new_order_id
from flashtx.engine.sharding import slot_of

SLOTS = 4096
MERCHANT = "history-shop"


def _order(n: int, buyer: str, created: int, campaign_id: str = "") -> Order:
    slot = slot_of(MERCHANT, buyer, SLOTS)
    lines = (("a", 1, 100), ("b", 2, 50)) if n % 2 else (("a", 3, 100),)
    return Order(new_order_id(slot, "e1", n), MERCHANT, buyer, f"k{n}", lines,
                 OrderStatus.RESERVED, sum(q * p for _, q, p in lines), created,
                 created + 60_000, 1, False, created, "", campaign_id,
                 ("bucket-1",) * len(lines) if campaign_id else (), "USD")


def _step(order: Order, event: str, status: OrderStatus, at: int) -> tuple[object, ...]:
    order.status, order.sequence, order.updated_at_ms = status, order.sequence + 1, at
    change = OrderChange(order.order_id, MERCHANT, order.sequence, int(status), event, at)
    transition, event_row = transition_rows(change, order)
    return ("transition", transition, event_row, finished_rows(change, order))


async def test_finished_orders_are_marked_and_found(own_store: Store) -> None:
    store = own_store
    orders = [_order(n, "b1" if n < 6 else "b2", 1_000 + n, "c1" if n == 5 else "")
              for n in range(8)]
    entries: list[object] = []
    for order in orders:
        row, lines = order_rows(order, SLOTS)
        entries.append(("order", row, lines))
        placed = OrderChange(order.order_id, MERCHANT, 1, 1, "placed", order.created_at_ms)
        entries.append(("transition", *transition_rows(placed, order), None))
    await commit_order_entries(store, entries, owners=2)
    # 0..3 fulfilled (paid first), 4 cancelled, 5 a fulfilled campaign order; 6, 7 live
    steps = []
    for order in (*orders[:3], orders[5]):
        steps.append(_step(order, "pay", OrderStatus.PAID, 5_000))
        steps.append(_step(order, "fulfil", OrderStatus.FULFILLED, 6_000))
    steps.append(_step(orders[4], "cancel", OrderStatus.CANCELLED, 7_000))
    await commit_order_entries(store, steps, owners=2)

    slots = range(SLOTS)
    live = await store.load_orders(slots)
    assert sorted(row["order_id"] for row, _ in live) == sorted(
        o.order_id for o in (orders[3], *orders[6:]))
    assert await store.has_finished_orders(slots)
    owner = slot_of(MERCHANT, "b1", SLOTS) % 2  # b1 placed orders 0..5

    async def settled(owners: int, index: int) -> dict[tuple[object, ...], int]:
        return {tuple(row.values())[:5]: row["units"]
                for row in await store.load_settled(owners, index)}

    # Summed from the ledger at the first load (rows written before it are replaced), per
    # SKU for plain orders (0..2: lines a3, a1 b2, a3), per buyer and bucket for the
    # campaign order; then added to by commits.
    assert await settled(2, owner) == {
        (MERCHANT, "", "a", "a", ""): 7, (MERCHANT, "", "b", "b", ""): 2,
        (MERCHANT, "b1", "bucket-1", "a", "c1"): 1, (MERCHANT, "b1", "bucket-1", "b", "c1"): 2}
    assert await settled(2, 1 - owner) == {}
    await commit_order_entries(store, [_step(orders[3], "pay", OrderStatus.PAID, 8_000),
                                       _step(orders[3], "fulfil", OrderStatus.FULFILLED,
                                             8_000)], owners=2)
    after = await settled(2, owner)
    assert after[(MERCHANT, "", "b", "b", "")] == 4 and after[(MERCHANT, "", "a", "a", "")] == 8
    # Another number of order shards: summed again, each shard its own slots.
    one = await settled(1, 0)
    assert one == after

    row, lines = await store.load_order(orders[4].order_id) or (None, [])
    assert row is not None and row["status"] == OrderStatus.CANCELLED and row["sequence"] == 2
    assert row["finished_at_ms"] == 7_000 and lines == [("a", 3, 100, "")]
    assert await store.load_order("0000nothing") is None

    found = await store.orders_by_keys([MERCHANT, MERCHANT, "other"], ["k1", "k7", "k1"])
    assert sorted(row["idempotency_key"] for row, _ in found) == ["k1", "k7"]

    slot = slot_of(MERCHANT, "b1", SLOTS)
    first = await store.buyer_orders(slot, MERCHANT, "b1", None, 4)
    assert [row["idempotency_key"] for row, _ in first] == ["k5", "k4", "k3", "k2"]
    last_row = first[-1][0]
    rest = await store.buyer_orders(slot, MERCHANT, "b1",
                                    (last_row["created_at_ms"], last_row["order_id"]), 4)
    assert [row["idempotency_key"] for row, _ in rest] == ["k1", "k0"]

    assert not await store.has_finished_orders(
        [slot for slot in slots if slot != slot_of(MERCHANT, "b1", SLOTS)])
