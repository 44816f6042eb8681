"""Events: how a committed change becomes a flashtx.v1.Event, how the relay moves outbox
rows to Redis Streams (one stream per merchant) without duplicates, and how streams are
read back for WatchEvents and connectors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from engine.orders import OrderSnapshot
from protos.flashtx.v1 import event_pb2

log = logging.getLogger(__name__)

ORDER_EVENT_TYPES = {"placed": "order.reserved", "pay": "order.paid",
                     "cancel": "order.cancelled", "expire": "order.expired",
                     "fulfil": "order.fulfilled"}
EVENT_TYPES = frozenset([*ORDER_EVENT_TYPES.values(), "stock.adjusted", "stock.sold_out"])


def stream_key(merchant_id: str) -> str:
    return f"flashtx:events:{merchant_id}"


def order_event(order: OrderSnapshot, event: str, sequence: int, at_ms: int) -> bytes:
    from adapters.grpc_service import order_message

    return event_pb2.Event(
        event_id=f"{order.order_id}:{sequence}", merchant_id=order.merchant_id,
        type=ORDER_EVENT_TYPES[event], order_id=order.order_id, sequence=sequence,
        created_at_ms=at_ms, order=order_message(order)).SerializeToString()


def event_payload(row: Any) -> bytes:
    """The serialized event of an outbox row: stored for stock events, built from the
    ledger (the order as it was after the change) for order events."""
    if row["payload"]:
        return bytes(row["payload"])
    lines = tuple((sku_id, int(quantity), int(price))
                  for sku_id, quantity, price in row["lines"] or ())
    order = OrderSnapshot(row["order_id"], row["merchant_id"], row["buyer_id"],
                          row["idempotency_key"], lines, row["status"], row["total_minor"],
                          row["placed_at_ms"], row["payment_deadline_ms"], row["sequence"],
                          row["refunded"], row["created_at_ms"])
    event = next(e for e, t in ORDER_EVENT_TYPES.items() if t == row["event_type"])
    return order_event(order, event, row["sequence"], row["created_at_ms"])


def stock_event(event_id: str, merchant_id: str, event_type: str, sku_id: str, delta: int,
                reason: str, at_ms: int) -> bytes:
    return event_pb2.Event(
        event_id=event_id, merchant_id=merchant_id, type=event_type, created_at_ms=at_ms,
        stock=event_pb2.StockChange(sku_id=sku_id, delta=delta, reason=reason),
    ).SerializeToString()


# Adds an event to its stream once: the marker key makes a second relay of the same
# outbox row (after a relay restart) a no-op. Atomic because Redis runs scripts whole.
_RELAY_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[1],
                    'event', ARGV[2])
end
return false
"""


class StreamWriter:
    def __init__(self, client: redis.Redis, retention_events_max: int,
                 dedupe_ttl_s: int) -> None:
        self._client = client
        self._script = client.register_script(_RELAY_ONCE)
        self._retention = retention_events_max
        self._dedupe_ttl_s = dedupe_ttl_s

    async def relay(self, rows: Sequence[Any]) -> int:
        """rows: (event_id, merchant_id, payload); returns how many were new."""
        async with self._client.pipeline(transaction=False) as pipe:
            for event_id, merchant_id, payload in rows:
                await self._script(keys=[stream_key(merchant_id), f"flashtx:relayed:{event_id}"],
                                   args=[event_id, payload, self._retention,
                                         self._dedupe_ttl_s], client=pipe)
            results = await pipe.execute()
        return sum(1 for result in results if result)


def decode(fields: dict[bytes, bytes]) -> event_pb2.Event:
    return event_pb2.Event.FromString(fields[b"event"])
