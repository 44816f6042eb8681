"""One migration run: read the legacy side entity by entity, compare each batch with what
flashtx already holds, and write only the differences (COPY for new rows, one transaction
per batch). A first import, a re-run that changes nothing, the resumption of an
interrupted run and an incremental re-sync are therefore the same operation.

Order of entities: merchants, customers, SKUs, orders (with lines and transitions), then
stock — whose target on-hand is the legacy *available* units plus the units flashtx's
imported orders hold (reserved or sold), so that flashtx's available equals the legacy
available. Removed legacy rows: an imported order no longer in the legacy data is
cancelled (refunded when paid); a removed SKU keeps its catalogue row and has its stock
zeroed (adjustment reason ``legacy-removed``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from flashtx.adapters.legacy import target
from flashtx.adapters.legacy.mapping import Mapping
from flashtx.adapters.legacy.progress import EntityProgress
from flashtx.adapters.legacy.reconcile import reconcile
from flashtx.adapters.legacy.source import LegacySource, open_source
from flashtx.adapters.legacy.transform import (
    Catalogue,
    OrderRow,
    Rejected,
    checksum_of,
    convert_customer,
    convert_merchant,
    convert_order,
    convert_sku,
    to_int,
)
from flashtx.adapters.postgres import Store
from flashtx.engine.config import Config
from flashtx.engine.sharding import slot_of

__all__ = ["EntityCounts", "SyncOptions", "SyncReport", "run_sync", "transition_path"]

RESERVED, PAID, FULFILLED, CANCELLED, EXPIRED = 1, 2, 3, 4, 5
SLOTS_TOTAL = Config().slots_total


@dataclass(frozen=True, slots=True)
class SyncOptions:
    target_dsn: str
    source_dsn: str | None = None  # the legacy database; None: the target's
    csv_dir: Path | None = None
    merchants: frozenset[str] = frozenset()  # flashtx merchant ids to migrate; empty: all
    batch_rows: int = 5000
    reject_path: Path | None = None
    verify_only: bool = False
    quiet: bool = False
    now_ms: int | None = None
    # called after each committed batch with (entity, batch number); tests interrupt here
    on_batch: Callable[[str, int], None] | None = None


@dataclass(slots=True)
class EntityCounts:
    legacy: int = 0  # rows read from the legacy side
    rejected: int = 0
    skipped: int = 0  # other merchants' rows, SKIP statuses
    inserted: int = 0
    updated: int = 0
    removed: int = 0
    accepted: int = 0  # rows that flashtx should hold; the checksum is over these
    checksum: int = 0

    def add(self, fields: tuple[Any, ...]) -> None:
        self.accepted += 1
        self.checksum += checksum_of(fields)


@dataclass(slots=True)
class SyncReport:
    merchant_ids: list[str] = field(default_factory=list)
    entities: dict[str, EntityCounts] = field(default_factory=dict)
    reconciliation: list[Any] = field(default_factory=list)
    reject_path: Path | None = None
    seconds: float = 0.0

    def counts(self, name: str) -> EntityCounts:
        return self.entities.setdefault(name, EntityCounts())

    @property
    def rejected(self) -> int:
        return sum(counts.rejected for counts in self.entities.values())

    @property
    def written(self) -> int:
        return sum(c.inserted + c.updated + c.removed for c in self.entities.values())

    @property
    def reconciled(self) -> bool:
        return all(row.matches for row in self.reconciliation)


def transition_path(current: int, wanted: int) -> list[tuple[int, bool]] | None:
    """(status, refunded) transitions that take an order from current to wanted along
    the engine's state machine, or None when it cannot go there."""
    if current == wanted:
        return []
    if current == RESERVED and wanted in (PAID, CANCELLED, EXPIRED):
        return [(wanted, False)]
    if current == RESERVED and wanted == FULFILLED:
        return [(PAID, False), (FULFILLED, False)]
    if current == PAID and wanted == FULFILLED:
        return [(FULFILLED, False)]
    if current == PAID and wanted == CANCELLED:
        return [(CANCELLED, True)]
    return None


