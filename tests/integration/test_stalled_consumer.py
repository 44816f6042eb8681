"""A SaaS consumer that stops reading its WatchEvents stream is cut off: it cannot hold
a gateway's memory or a stream slot for ever, it learns where to resume, and the
gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from flashtx_client import Client
from flashtx_client.v1 import (
    common_pb2,
    event_pb2,
    event_pb2_grpc,
    merchant_pb2,
    order_pb2,
    stock_pb2,
)
from tests.integration.conftest import add_skus
from tests.integration.test_security import start_gateway

pytestmark = pytest.mark.cluster

# The consumer's connection grants the server little room (no window growth), so a
# consumer that does not read stops the server's writes soon.
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]


async def test_a_stalled_consumer_is_cut_off_with_its_resume_cursor(engine,
                                                                   shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S" * 150, price_minor=1,
                                       on_hand=10**6))
    saas = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_SAAS], label="slow crm"))
    address = await start_gateway(engine, 95, event_stream_stall_ms_max=500,
                                  event_streams_per_gateway_max=1)
    metadata = (("authorization", f"Bearer {saas.secret}"),)
    async with grpc.aio.insecure_channel(address, options=SMALL_WINDOW) as channel:
        stalled = event_pb2_grpc.EventServiceStub(channel).WatchEvents(
            event_pb2.WatchEventsRequest(), metadata=metadata, timeout=120)
        await stalled.initial_metadata()  # the stream is served, from the newest event on
        for batch in range(6):  # thousands of events, never read by the stalled consumer
            await shop.orders.PlaceOrders(order_pb2.PlaceOrdersRequest(orders=[
                order_pb2.PlaceOrderRequest(idempotency_key=f"k{batch}-{i}",
                                            buyer_id=f"buyer-with-a-long-name-{batch}-{i}",
                                            lines=[order_pb2.OrderLine(sku_id="s", quantity=1)])
                for i in range(1000)]))
        # Once the stalled stream is cut off, the gateway's one stream slot is free again
        # and another consumer is served (refused with RESOURCE_EXHAUSTED until then).
        async with Client(address, saas.secret) as other:
            watcher, first = await first_event_once_served(other.channel, "0", metadata)
            assert first.event.event_id
            watcher.cancel()
        # What the stalled consumer had buffered, then the cut-off with where to resume.
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            async for response in stalled:
                received.append(response.cursor)
        assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        cursor = dict(cut.value.trailing_metadata())["flashtx-resume-cursor"]
        # At least once: the cursor is at or before the last event it got (the write that
        # timed out may still have arrived), so resuming skips nothing.
        assert len(received) < 6000 and cursor in received
        # (once the other consumer's stream has left the gateway's one slot)
        resumed, after = await first_event_once_served(channel, cursor, metadata)
        resumed.cancel()
        # Resuming starts right after the cursor: the next event the consumer had (again),
        # or, if it had none after it, a later one.
        following = received[received.index(cursor) + 1:]
        if following:
            assert after.cursor == following[0]
        else:
            assert _position(after.cursor) > _position(cursor)


async def first_event_once_served(channel, cursor: str, metadata) -> tuple[object, object]:
    """Opens WatchEvents from `cursor` until the gateway has a stream slot for it (it is
    refused with RESOURCE_EXHAUSTED while another stream holds the slot); answers the
    stream and its first response."""
    deadline = time.monotonic() + 60
    while True:
        stream = event_pb2_grpc.EventServiceStub(channel).WatchEvents(
            event_pb2.WatchEventsRequest(cursor=cursor), metadata=metadata, timeout=20)
        try:
            return stream, await stream.read()
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert time.monotonic() < deadline, "the stream slot was never freed"
            await asyncio.sleep(0.1)


def _position(cursor: str) -> tuple[int, int]:
    milliseconds, sequence = cursor.split("-")
    return int(milliseconds), int(sequence)
