"""What each actor writes and reads: the rows of the ledger, built from engine values.

Kept apart from the actors so the row shapes can be read (and tested) in one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Any

import asyncpg

from flashtx.adapters.events import ORDER_EVENT_TYPES
from flashtx.adapters.postgres import Store, Timeouts
from flashtx.adapters.wire import order_event, placed_event
from flashtx.engine.campaigns import Campaign, CampaignSku
from flashtx.engine.carts import Cart, CartKey, CartLine
from flashtx.engine.config import Config
from flashtx.engine.errors import InvariantViolation
from flashtx.engine.order_state import settled_buyer
from flashtx.engine.orders import Order, OrderChange, OrderSnapshot, OrderStatus, order_slot
from flashtx.engine.sharding import sku_slot

log = logging.getLogger(__name__)

PLACED_EVENT = ORDER_EVENT_TYPES["placed"]



async def open_store(config: Config, pool_size: int) -> Store | None:
    """The configured database, with its timeouts; None when persistence is off (dsn
    "none")."""
    if config.postgres_dsn == "none":
        return None
    return await Store.open(config.postgres_dsn, pool_size, Timeouts.of(config))


def order_rows(order: Order | OrderSnapshot,
               slots_total: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    row = (order.order_id, order.merchant_id, order.buyer_id, order.idempotency_key,
           order_slot(order.order_id), order.total_minor, order.created_at_ms,
           order.payment_deadline_ms, order.key_id, order.campaign_id, order.currency)
    order_id, merchant_id = order.order_id, order.merchant_id
    stock_keys = order.stock_keys or ("",) * len(order.lines)
    lines = [(order_id, number, merchant_id, sku_id,
              sku_slot(merchant_id, sku_id, slots_total), quantity, price, stock_key)
             for number, ((sku_id, quantity, price), stock_key) in enumerate(
                 zip(order.lines, stock_keys, strict=True))]
    return row, lines


def placed_entries(order: Order, at_ms: int, slots_total: int
                   ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The journal entries of a placed order, built in one go (the hot path): as
    ("order", order_rows…) and ("transition", transition_rows…) build them."""
    order_id, merchant_id = order.order_id, order.merchant_id
    slot = int(order_id[:4], 16)  # its own id: order_slot without the checks
    row = (order_id, merchant_id, order.buyer_id, order.idempotency_key, slot,
           order.total_minor, order.created_at_ms, order.payment_deadline_ms, order.key_id,
           order.campaign_id, order.currency)
    lines = order.lines
    if len(lines) == 1 and not order.stock_keys:
        (sku_id, quantity, price), = lines
        line_rows = [(order_id, 0, merchant_id, sku_id,
                      sku_slot(merchant_id, sku_id, slots_total), quantity, price, "")]
    else:
        line_rows = order_rows(order, slots_total)[1]
    event_id = f"{order_id}:1"
    event = (event_id, merchant_id, PLACED_EVENT, order_id, 1,
             placed_event(order, event_id), at_ms)
    return ("order", row, line_rows), ("transition", None, event, None)


def transition_rows(change: OrderChange,
                    order: Order) -> tuple[tuple[Any, ...] | None, tuple[Any, ...]]:
    """A transition and its outbox row with the serialized event (same transaction): the
    relay then reads the outbox alone. "placed" has no transition row: the order's own
    row implies it (migration 0008)."""
    order_id, sequence = change.order_id, change.sequence
    refunded = order.refunded if change.status == OrderStatus.CANCELLED else False
    transition = None if change.event == "placed" else (
        order_id, sequence, change.merchant_id, order_slot(order_id), change.status,
        change.event, refunded, change.at_ms, order.payment_reference)
    event_type = ORDER_EVENT_TYPES[change.event]
    event = (f"{order_id}:{sequence}", change.merchant_id, event_type, order_id, sequence,
             order_event(order, event_type, sequence, change.status, refunded, change.at_ms),
             change.at_ms)
    return transition, event


FINISHED = frozenset({int(OrderStatus.FULFILLED), int(OrderStatus.CANCELLED),
                      int(OrderStatus.EXPIRED)})


