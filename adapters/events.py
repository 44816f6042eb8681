"""Events: how a committed change becomes a flashtx.v1.Event, how the relay moves outbox
rows to Redis Streams (one stream per merchant) without duplicates, and how streams are
read back for WatchEvents and connectors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeAlias, cast

import msgpack
import redis.asyncio as redis

from flashtx.adapters.wire import order_event
from flashtx.engine.orders import OrderSnapshot
from flashtx_client.v1 import event_pb2

log = logging.getLogger(__name__)

ORDER_EVENT_TYPES = {"placed": "order.reserved", "pay": "order.paid",
                     "cancel": "order.cancelled", "expire": "order.expired",
                     "fulfil": "order.fulfilled"}
EVENT_TYPES = frozenset([*ORDER_EVENT_TYPES.values(), "stock.adjusted", "stock.sold_out"])

# Stream replies as flashtx's Redis clients (default options) return them: ids and fields
# as bytes, XREAD and XREADGROUP as [stream, entries] pairs. redis-py annotates replies
# for every protocol and decode_responses setting (bytes | str, dict or list shapes), so
# the readers cast to these.
StreamEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]
StreamsRead: TypeAlias = list[tuple[bytes, list[StreamEntry]]]
# XREADGROUP also answers pending entries whose message was deleted: their fields are None.
GroupRead: TypeAlias = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]


def stream_key(merchant_id: str) -> str:
    return f"flashtx:events:{merchant_id}"


def event_payload(row: Any) -> bytes:
    """The serialized event of an outbox row: stored in the row, or (rows written before
    the engine stored it) built from the ledger: the order as it was after the change."""
    if row["payload"]:
        return bytes(row["payload"])
    lines = tuple((sku_id, int(quantity), int(price))
                  for sku_id, quantity, price in row["lines"] or ())
    status = row["status"] if row["status"] is not None else 1  # "placed" is implied
    order = OrderSnapshot(row["order_id"], row["merchant_id"], row["buyer_id"],
                          row["idempotency_key"], lines, status, row["total_minor"],
                          row["placed_at_ms"], row["payment_deadline_ms"], row["sequence"],
                          bool(row["refunded"]), row["created_at_ms"],
                          campaign_id=row["campaign_id"] or "")
    return order_event(order, row["event_type"], row["sequence"], status, order.refunded,
                       row["created_at_ms"])


def stock_event(event_id: str, merchant_id: str, event_type: str, sku_id: str, delta: int,
                reason: str, at_ms: int) -> bytes:
    data: bytes = event_pb2.Event(
        event_id=event_id, merchant_id=merchant_id, type=event_type, created_at_ms=at_ms,
        stock=event_pb2.StockChange(sku_id=sku_id, delta=delta, reason=reason),
    ).SerializeToString()
    return data


# Adds a batch of outbox rows to their streams, once: KEYS[1] holds the relay's cursor
# (the last row added, "txid:outbox_id"), set in the same script, so rows at or before it
# (a batch sent again after a relay restart) are skipped. Atomic because Redis runs
# scripts whole. KEYS[2] is the hash of each stream's last trimmed entry id, KEYS[3] the
# id before which these streams' history began (set once, when absent: "now" on a Redis
# without a relay's cursor, new or flushed; "0-0" where one is, a Redis kept from before
# the key existed); KEYS[4..] are the
# streams; ARGV[1] the retention; ARGV[2] the rows, msgpack-packed (one argument, not
# five per row: packing arguments one by one was most of the relay's CPU), each [stream
# index in KEYS, txid, outbox_id, event id, event] (old msgpack spec, strings and bytes
# alike as raw: what Redis' cmsgpack reads). A stream past the retention is trimmed to
# it exactly, and the last entry trimmed is recorded (KEYS[2]): a reader whose cursor is
# older knows that events after it are gone (docs/events.md), on any Redis version.
_RELAY_BATCH = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('SET', KEYS[3], '0-0')  -- a relay's cursor is here: nothing was lost
  else
    local now = redis.call('TIME')
    redis.call('SET', KEYS[3], string.format('%.0f-0', tonumber(now[1]) * 1000
                                              + math.floor(tonumber(now[2]) / 1000)))
  end
end
local cursor = redis.call('GET', KEYS[1])
local at_tx, at_id = -1, -1
if cursor then
  local sep = string.find(cursor, ':', 1, true)
  at_tx = tonumber(string.sub(cursor, 1, sep - 1))
  at_id = tonumber(string.sub(cursor, sep + 1))
end
local added, last, touched = 0, nil, {}
for _, row in ipairs(cmsgpack.unpack(ARGV[2])) do
  local tx, id = tonumber(row[2]), tonumber(row[3])
  if tx > at_tx or (tx == at_tx and id > at_id) then
    redis.call('XADD', KEYS[row[1]], '*', 'id', row[4], 'event', row[5])
    touched[row[1]] = true
    added = added + 1
    last = row[2] .. ':' .. row[3]
  end
end
local retention = tonumber(ARGV[1])
for index, _ in pairs(touched) do
  local over = redis.call('XLEN', KEYS[index]) - retention
  if over > 0 then
    local gone = redis.call('XRANGE', KEYS[index], '-', '+', 'COUNT', over)
    redis.call('XTRIM', KEYS[index], 'MAXLEN', retention)
    redis.call('HSET', KEYS[2], KEYS[index], gone[#gone][1])
  end
end
if last then
  redis.call('SET', KEYS[1], last)
end
return added
"""
TRIMMED_KEY = "flashtx:events:trimmed"  # stream key -> the last entry id trimmed from it
BEGAN_KEY = "flashtx:events:began"  # "<ms>-0": the streams' history in this Redis began then
_STREAMS_FROM = 4  # KEYS index of the first stream in _RELAY_BATCH


