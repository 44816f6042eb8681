"""The simulator's database: the Store interface of adapters.postgres kept in memory, with
the same constraints (one order per key, one transition per sequence, one adjustment per
request id), and writes that fail on purpose: cleanly (nothing written), ambiguously
(written, but the answer is lost), or slowly. Each write applies all of its rows at one
instant, as a transaction commits, so a shard that crashes while waiting for it finds
either all of them or none when it recovers."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import asyncpg

from flashtx.actors.batch_journal import BatchTables
from flashtx.engine.errors import IdempotencyConflict, InvariantViolation
from flashtx.engine.orders import OrderStatus
from flashtx.engine.sharding import RoutingTable

LIVE = (OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.FULFILLED)
CAMPAIGN_COLUMNS = ("merchant_id", "campaign_id", "name", "starts_at_ms", "ends_at_ms",
                    "buckets", "skus", "created_at_ms", "ended")


class StoreDown(ConnectionError):
    """What the shards see when a write fails (asyncpg raises OSError subclasses too)."""


class StoreFaults(Protocol):
    """The store's share of ``world.Faults``."""

    @property
    def store_delay_ms(self) -> tuple[int, int]: ...

    @property
    def store_fail(self) -> float: ...

    @property
    def store_ambiguous(self) -> float: ...

    @property
    def materializer_lag_ms(self) -> tuple[int, int]: ...


class FaultSource(Protocol):
    """What the store draws its faults from (``world.World``)."""

    rng: random.Random

    @property
    def faults(self) -> StoreFaults: ...

    async def pause(self, range_ms: tuple[int, int]) -> None: ...

    @property
    def materializer_lag(self) -> random.Random | None: ...