def finished_rows(change: OrderChange, order: Order) -> tuple[Any, ...] | None:
    """A change that finishes its order: ((order_id, at_ms), settled_sales rows: the
    units a fulfilment sold, which stay counted once the order leaves memory; per buyer
    for a campaign order (its per-buyer limits count the whole campaign), else per SKU
    alone: ``engine.order_state.settled_key``)."""
    if change.status not in FINISHED:
        return None
    settled: list[tuple[Any, ...]] = []
    if change.status == OrderStatus.FULFILLED:
        slot = order_slot(order.order_id)
        for (sku_id, quantity), (stock_key, _) in zip(order.unpriced_lines,
                                                      order.stock_lines, strict=True):
            settled.append((slot, order.merchant_id, settled_buyer(order), stock_key,
                            sku_id, order.campaign_id, quantity))
    return (order.order_id, change.at_ms), settled


def _order_of(entry: Any) -> str | None:
    """The order an order or transition entry belongs to (a cart entry: None)."""
    if entry[0] == "order":
        return str(entry[1][0])
    if entry[0] == "transition":
        return str(entry[2][3])  # its outbox row's order id
    return None


async def commit_order_entries(store: Store, entries: Sequence[Any], retry: bool = False,
                               owners: int = 1, refused: Container[str] = frozenset(),
                               write: Callable[[Sequence[Any], bool], Awaitable[None]]
                               | None = None) -> list[str]:
    """entries: ("order", row, lines), ("transition", row, event, finished_rows or
    None), ("cart", key, row or None: gone) tuples; `owners`: the number of order shards
    (fulfilled units are summed per shard). A cart's latest entry wins. On a
    `retry`, entries whose earlier try committed (its answer lost) are not written again.
    `write(entries, retry)`: how they are written (the batch journal's row, by the order
    journal); by default, to the query tables at once.

    An idempotency key is unique per merchant across the order shards, and orders route
    by buyer: another shard may have committed an order with the same key (another buyer,
    or a concurrent request). The database refuses the commit; the orders whose key it
    holds for another order are taken out (with every change of theirs: `refused` names
    the orders refused by earlier commits, whose later changes may still be queued), the
    rest is committed, and the ids refused now are answered: the shard refuses those
    orders (ALREADY_EXISTS) and frees their stock. A refusal with no such order means
    memory is wrong: InvariantViolation."""
    newly: set[str] = set()
    if write is None:
        async def write(entries: Sequence[Any], retry: bool) -> None:
            await _commit_entries(store, entries, retry, owners)
    while True:
        if refused or newly:
            entries = [e for e in entries if (order_id := _order_of(e)) not in newly
                       and order_id not in refused]
        try:
            try:
                await write(entries, retry)
                return sorted(newly)
            except asyncpg.IntegrityConstraintViolationError as error:
                refusal = error
            taken = await _keys_taken(store, entries)
        except Exception as failed:
            # The refusals found stand whatever became of this try (the rest may have
            # committed with its answer lost): the retry must know them, or it would take
            # the batch for proof that the refused orders committed too.
            if newly:
                raise RefusedThenFailed(sorted(newly)) from failed
            raise
        if not taken:
            raise InvariantViolation(f"database refused the journal: {refusal}") from refusal
        log.warning("idempotency keys already used by orders of other shards: %d orders "
                    "refused (%s)", len(taken), ", ".join(sorted(taken)[:5]))
        newly |= taken


class RefusedThenFailed(Exception):
    """A commit refused these orders (their keys were other shards'), then failed or lost
    its answer for the rest: the caller records the refusals before it retries."""

    def __init__(self, order_ids: list[str]) -> None:
        super().__init__(f"{len(order_ids)} orders refused, then the commit failed")
        self.order_ids = order_ids


async def _keys_taken(store: Store, entries: Sequence[Any]) -> set[str]:
    """The batch's new orders whose (merchant, idempotency key) the database holds for
    another order (order_keys, migration 0014)."""
    placed = {(e[1][1], e[1][3]): e[1][0] for e in entries if e[0] == "order"}
    if not placed:
        return set()
    found = await store.keys_taken([m for m, _ in placed], [k for _, k in placed])
    return {placed[key] for key, order_id in found.items()
            if placed.get(key, order_id) != order_id}


