"""The batch journal of an order shard (migration 0014, docs/durability.md): each group
commit writes one row, its batch's changes as columns (engine/journal_batch.py), with the
idempotency keys of the orders it places; an order is acknowledged once that row commits.
A `Materializer` behind the commits writes the query tables from the batches, in order,
several at once, deleting their rows in the same transaction; a shard's restart
materializes what is left (`materialize_pending`) before it reads the tables.

Reads stay exact: an order's change leaves its shard's `not_materialized` set only once
materialized, so the order leaves memory (and its sales count from settled_sales) only
once the tables hold it. A committed batch is as durable as before (a restart
materializes it first): answers, handovers and stock releases wait for the commit
alone."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from flashtx.actors import metrics
from flashtx.engine.errors import InvariantViolation
from flashtx.engine.journal_batch import decode_batch, encode_batch

log = logging.getLogger(__name__)

# Column kinds per table of a batch (engine.journal_batch): the rows are the query
# tables' own (adapters/postgres.py: PLACED_ORDER_COLUMNS, …).
KINDS = {"orders": "ssssiiiisss", "lines": "sissiiis", "transitions": "sisiis?is",
         "outbox": "ssssibi", "carts": "sssisii", "carts_gone": "sss", "finished": "si",
         "settled": "iisssssi"}

CartKey = tuple[str, str, str]


class JournalStore(Protocol):
    """What the journal needs of a store (adapters.postgres.Store, the simulator's)."""

    async def append_journal(self, owners: int, owner: int, position: int,
                             created_at_ms: int, orders: int, payload: bytes,
                             keys: tuple[list[str], list[str], list[str]]) -> None: ...

    async def has_journal(self, owners: int, owner: int, position: int) -> bool: ...

    async def materialize_journal(self, owners: int, owner: int, positions: list[int],
                                  tables: BatchTables) -> bool: ...

    async def pending_journal(self) -> list[tuple[int, int, int, bytes]]: ...


@dataclass
class BatchTables:
    """The rows one or more batches write to the query tables. A cart's latest write
    wins (None: gone); settled units add up per key."""

    orders: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    transitions: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    carts: dict[CartKey, tuple[Any, ...] | None] = field(default_factory=dict)
    finished: list[tuple[str, int]] = field(default_factory=list)
    settled: dict[tuple[Any, ...], int] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: list[Any], owners: int) -> BatchTables:
        """From journal entries: ("order", row, lines), ("transition", row or None, outbox
        row, finished_rows or None), ("cart", key, row or None)."""
        tables = cls()
        orders, lines, transitions, outbox = (tables.orders, tables.lines,
                                              tables.transitions, tables.outbox)
        carts, settled = tables.carts, tables.settled
        for entry in entries:
            kind = entry[0]
            if kind == "order":
                orders.append(entry[1])
                lines.extend(entry[2])
            elif kind == "cart":
                carts[entry[1]] = entry[2]
            else:
                if entry[1] is not None:
                    row = entry[1]
                    transitions.append((*row[:4], int(row[4]), *row[5:]))
                outbox.append(entry[2])
                if entry[3] is not None:
                    tables.finished.append(entry[3][0])
                    for slot, *rest, units in entry[3][1]:  # one row per key
                        key = (owners, slot % owners, *rest)
                        settled[key] = settled.get(key, 0) + units
        return tables

    def add(self, later: BatchTables) -> None:
        """Takes a later batch's rows in (its carts win)."""
        self.orders += later.orders
        self.lines += later.lines
        self.transitions += later.transitions
        self.outbox += later.outbox
        self.finished += later.finished
        for key, row in later.carts.items():
            self.carts.pop(key, None)  # kept in the order of their last write
            self.carts[key] = row
        for key, units in later.settled.items():
            self.settled[key] = self.settled.get(key, 0) + units

    def key_columns(self) -> tuple[list[str], list[str], list[str]]:
        """(merchant ids, idempotency keys, order ids) of the orders placed."""
        orders = self.orders
        return ([row[1] for row in orders], [row[3] for row in orders],
                [row[0] for row in orders])

    def kept_carts(self) -> list[tuple[Any, ...]]:
        return [row for row in self.carts.values() if row is not None]

    def gone_carts(self) -> list[CartKey]:
        return [key for key, row in self.carts.items() if row is None]

    def settled_rows(self) -> list[tuple[Any, ...]]:
        return [(*key, units) for key, units in self.settled.items()]

    def encode(self, position: int) -> bytes:
        return encode_batch(position, {
            "orders": (KINDS["orders"], self.orders), "lines": (KINDS["lines"], self.lines),
            "transitions": (KINDS["transitions"], self.transitions),
            "outbox": (KINDS["outbox"], self.outbox),
            "carts": (KINDS["carts"], self.kept_carts()),
            "carts_gone": (KINDS["carts_gone"], self.gone_carts()),
            "finished": (KINDS["finished"], self.finished),
            "settled": (KINDS["settled"], self.settled_rows())})

    @classmethod
    def decode(cls, payload: bytes) -> tuple[int, BatchTables]:
        """(position, tables) of a journal row (CorruptBatch: not a batch)."""
        batch = decode_batch(payload)
        carts: dict[CartKey, tuple[Any, ...] | None] = {}
        for key in batch.rows("carts_gone"):
            carts[(key[0], key[1], key[2])] = None
        for row in batch.rows("carts"):
            carts[(row[0], row[1], row[2])] = row
        return batch.position, cls(
            batch.rows("orders"), batch.rows("lines"), batch.rows("transitions"),
            batch.rows("outbox"), carts,
            [(row[0], row[1]) for row in batch.rows("finished")],
            {tuple(row[:-1]): row[-1] for row in batch.rows("settled")})