class Tables:
    """The order tables (orders, order_lines, order_transitions, outbox, carts,
    settled_sales) with the constraints of Postgres."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.keys: dict[tuple[str, str], str] = {}
        self.lines: dict[str, list[tuple[int, str, int, int, str]]] = {}
        self.transitions: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.carts: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.outbox_orders: list[str] = []  # per outbox row (its id: position + 1), order id
        self.events: set[str] = set()  # outbox event ids (unique, as in Postgres)
        self.settled: dict[tuple[Any, ...], int] = defaultdict(int)  # settled_sales

    def check(self, orders: Sequence[tuple[Any, ...]], transitions: Sequence[tuple[Any, ...]],
              outbox: Sequence[tuple[Any, ...]]) -> None:
        """Raises what Postgres would for rows these tables refuse (before any write)."""
        for row in orders:
            if row[0] in self.orders or (row[1], row[3]) in self.keys:
                raise asyncpg.UniqueViolationError(f"duplicate order {row[0]} / {row[3]}")
        for row in transitions:
            if row[1] in self.transitions[row[0]]:
                raise asyncpg.UniqueViolationError(f"duplicate transition {row[:2]}")
        for row in outbox:
            if row[0] in self.events:
                raise asyncpg.UniqueViolationError(f"duplicate event {row[0]}")

    def apply(self, orders: Sequence[tuple[Any, ...]], lines: Sequence[tuple[Any, ...]],
              transitions: Sequence[tuple[Any, ...]], outbox: Sequence[tuple[Any, ...]],
              carts: Sequence[tuple[Any, ...]], carts_gone: Sequence[tuple[str, str, str]],
              finished: Sequence[tuple[str, int]], settled: Sequence[tuple[Any, ...]]
              ) -> None:
        for key in carts_gone:
            self.carts.pop(tuple(key), None)  # type: ignore[arg-type]
        for row in carts:
            self.carts[(row[0], row[1], row[2])] = dict(zip(
                ("merchant_id", "buyer_id", "campaign_id", "slot", "lines",
                 "updated_at_ms", "expires_at_ms"), row, strict=True))
        for row in orders:
            self.orders[row[0]] = dict(zip(
                ("order_id", "merchant_id", "buyer_id", "idempotency_key", "slot",
                 "total_minor", "created_at_ms", "payment_deadline_ms", "key_id",
                 "campaign_id", "currency"), row, strict=True))
            self.keys[(row[1], row[3])] = row[0]
            self.lines[row[0]] = []
            # The order's row implies its "placed" transition (migration 0008).
            self.transitions[row[0]][1] = {"status": 1, "refunded": False, "at_ms": row[6]}
        for row in lines:
            order_id, line_no, _, sku_id, _, quantity, price, stock_key = row
            self.lines[order_id].append((line_no, sku_id, quantity, price, stock_key))
        for row in transitions:
            order_id, sequence, _, _, status, _, refunded, at_ms, reference = row
            self.transitions[order_id][sequence] = {"status": status, "refunded": refunded,
                                                    "at_ms": at_ms, "reference": reference}
        self.outbox_orders.extend(row[3] for row in outbox)
        self.events.update(row[0] for row in outbox)
        for order_id, at_ms in finished:
            self.orders[order_id]["finished_at_ms"] = at_ms
        for sale in settled:
            self.settled[tuple(sale[:-1])] += sale[-1]


def _rows(tables: BatchTables) -> tuple[Any, ...]:
    return (tables.orders, tables.lines, tables.transitions, tables.outbox,
            tables.kept_carts(), tables.gone_carts(), tables.finished, tables.settled_rows())


class MemoryStore:
    def __init__(self, world: FaultSource) -> None:
        self.world = world
        self.skus: dict[tuple[str, str], dict[str, Any]] = {}
        self.adjustments: list[tuple[str, str, int, int, str, int, str | None]] = []
        self.request_ids: dict[tuple[str, str], tuple[str, int]] = {}
        # The tables as materialized (what reads see), and as every committed write
        # leaves them, the batch journal's rows applied at once (what the checks see).
        self.tables = Tables()
        self.truth = Tables()
        self.journal: dict[tuple[int, int, int], bytes] = {}  # rows not materialized
        self.order_keys: dict[tuple[str, str], str] = {}
        self.campaigns: list[dict[str, Any]] = []
        self.merchants: dict[str, dict[str, Any]] = {}
        self.api_keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.routing: RoutingTable | None = None
        self.settings: dict[str, str] = {}
        self.outbox = 0  # outbox rows of stock changes
        self.snapshots: dict[tuple[int, int], dict[str, Any]] = {}  # order_snapshots
        self.writes = 0

    # --- what the simulator checks against: every committed write ----------------------

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        return self.truth.orders

    @property
    def lines(self) -> dict[str, list[tuple[int, str, int, int, str]]]:
        return self.truth.lines

    @property
    def transitions(self) -> dict[str, dict[int, dict[str, Any]]]:
        return self.truth.transitions

    def on_hand(self, merchant_id: str, sku_id: str) -> int:
        return sum(a[3] for a in self.adjustments if a[0] == merchant_id and a[1] == sku_id)

    def status(self, order_id: str) -> OrderStatus:
        steps = self.transitions[order_id]
        return OrderStatus(steps[max(steps)]["status"])

    def held(self, statuses: Sequence[OrderStatus] = LIVE) -> dict[tuple[str, str], int]:
        """Units per (merchant, SKU or bucket) in orders whose durable status is one of
        `statuses`."""
        units: dict[tuple[str, str], int] = defaultdict(int)
        for order_id, row in self.orders.items():
            if self.transitions[order_id] and self.status(order_id) in statuses:
                for _, sku_id, quantity, _, stock_key in self.lines[order_id]:
                    units[(row["merchant_id"], stock_key or sku_id)] += quantity
        return units

    # --- faults ---------------------------------------------------------------------------

    async def _write(self, apply: Callable[[], Any]) -> Any:
        world = self.world
        await world.pause(world.faults.store_delay_ms)
        draw = world.rng.random()
        if draw < world.faults.store_fail:
            raise StoreDown("sim: the write failed; nothing was written")
        result = apply()
        self.writes += 1
        if draw < world.faults.store_fail + world.faults.store_ambiguous:
            raise StoreDown("sim: the write committed, but its answer was lost")
        return result

    async def _read(self) -> None:
        world = self.world
        await world.pause(world.faults.store_delay_ms)
        if world.rng.random() < world.faults.store_fail:
            raise StoreDown("sim: the read failed")

    # --- the Store interface ------------------------------------------------------------

    async def close(self) -> None:
        return None

    async def commit_orders(self, orders: Sequence[tuple[Any, ...]],
                            lines: Sequence[tuple[Any, ...]],
                            transitions: Sequence[tuple[Any, ...]],
                            outbox: Sequence[tuple[Any, ...]],
                            carts: Sequence[tuple[Any, ...]] = (),
                            carts_gone: Sequence[tuple[str, str, str]] = (),
                            finished: Sequence[tuple[str, int]] = (),
                            settled: Sequence[tuple[Any, ...]] = ()) -> None:
        def apply() -> None:
            rows = (orders, lines, transitions, outbox, carts, carts_gone, finished, settled)
            self.truth.check(orders, transitions, outbox)
            self.tables.apply(*rows)
            self.truth.apply(*rows)

        await self._write(apply)

    # --- the batch journal (migration 0014) ----------------------------------------------

    async def append_journal(self, owners: int, owner: int, position: int,
                             created_at_ms: int, orders: int, payload: bytes,
                             keys: tuple[list[str], list[str], list[str]]) -> None:
        def apply() -> None:
            wanted = list(zip(keys[0], keys[1], strict=True))
            if len(set(wanted)) != len(wanted) or any(
                    key in self.order_keys or key in self.truth.keys for key in wanted):
                raise asyncpg.UniqueViolationError(f"an idempotency key is taken: {wanted}")
            if (owners, owner, position) in self.journal:
                raise asyncpg.UniqueViolationError(f"journal row {position} exists")
            _, tables = BatchTables.decode(payload)
            self.truth.check(tables.orders, tables.transitions, tables.outbox)
            self.order_keys.update(zip(wanted, keys[2], strict=True))
            self.journal[(owners, owner, position)] = payload
            self.truth.apply(*_rows(tables))

        await self._write(apply)

    async def has_journal(self, owners: int, owner: int, position: int) -> bool:
        await self._read()
        return (owners, owner, position) in self.journal

    async def keys_taken(self, merchant_ids: Sequence[str], keys: Sequence[str]
                         ) -> dict[tuple[str, str], str]:
        await self._read()
        found = {}
        for key in zip(merchant_ids, keys, strict=True):
            order_id = self.order_keys.get(key) or self.tables.keys.get(key)
            if order_id is not None:
                found[key] = order_id
        return found

    async def materialize_journal(self, owners: int, owner: int, positions: list[int],
                                  tables: BatchTables) -> bool:
        lag = self.world.materializer_lag
        if lag is not None:  # a materializer behind the commits (Faults)
            low, high = self.world.faults.materializer_lag_ms
            await asyncio.sleep(lag.randint(low, high) / 1000)

        def apply() -> bool:
            there = [(owners, owner, p) in self.journal for p in positions]
            if not any(there):
                return False
            if not all(there):
                raise InvariantViolation(f"{there.count(True)} of {len(positions)} journal"
                                         " batches left to materialize")
            self.tables.check(tables.orders, tables.transitions, tables.outbox)
            for position in positions:
                del self.journal[(owners, owner, position)]
            self.tables.apply(*_rows(tables))
            return True

        return bool(await self._write(apply))

    async def pending_journal(self) -> list[tuple[int, int, int, bytes]]:
        await self._read()
        return [(*key, payload) for key, payload in sorted(self.journal.items())]

    async def has_event(self, event_id: str) -> bool:
        await self._read()
        return event_id in self.tables.events

    async def has_adjustment(self, slot: int, merchant_id: str, sku_id: str,
                             reason: str) -> bool:
        await self._read()
        return any(a[:3] == (merchant_id, sku_id, slot) and a[4] == reason
                   for a in self.adjustments)

    def _upsert_skus(self, skus: Sequence[tuple[Any, ...]], overwrite: bool = True) -> None:
        for merchant_id, sku_id, slot, name, price, limit, _ in skus:
            if overwrite or (merchant_id, sku_id) not in self.skus:
                self.skus[(merchant_id, sku_id)] = {"slot": slot, "name": name,
                                                    "price_minor": price,
                                                    "per_buyer_limit": limit}

    async def save_skus(self, skus: Sequence[tuple[Any, ...]],
                        adjustments: Sequence[tuple[Any, ...]],
                        outbox: Sequence[tuple[Any, ...]]) -> None:
        def apply() -> None:
            self._upsert_skus(skus)
            self.adjustments.extend((*a, None) for a in adjustments)
            self.outbox += len(outbox)

        await self._write(apply)

    async def set_on_hand(self, skus: Sequence[tuple[Any, ...]],
                          targets: Sequence[tuple[str, str, int, int, str, int]],
                          event: Any) -> list[int]:
        def apply() -> list[int]:
            self._upsert_skus(skus)
            deltas = []
            for merchant_id, sku_id, slot, on_hand, reason, at_ms in targets:
                delta = on_hand - self.on_hand(merchant_id, sku_id)
                if delta:
                    self.adjustments.append((merchant_id, sku_id, slot, delta, reason, at_ms,
                                             None))
                    self.outbox += 1
                deltas.append(delta)
            return deltas

        result: list[int] = await self._write(apply)
        return result

    async def adjust_once(self, adjustment: tuple[str, str, int, int, str, int],
                          request_id: str, event: Any) -> bool:
        merchant_id, sku_id, slot, delta, reason, at_ms = adjustment

        def apply() -> bool:
            if request_id:
                before = self.request_ids.get((merchant_id, request_id))
                if before is not None:
                    if before != (sku_id, delta):
                        raise IdempotencyConflict(f"request_id {request_id} was used for"
                                                  " another adjustment")
                    return False
                self.request_ids[(merchant_id, request_id)] = (sku_id, delta)
            self.adjustments.append((*adjustment, request_id or None))
            self.outbox += 1
            return True

        applied: bool = await self._write(apply)
        return applied

    async def transfer(self, adjustments: Sequence[tuple[Any, ...]],
                       skus: Sequence[tuple[Any, ...]], campaign: tuple[Any, ...] | None) -> None:
        def apply() -> None:
            if campaign is not None:
                row = dict(zip(CAMPAIGN_COLUMNS, campaign, strict=True))
                if any((c["merchant_id"], c["campaign_id"]) == (row["merchant_id"],
                                                                row["campaign_id"])
                       for c in self.campaigns):
                    raise asyncpg.UniqueViolationError(f"duplicate campaign {campaign[:2]}")
                self.campaigns.append(row)
            self._upsert_skus(skus, overwrite=False)
            self.adjustments.extend((*a, None) for a in adjustments)

        await self._write(apply)

    async def end_campaign(self, merchant_id: str, campaign_id: str) -> None:
        def apply() -> None:
            for row in self.campaigns:
                if (row["merchant_id"], row["campaign_id"]) == (merchant_id, campaign_id):
                    row["ended"] = True

        await self._write(apply)

    # --- merchants --------------------------------------------------------------------------

    async def load_merchants(self) -> tuple[list[Any], list[Any]]:
        await self._read()
        return ([dict(row) for row in self.merchants.values()],
                [dict(row) for row in self.api_keys.values()])

    async def save_merchant_with_key(self, merchant: tuple[Any, ...],
                                     key: tuple[Any, ...]) -> None:
        def apply() -> None:  # a retried create writes again (as ON CONFLICT does)
            if merchant[0] in self.merchants:
                self._save_key(key)
                return
            self.merchants[merchant[0]] = dict(zip(
                ("merchant_id", "name", "payment_window_s", "created_at_ms", "cart_hold_s",
                 "currency"),
                merchant, strict=True))
            self._save_key(key)

        await self._write(apply)

    def _save_key(self, key: tuple[Any, ...]) -> None:
        self.api_keys[(key[0], key[1])] = dict(zip(
            ("merchant_id", "key_id", "secret_hash", "scopes", "label", "created_at_ms",
             "revoked", "request_id"), key, strict=True))

    async def save_key(self, key: tuple[Any, ...]) -> None:
        await self._write(lambda: self._save_key(key))

    async def update_merchant(self, merchant_id: str, payment_window_s: int,
                              cart_hold_s: int) -> None:
        def apply() -> None:
            self.merchants[merchant_id].update(payment_window_s=payment_window_s,
                                               cart_hold_s=cart_hold_s)

        await self._write(apply)

    async def load_campaigns(self) -> list[Any]:
        await self._read()
        return [dict(row) for row in self.campaigns]

    async def load_carts(self, slots: Iterable[int]) -> list[Any]:
        await self._read()
        wanted = set(slots)
        return [dict(row) for row in self.tables.carts.values() if row["slot"] in wanted]

    async def load_skus(self, slots: Iterable[int]) -> list[Any]:
        await self._read()
        wanted = set(slots)
        return [{"merchant_id": m, "sku_id": s, "name": row["name"],
                 "price_minor": row["price_minor"], "per_buyer_limit": row["per_buyer_limit"],
                 "on_hand": self.on_hand(m, s)}
                for (m, s), row in self.skus.items() if row["slot"] in wanted]

    async def load_orders(self, slots: Iterable[int]) -> list[tuple[Any, list[Any]]]:
        wanted = set(slots)
        return await self._orders_where(lambda row: row["slot"] in wanted
                                        and row.get("finished_at_ms") is None)

    async def load_order(self, order_id: str) -> tuple[Any, list[Any]] | None:
        found = await self._orders_where(lambda row: row["order_id"] == order_id)
        return found[0] if found else None

    async def orders_by_keys(self, merchant_ids: Sequence[str],
                             keys: Sequence[str]) -> list[tuple[Any, list[Any]]]:
        wanted = set(zip(merchant_ids, keys, strict=True))
        return await self._orders_where(
            lambda row: (row["merchant_id"], row["idempotency_key"]) in wanted)

    async def buyer_orders(self, slot: int, merchant_id: str, buyer_id: str,
                           before: tuple[int, str] | None, limit: int, only_key: str = ""
                           ) -> list[tuple[Any, list[Any]]]:
        found = await self._orders_where(
            lambda row: (row["slot"], row["merchant_id"], row["buyer_id"]) == (
                slot, merchant_id, buyer_id) and (before is None or (
                    row["created_at_ms"], row["order_id"]) < before)
            and (not only_key or row["key_id"] == only_key))
        return found[::-1][:limit]

    async def has_finished_orders(self, slots: Iterable[int]) -> bool:
        await self._read()
        wanted = set(slots)
        return any(row["slot"] in wanted and row.get("finished_at_ms") is not None
                   for row in self.tables.orders.values())

    async def load_settled(self, owners: int, owner: int) -> list[Any]:
        await self._read()
        if self.settings.get("settled_sales_owners") != str(owners):  # rebuilt, as in SQL
            self.tables.settled.clear()
            for order_id, row in self.tables.orders.items():
                if row.get("finished_at_ms") is None or not any(
                        step["status"] == 3 for step in self.tables.transitions[order_id].values()):
                    continue
                buyer_id = row["buyer_id"] if row["campaign_id"] else ""
                for _, sku_id, quantity, _, stock_key in self.tables.lines[order_id]:
                    self.tables.settled[(owners, row["slot"] % owners, row["merchant_id"], buyer_id,
                                  stock_key or sku_id, sku_id, row["campaign_id"])] += quantity
            self.settings["settled_sales_owners"] = str(owners)
        return [(*key[2:], units) for key, units in self.tables.settled.items()
                if key[:2] == (owners, owner)]

    async def _orders_where(self, wanted: Callable[[dict[str, Any]], bool]
                            ) -> list[tuple[Any, list[Any]]]:
        await self._read()
        loaded = []
        for order_id, row in sorted(self.tables.orders.items(),
                                    key=lambda item: (item[1]["created_at_ms"], item[0])):
            steps = self.tables.transitions[order_id]
            if not steps or not wanted(row):
                continue
            sequence = max(steps)
            latest = steps[sequence]
            loaded.append(({**row, "sequence": sequence, "status": latest["status"],
                            "refunded": latest["refunded"], "updated_at_ms": latest["at_ms"],
                            "payment_reference": latest.get("reference", "")},
                           [(sku_id, quantity, price, stock_key) for _, sku_id, quantity,
                            price, stock_key in sorted(self.tables.lines[order_id])]))
        return loaded

    async def outbox_position(self) -> int:
        await self._read()
        return len(self.tables.outbox_orders)

    async def orders_generation(self) -> int:
        return int(await self.setting("orders_generation", "0"))

    async def save_order_snapshot(self, owners: int, owner: int, snapshot: Sequence[Any]
                                  ) -> None:
        def apply() -> None:
            self.snapshots[(owners, owner)] = dict(zip(
                ("format", "generation", "outbox_id", "taken_at_ms", "orders", "checksum",
                 "body"), snapshot, strict=True))

        await self._write(apply)

    async def load_order_snapshot(self, owners: int, owner: int
                                  ) -> tuple[Any, int, int] | None:
        await self._read()
        row = self.snapshots.get((owners, owner))
        if row is None:
            return None
        return row, int(self.settings.get("orders_generation", "0")), 0  # never pruned

    async def orders_changed_after(self, outbox_id: int, slots: Iterable[int]
                                   ) -> tuple[list[tuple[Any, list[Any]]], int]:
        changed = set(self.tables.outbox_orders[outbox_id:])
        wanted = set(slots)
        return await self._orders_where(lambda row: row["order_id"] in changed
                                        and row["slot"] in wanted), 0  # never pruned

    async def stock_routing(self) -> RoutingTable | None:
        await self._read()
        return self.routing

    async def save_stock_routing(self, table: RoutingTable) -> None:
        def apply() -> None:
            self.routing = table

        await self._write(apply)

    async def next_incarnation(self, now_ms: int) -> int:
        # No fault drawn here: a run's draws stay as they were before incarnations came
        # from the store (the regression seeds keep finding what they were found for).
        value = max(int(self.settings.get("incarnation", "0")) + 1, now_ms)
        self.settings["incarnation"] = str(value)
        return value

    async def setting(self, name: str, default: str) -> str:
        return self.settings.setdefault(name, default)