async def _commit_entries(store: Store, entries: Sequence[Any], retry: bool,
                          owners: int) -> None:
    orders, lines, transitions, outbox, finished = [], [], [], [], []
    settled: dict[tuple[Any, ...], int] = {}
    carts: dict[Any, Any] = {}
    for entry in entries:
        if entry[0] == "order":
            orders.append(entry[1])
            lines.extend(entry[2])
        elif entry[0] == "cart":
            carts[entry[1]] = entry[2]
        else:
            if entry[1] is not None:
                transitions.append(entry[1])
            outbox.append(entry[2])
            if entry[3] is not None:
                finished.append(entry[3][0])
                for slot, *rest, units in entry[3][1]:  # one row per key: upserts add once
                    key = (owners, slot % owners, *rest)
                    settled[key] = settled.get(key, 0) + units
    if retry and outbox and await store.has_event(outbox[0][0]):
        return
    kept = [row for row in carts.values() if row is not None]
    gone = [key for key, row in carts.items() if row is None]
    await store.commit_orders(orders, lines, transitions, outbox, kept, gone, finished,
                              [(*key, units) for key, units in settled.items()])


def restore_order(row: Any, lines: Any) -> Order:
    """An order from its `load_orders` row and lines."""
    priced = tuple((sku_id, quantity, price) for sku_id, quantity, price, _ in lines)
    stock_keys = tuple(key for *_, key in lines)
    return Order(row["order_id"], row["merchant_id"], row["buyer_id"], row["idempotency_key"],
                 priced, OrderStatus(row["status"]), row["total_minor"], row["created_at_ms"],
                 row["payment_deadline_ms"], row["sequence"], row["refunded"],
                 row["updated_at_ms"], row["key_id"], row["campaign_id"],
                 stock_keys if any(stock_keys) else (), row["currency"],
                 row["payment_reference"])


def campaign_row(campaign: Campaign) -> tuple[Any, ...]:
    skus = [{"sku_id": s.sku_id, "sale_price_minor": s.sale_price_minor,
             "allotment": s.allotment, "per_buyer_limit": s.per_buyer_limit,
             "units": s.units, "bucket_keys": list(s.bucket_keys)}
            for s in campaign.skus.values()]
    return (campaign.merchant_id, campaign.campaign_id, campaign.name, campaign.starts_at_ms,
            campaign.ends_at_ms, campaign.buckets, json.dumps(skus), campaign.created_at_ms,
            campaign.ended)


def campaign_from_row(row: Any) -> Campaign:
    skus = {s["sku_id"]: CampaignSku(s["sku_id"], s["sale_price_minor"], s["allotment"],
                                     s["per_buyer_limit"], s["units"], tuple(s["bucket_keys"]))
            for s in json.loads(row["skus"])}
    return Campaign(row["merchant_id"], row["campaign_id"], row["name"], row["starts_at_ms"],
                    row["ends_at_ms"], row["buckets"], skus, row["created_at_ms"], row["ended"])


def cart_entry(key: CartKey, cart: Cart | None, slot: int) -> tuple[str, CartKey, Any]:
    """A journal entry saving a cart (None or empty: the cart is gone)."""
    if cart is None or not cart.lines:
        return ("cart", key, None)
    lines: Any = [[line.sku_id, line.quantity, line.stock_key, line.held_until_ms,
                   line.hold_id] for line in cart.lines.values()]
    if cart.adds:  # with the request ids of its adds: an object, not a list of lines
        lines = {"lines": lines, "adds": [[request_id, sku_id, quantity] for request_id,
                                          (sku_id, quantity) in cart.adds.items()]}
    return ("cart", key, (*key, slot, json.dumps(lines), cart.updated_at_ms,
                          cart.expires_at_ms))


def cart_from_row(row: Any) -> Cart:
    key = (row["merchant_id"], row["buyer_id"], row["campaign_id"])
    saved = json.loads(row["lines"])
    adds: dict[str, tuple[str, int]] = {}
    if isinstance(saved, dict):  # lines and the request ids of the cart's adds
        adds = {request_id: (sku_id, quantity) for request_id, sku_id, quantity in saved["adds"]}
        saved = saved["lines"]
    # Lines saved before hold nonces have four fields (their hold: the plain id).
    lines = {fields[0]: CartLine(*fields) for fields in saved}
    return Cart(key, lines, row["updated_at_ms"], row["expires_at_ms"], adds)