class Rejects:
    """The reject file: one JSON object a line with entity, legacy key and reason."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def write(self, entity: str, key: Any, reason: str) -> None:
        if self.path is None:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w")
        self._handle.write(json.dumps({"entity": entity, "legacy_key": str(key),
                                       "reason": reason}) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def run_sync(mapping: Mapping, options: SyncOptions) -> SyncReport:
    started = time.perf_counter()
    store = await Store.open(options.target_dsn)
    report = SyncReport(reject_path=options.reject_path)
    rejects = Rejects(options.reject_path)
    try:
        async with store.pool.acquire() as connection:
            if not options.verify_only and not await target.lock_migration(connection):
                raise RuntimeError("another flashtx migrate is running against this database")
            source_dsn = options.source_dsn or options.target_dsn
            async with open_source(mapping, source_dsn, options.csv_dir) as source:
                with EntityProgress(options.quiet) as progress:
                    run = _Run(mapping, options, source, connection, rejects, progress, report)
                    await run.all()
            report.reconciliation = await reconcile(connection, report.merchant_ids,
                                                    report.counts)
    finally:
        rejects.close()
        await store.close()
    report.seconds = time.perf_counter() - started
    return report


class _Run:
    def __init__(self, mapping: Mapping, options: SyncOptions, source: LegacySource,
                 connection: asyncpg.Connection, rejects: Rejects, progress: EntityProgress,
                 report: SyncReport) -> None:
        self.mapping = mapping
        self.options = options
        self.source = source
        self.target = connection
        self.rejects = rejects
        self.progress = progress
        self.report = report
        self.catalogue = Catalogue()
        self.now_ms = options.now_ms or int(time.time() * 1000)
        self.write = not options.verify_only
        self.batches = 0

    def scales(self, entity: str) -> dict[str, float | None]:
        mapped = self.mapping.entities.get(entity)
        return {} if mapped is None else {n: c.scale for n, c in mapped.columns.items()}

    def reject(self, entity: str, key: Any, reason: str) -> None:
        self.report.counts(entity).rejected += 1
        self.rejects.write(entity, key, reason)

    def committed(self, entity: str) -> None:
        self.batches += 1
        if self.options.on_batch is not None:
            self.options.on_batch(entity, self.batches)

    async def all(self) -> None:
        await self.merchants()
        await self.customers()
        await self.skus()
        await self.orders()
        await self.stock()

    async def merchants(self) -> None:
        counts = self.report.counts("merchants")
        scales = self.scales("merchants")
        task = self.progress.add("merchants", await self.source.count("merchants"))
        valid: list[tuple[str, Any]] = []
        async for batch in self.source.rows("merchants", self.options.batch_rows):
            for row in batch:
                counts.legacy += 1
                try:
                    merchant = convert_merchant(row, scales,
                                                self.mapping.payment_window_s_default,
                                                self.now_ms)
                except Rejected as error:
                    self.reject("merchants", row["key"], error.reason)
                    continue
                valid.append((row["key"], merchant))
            self.progress.advance(task, len(batch))
        await self._save_merchants(valid)

    async def _save_merchants(self, valid: list[tuple[str, Any]]) -> None:
        counts = self.report.counts("merchants")
        selected = self.options.merchants
        for key, merchant in valid:
            if selected and merchant.merchant_id not in selected:
                self.catalogue.skipped_merchants.add(str(key))
                counts.skipped += 1
                continue
            self.catalogue.merchants[str(key)] = merchant
            counts.add(merchant[:3])
        chosen = list(self.catalogue.merchants.values())
        self.report.merchant_ids = sorted(merchant.merchant_id for merchant in chosen)
        existing = await target.existing_merchants(self.target, self.report.merchant_ids)
        changed = [m for m in chosen if existing.get(m.merchant_id) != (m.name,
                                                                         m.payment_window_s)]
        counts.inserted = sum(1 for m in changed if m.merchant_id not in existing)
        counts.updated = len(changed) - counts.inserted
        if changed and self.write:
            await target.upsert_merchants(self.target, changed)
            self.committed("merchants")

    async def customers(self) -> None:
        if "customers" not in self.mapping.entities:
            return
        self.catalogue.customers_mapped = True
        counts = self.report.counts("customers")
        task = self.progress.add("customers", await self.source.count("customers"))
        async for batch in self.source.rows("customers", self.options.batch_rows):
            for row in batch:
                counts.legacy += 1
                try:
                    self.catalogue.buyers[str(row["key"])] = convert_customer(row)
                    counts.accepted += 1
                except Rejected as error:
                    self.reject("customers", row["key"], error.reason)
            self.progress.advance(task, len(batch))

    async def skus(self) -> None:
        counts = self.report.counts("skus")
        scales = self.scales("skus")
        existing = await target.existing_skus(self.target, self.report.merchant_ids)
        self.other_skus: set[str] = set()  # of merchants not migrated, or rejected
        seen: set[tuple[str, str]] = set()
        task = self.progress.add("skus", await self.source.count("skus"))
        async for batch in self.source.rows("skus", self.options.batch_rows):
            new_rows, changed_rows = [], []
            for row in batch:
                counts.legacy += 1
                try:
                    sku = convert_sku(row, scales, self.catalogue, self.now_ms)
                    if sku is not None and (sku.merchant_id, sku.sku_id) in seen:
                        raise Rejected(f"sku_id {sku.sku_id} appears twice for its merchant")
                except Rejected as error:
                    self.reject("skus", row["key"], error.reason)
                    self.other_skus.add(str(row["key"]))
                    continue
                if sku is None:
                    counts.skipped += 1
                    self.other_skus.add(str(row["key"]))
                    continue
                seen.add((sku.merchant_id, sku.sku_id))
                self.catalogue.skus[str(row["key"])] = sku
                counts.add((sku.merchant_id, sku.sku_id, sku.name, sku.price_minor,
                            sku.per_buyer_limit))
                held = existing.get((sku.merchant_id, sku.sku_id))
                if held is None:
                    new_rows.append(sku)
                elif held != (sku.name, sku.price_minor, sku.per_buyer_limit):
                    changed_rows.append(sku)
            counts.inserted += len(new_rows)
            counts.updated += len(changed_rows)
            if self.write and (new_rows or changed_rows):
                async with self.target.transaction():
                    await target.copy(self.target, "skus", new_rows)
                    await target.update_skus(self.target, changed_rows)
                self.committed("skus")
            self.progress.advance(task, len(batch))
        self.current_skus = seen

    async def orders(self) -> None:
        counts = self.report.counts("orders")
        task = self.progress.add("orders", await self.source.count("orders"))
        if self.write:
            await target.create_seen_table(self.target)
        async for batch in self.source.orders(self.options.batch_rows):
            converted = self._convert_orders(batch)
            existing = await target.existing_orders(self.target,
                                                    [order.order_id for order in converted])
            orders, lines, transitions = self._order_changes(converted, existing)
            counts.inserted += len(orders)
            self.report.counts("order_lines").inserted += len(lines)
            if self.write:
                async with self.target.transaction():
                    await target.copy(self.target, "orders", orders)
                    await target.copy(self.target, "order_lines", lines)
                    await target.copy(self.target, "order_transitions", transitions)
                    await target.add_seen(self.target,
                                          [f"legacy:{row['key']}" for row, _ in batch])
                self.committed("orders")
            self.progress.advance(task, len(batch))
        if self.write:
            await self._remove_orders()
            async with self.target.transaction():
                await target.mark_finished(self.target, self.report.merchant_ids)

    def _convert_orders(self, batch: list[tuple[Any, list[Any]]]) -> list[OrderRow]:
        counts = self.report.counts("orders")
        line_counts = self.report.counts("order_lines")
        scales, line_scales = self.scales("orders"), self.scales("order_lines")
        converted: list[OrderRow] = []
        for row, lines in batch:
            counts.legacy += 1
            line_counts.legacy += len(lines)
            try:
                order = convert_order(row, lines, scales, line_scales, self.mapping.status_map,
                                      self.catalogue)
            except Rejected as error:
                self.reject("orders", row["key"], error.reason)
                continue
            if order is None:
                counts.skipped += 1
                continue
            converted.append(order)
            counts.add(order[:4] + order[5:9])
            for line in order.lines:
                line_counts.add((order.order_id, line.line_no, line.sku_id, line.quantity,
                                 line.unit_price_minor))
        return converted

    def _order_changes(self, converted: list[OrderRow], existing: dict[str, Any],
                       ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                  list[tuple[Any, ...]]]:
        orders: list[tuple[Any, ...]] = []
        lines: list[tuple[Any, ...]] = []
        transitions: list[tuple[Any, ...]] = []
        for order in converted:
            held = existing.get(order.order_id)
            if held is None:
                orders.append(order[:8])
                lines.extend((order.order_id, line.line_no, order.merchant_id, line.sku_id,
                              line.sku_slot, line.quantity, line.unit_price_minor)
                             for line in order.lines)
                transitions.append((order.order_id, 1, order.merchant_id, order.slot,
                                    order.status, "imported", False, order.created_at_ms))
                continue
            header = (held["buyer_id"], held["total_minor"], held["created_at_ms"],
                      held["payment_deadline_ms"])
            if header != (order.buyer_id, order.total_minor, order.created_at_ms,
                          order.payment_deadline_ms):
                self.reject("orders", order.idempotency_key[7:], "changed in legacy after "
                            "import (buyer, total, time or deadline); flashtx orders are "
                            "immutable, left as imported")
                continue
            transitions.extend(self._status_change(order, held))
        return orders, lines, transitions

    def _status_change(self, order: OrderRow, held: Any) -> list[tuple[Any, ...]]:
        """Transitions that bring flashtx to the legacy status, when the legacy side changed
        since the importer last wrote this order. When only flashtx moved (it expired an
        unpaid order, say), flashtx is left alone."""
        if order.status in (held["legacy_status"], held["status"]):
            return []
        path = transition_path(held["status"], order.status)
        if path is None:
            self.reject("orders", order.idempotency_key[7:],
                        f"legacy status is now {order.status} but flashtx has "
                        f"{held['status']}, which cannot move there; left as is")
            return []
        self.report.counts("orders").updated += 1
        return [(order.order_id, held["sequence"] + step, order.merchant_id, order.slot,
                 status, "legacy-resync", refunded, self.now_ms)
                for step, (status, refunded) in enumerate(path, start=1)]

    async def _remove_orders(self) -> None:
        """Imported orders gone from the legacy data: open ones are cancelled, paid ones
        cancelled with a refund; others keep their status with a marker transition."""
        removed = await target.removed_orders(self.target, self.report.merchant_ids)
        transitions = []
        for row in removed:
            status, refunded = {RESERVED: (CANCELLED, False),
                                PAID: (CANCELLED, True)}.get(row["status"],
                                                             (row["status"], False))
            transitions.append((row["order_id"], row["sequence"] + 1, row["merchant_id"],
                                row["slot"], status, "legacy-removed", refunded, self.now_ms))
        self.report.counts("orders").removed += len(transitions)
        if transitions:
            async with self.target.transaction():
                await target.copy(self.target, "order_transitions", transitions)
            self.committed("orders")

    async def stock(self) -> None:
        counts = self.report.counts("stock")
        on_hand = await target.on_hand_units(self.target, self.report.merchant_ids)
        held = await target.held_units(self.target, self.report.merchant_ids)
        available: dict[tuple[str, str], int] = {}
        task = self.progress.add("stock", len(self.catalogue.skus))
        async for batch in self.source.stock(self.options.batch_rows):
            for row in batch:
                counts.legacy += 1
                sku = self.catalogue.skus.get(str(row["sku"]))
                if sku is None:
                    if str(row["sku"]) not in self.other_skus:
                        self.reject("stock", row["sku"], "stock of an unknown SKU")
                    continue
                try:
                    units = to_int(row["available"])
                    if units < 0:
                        raise Rejected(f"available is negative ({units}); taken as 0")
                except Rejected as error:
                    self.reject("stock", row["sku"], f"available {error.reason}")
                    units = 0
                available[(sku.merchant_id, sku.sku_id)] = units
        adjustments = self._adjustments(available, on_hand, held)
        for start in range(0, len(adjustments), self.options.batch_rows):
            chunk = adjustments[start:start + self.options.batch_rows]
            if self.write:
                async with self.target.transaction():
                    await target.copy(self.target, "stock_adjustments", chunk)
                self.committed("stock")
        self.progress.advance(task, len(self.catalogue.skus))

    def _adjustments(self, available: dict[tuple[str, str], int],
                     on_hand: dict[tuple[str, str], tuple[int, str | None]],
                     held: dict[tuple[str, str], int]) -> list[tuple[Any, ...]]:
        """(merchant_id, sku_id, slot, delta, reason, at_ms) that bring each SKU's on-hand
        to legacy available + units held by its orders. Every imported SKU gets at least
        one importer adjustment, which marks it as imported."""
        counts = self.report.counts("stock")
        adjustments: list[tuple[Any, ...]] = []
        for sku in self.catalogue.skus.values():
            key = (sku.merchant_id, sku.sku_id)
            units = available.get(key, 0)
            current, reason = on_hand.get(key, (0, None))
            delta = units + held.get(key, 0) - current
            if units:
                counts.add((sku.merchant_id, sku.sku_id, units))
            if delta == 0 and reason not in (None, "legacy-removed"):
                continue
            counts.inserted += reason is None
            counts.updated += reason is not None
            adjustments.append((sku.merchant_id, sku.sku_id, sku.slot, delta,
                                "legacy-import" if reason is None else "legacy-resync",
                                self.now_ms))
        for (merchant_id, sku_id), (current, reason) in on_hand.items():
            if reason in (None, "legacy-removed") or (merchant_id, sku_id) in self.current_skus:
                continue
            counts.removed += 1
            adjustments.append((merchant_id, sku_id, slot_of(merchant_id, sku_id, SLOTS_TOTAL),
                                held.get((merchant_id, sku_id), 0) - current, "legacy-removed",
                                self.now_ms))
        return adjustments
