"""EventService.WatchEvents: server-streaming events of the caller's merchant from its
Redis stream. Memory per consumer is one read batch: the next batch is read only after
the previous one is written, and a consumer that stops taking messages for
``event_stream_stall_ms_max`` is cut off with its resume cursor.

A cursor older than what the stream holds (events after it were trimmed past the
retention, or the Redis lost its data since) is refused with OUT_OF_RANGE
(``CURSOR_EXPIRED``, metadata ``oldest_cursor``), at the start and before every batch a
slow reader reads: a consumer never jumps past events without knowing (docs/events.md).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import grpc
import redis.asyncio as redis

from flashtx.adapters.events import (
    BEGAN_KEY,
    EVENT_TYPES,
    TRIMMED_KEY,
    StreamEntry,
    StreamsRead,
    decode,
    gap_after,
    stream_key,
)
from flashtx.adapters.grpc_errors import current_principal
from flashtx.engine.config import Config
from flashtx.engine.errors import InvalidArgument, OutOfRange, Overloaded, Unavailable
from flashtx_client.v1 import event_pb2, event_pb2_grpc

RESUME_CURSOR = "flashtx-resume-cursor"
# Sent in the initial metadata once a stream is served: the cursor it starts after (a
# request without a cursor starts after the newest event at that moment).
START_CURSOR = "flashtx-start-cursor"
_CURSOR = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_ID_MAX = 2**64 - 1  # each part of a Redis stream id


def is_cursor(cursor: str) -> bool:
    """A stream entry id as WatchEvents sends it, <milliseconds>-<sequence>, or
    <milliseconds> alone ("0": from the start), each part a 64-bit unsigned number (Redis
    refuses anything else, which must not surface as UNAVAILABLE and a retry loop)."""
    match = _CURSOR.fullmatch(cursor)
    return match is not None and all(int(part) <= _ID_MAX for part in match.groups()
                                     if part is not None)


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, config: Config, client: redis.Redis | None) -> None:
        self._config = config
        self._client = client
        self._streams = asyncio.Semaphore(config.event_streams_per_gateway_max)

    # Writes the stream with context.write (grpc.aio's coroutine form of a streaming
    # handler), where the generated servicer's type names the iterator form alone.
    async def WatchEvents(  # type: ignore[override]
            self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        types = set(request.types)
        if unknown := types - EVENT_TYPES:
            raise InvalidArgument("types", f"unknown event types: {sorted(unknown)}")
        cursor = request.cursor or "$"
        if cursor != "$" and not is_cursor(cursor):
            raise InvalidArgument("cursor", "is not a cursor from WatchEvents")
        if self._client is None:
            raise Unavailable("events are not enabled on this deployment")
        if self._streams.locked():
            raise Overloaded("this gateway serves its maximum of event streams",
                             self._config.overload_retry_after_ms)
        async with self._streams:
            key = stream_key(current_principal().merchant_id)
            if cursor == "$":
                cursor = await self._newest(key)
            else:
                await self._check_held(key, cursor)
            await context.send_initial_metadata(((START_CURSOR, cursor),))
            await self._stream(key, types, cursor, context)

    async def _newest(self, key: str) -> str:
        """The id of the newest event in the stream now ("0-0" when it is empty)."""
        assert self._client is not None
        try:
            newest = cast(list[StreamEntry], await self._client.xrevrange(key, count=1))
        except redis.RedisError as error:
            raise Unavailable("the event stream is unavailable; retry") from error
        return newest[0][0].decode() if newest else "0-0"

    async def _check_held(self, key: str, cursor: str) -> None:
        """OUT_OF_RANGE when events after `cursor` are no longer held."""
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(BEGAN_KEY)
                pipe.hget(TRIMMED_KEY, key)
                began, trimmed = await pipe.execute()
        except redis.RedisError as error:
            raise Unavailable("the event stream is unavailable; resume later",
                              cursor=cursor) from error
        oldest = gap_after(cursor, began, trimmed)
        if oldest is not None:
            raise OutOfRange(f"events after cursor {cursor} are no longer held (past the"
                             " retention, or lost with the event store); resume from"
                             f" oldest_cursor {oldest} and reconcile with ListOrders",
                             cursor=cursor, oldest_cursor=oldest)

    async def _stream(self, key: str, types: set[str], cursor: str,
                      context: grpc.aio.ServicerContext[Any, Any]) -> None:
        assert self._client is not None
        stall_s = self._config.event_stream_stall_ms_max / 1000
        while True:
            try:
                batches = cast(StreamsRead, await self._client.xread(
                    {key: cursor}, block=1000, count=self._config.event_read_batch_max))
            except redis.RedisError as error:
                raise Unavailable("the event stream is unavailable; resume later",
                                  cursor=cursor) from error
            if batches:  # trimmed past this reader before the read: none of it is sent
                await self._check_held(key, cursor)
            for _, entries in batches:
                for entry_id, fields in entries:
                    cursor_next = entry_id.decode()
                    event = decode(fields)
                    if not types or event.type in types:
                        response = event_pb2.WatchEventsResponse(event=event, cursor=cursor_next)
                        try:
                            await asyncio.wait_for(context.write(response), stall_s)
                        except TimeoutError:
                            raise Overloaded("the consumer stopped reading; resume from the"
                                             " cursor", 0, cursor=cursor) from None
                    cursor = cursor_next