class Materializer:
    """Writes an order shard's committed batches to the query tables, in order, up to
    `rows_max` events and carts per transaction, waiting up to `delay_s` after a batch
    comes for more to join it (fewer, larger transactions); a failed write is tried
    again (the batches stay queued). `batches_max` bounds the queue: the shard refuses
    new work while it is full (`has_room`)."""

    def __init__(self, store: JournalStore, owners: int, owner: int, name: str,
                 batches_max: int, rows_max: int, retry_delay_s_max: float,
                 delay_s: float = 0.0) -> None:
        self._store = store
        self._owners, self._owner = owners, owner
        self._name = name
        self._batches_max = batches_max
        self._rows_max = rows_max
        self._retry_delay_s_max = retry_delay_s_max
        self._delay_s = delay_s
        self._queue: deque[tuple[int, BatchTables, asyncio.Future[None], float]] = deque()
        self._wakeup = asyncio.Event()
        self.materialized_batches = 0
        self.materialized_rows = 0
        self.seconds = 0.0
        self.failing_since: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, position: int, tables: BatchTables) -> asyncio.Future[None]:
        """Queues a committed batch; answers a future done once it is materialized."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((position, tables, future, time.monotonic()))
        self._wakeup.set()
        return future

    def has_room(self) -> bool:
        return len(self._queue) < self._batches_max

    @property
    def lag_batches(self) -> int:
        return len(self._queue)

    def lag_s(self) -> float:
        """How long the oldest batch not materialized has waited."""
        return time.monotonic() - self._queue[0][3] if self._queue else 0.0

    async def through_now(self) -> None:
        """Waits until every batch queued so far is materialized."""
        if self._queue:
            await asyncio.shield(self._queue[-1][2])

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            while self._queue:
                taken: list[tuple[int, BatchTables, asyncio.Future[None], float]] = []
                rows = 0
                for item in self._queue:
                    size = len(item[1].outbox) + len(item[1].carts)
                    if taken and rows + size > self._rows_max:
                        break
                    taken.append(item)
                    rows += size
                merged = BatchTables()
                for _, tables, _, _ in taken:
                    merged.add(tables)
                await self._materialize([item[0] for item in taken], merged)
                for _ in taken:
                    self._queue.popleft()
                for _, _, future, _ in taken:
                    if not future.done():
                        future.set_result(None)
                self.materialized_batches += len(taken)
                self.materialized_rows += rows
                metrics.record(metrics.batch_items(), rows, hop="materialize")

    async def _materialize(self, positions: list[int], tables: BatchTables) -> None:
        delay_s = 0.05
        while True:
            started = time.perf_counter()
            try:
                await self._store.materialize_journal(self._owners, self._owner, positions,
                                                       tables)
                self.seconds += time.perf_counter() - started
                if self.failing_since is not None:
                    log.warning("%s: materializing resumed", self._name)
                self.failing_since = None
                return
            except InvariantViolation:
                log.critical("%s: a journal batch could not be materialized; restarting",
                             self._name, exc_info=True)
                os._exit(70)
            except Exception as error:  # database down or slow: keep the batches, retry
                if self.failing_since is None:
                    log.warning("%s: materializing failed, retrying: %r", self._name, error)
                    self.failing_since = time.monotonic()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._retry_delay_s_max)


async def materialize_pending(store: JournalStore, owners: int, owner: int,
                              rows_max: int = 20_000) -> int:
    """Materializes the journal rows a restarted shard finds: its own, and those of a
    layout with another number of shards (a reshard that did not finish), each writer's
    in order, several rows per transaction (up to `rows_max` events and carts). Answers
    how many rows it materialized (rows another shard materialized meanwhile are
    skipped: the store answers False)."""
    done = 0
    group: list[int] = []
    merged = BatchTables()
    writer = (owners, owner)

    async def flush() -> int:
        nonlocal merged
        count = 0
        if group and await store.materialize_journal(*writer, list(group), merged):
            count = len(group)
        group.clear()
        merged = BatchTables()
        return count

    for row_owners, row_owner, position, payload in await store.pending_journal():
        if row_owners == owners and row_owner != owner:
            continue  # another live shard's
        _, tables = BatchTables.decode(payload)
        size = len(tables.outbox) + len(tables.carts)
        if (row_owners, row_owner) != writer or (
                group and len(merged.outbox) + len(merged.carts) + size > rows_max):
            done += await flush()
            writer = (row_owners, row_owner)
        group.append(position)
        merged.add(tables)
    return done + await flush()