def cursor_order(cursor: str) -> tuple[int, int]:
    """A cursor (a stream entry id, ``is_cursor``) as a comparable pair."""
    milliseconds, _, sequence = cursor.partition("-")
    return int(milliseconds), int(sequence or 0)


def gap_after(cursor: str, began: bytes | None, trimmed: bytes | None) -> str | None:
    """Where a reader at `cursor` must resume from, if events after `cursor` are gone
    (None: nothing is): the stream's history began after it (``BEGAN_KEY``), or entries
    after it were trimmed (the last one trimmed: ``TRIMMED_KEY``). "0" (from the oldest
    held) never has a gap."""
    at = cursor_order(cursor)
    if at == (0, 0):
        return None
    if began is not None and at < cursor_order(began.decode()):
        return trimmed.decode() if trimmed is not None else "0"
    if trimmed is not None and at < cursor_order(trimmed.decode()):
        return trimmed.decode()
    return None


def cursor_key(deployment_id: str) -> str:
    """One per database (its deployment id): a Redis shared with another database, or
    kept while the database was replaced, never skips this one's events."""
    return f"flashtx:relay:cursor:{deployment_id}"


class StreamWriter:
    def __init__(self, client: redis.Redis, retention_events_max: int,
                 deployment_id: str) -> None:
        self._client = client
        self._script = client.register_script(_RELAY_BATCH)
        self._retention = retention_events_max
        self._cursor_key = cursor_key(deployment_id)

    async def cursor(self) -> tuple[int, int] | None:
        """The last row added to the streams, if Redis knows it."""
        value = cast(bytes | None, await self._client.get(self._cursor_key))
        if value is None:
            return None
        txid, outbox_id = value.decode().split(":")
        return int(txid), int(outbox_id)

    async def relay(self, rows: Sequence[tuple[int, int, str, str, bytes]]) -> int:
        """rows: (txid, outbox_id, event_id, merchant_id, payload) in cursor order; one
        script call for all of them. Returns how many were new."""
        streams: dict[str, int] = {}
        packed = []
        for txid, outbox_id, event_id, merchant_id, payload in rows:
            index = streams.setdefault(stream_key(merchant_id), len(streams) + _STREAMS_FROM)
            # txid and outbox_id as text: Lua numbers are doubles, the cursor keeps digits.
            packed.append((index, str(txid), str(outbox_id), event_id, payload))
        return int(await self._script(keys=[self._cursor_key, TRIMMED_KEY, BEGAN_KEY,
                                            *streams],
                                      args=[self._retention,
                                            msgpack.packb(packed, use_bin_type=False)]))


def decode(fields: dict[bytes, bytes]) -> event_pb2.Event:
    event: event_pb2.Event = event_pb2.Event.FromString(fields[b"event"])
    return event
