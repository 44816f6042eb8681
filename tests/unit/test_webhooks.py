"""Webhook connectors without Ray: signatures that cannot be replayed, Retry-After,
per-order ordering under concurrency, and connector files that refuse unknown options."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from flashtx.adapters.connectors import load_specs, sign, verify
from flashtx.adapters.connectors.sinks import RetryLater, WebhookSink, retry_after_s
from flashtx.protos.flashtx.v1 import event_pb2


def test_a_signature_covers_the_body_and_its_time() -> None:
    header = sign("s3cret", b'{"a":1}', timestamp_s=1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify("s3cret", header, b'{"a":1}', now_s=1_800_000_100)
    assert not verify("s3cret", header, b'{"a":2}', now_s=1_800_000_100)  # tampered
    assert not verify("other", header, b'{"a":1}', now_s=1_800_000_100)  # wrong secret
    assert not verify("s3cret", header, b'{"a":1}', now_s=1_800_000_400)  # replayed late
    assert not verify("s3cret", "sha256=abc", b'{"a":1}')  # the old format


def test_retry_after_is_read_in_seconds_or_as_a_date_and_capped() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s("100000") == 300.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_a_mistyped_connector_option_is_an_error(tmp_path) -> None:
    path = tmp_path / "connectors.json"
    path.write_text(json.dumps({"connectors": [{
        "name": "erp", "kind": "webhook", "merchant_id": "m", "url": "http://x",
        "secret": "s", "timout_s": 2}]}))
    with pytest.raises(ValueError, match="did you mean 'timeout_s'"):
        load_specs(str(path))


class _Receiver:
    def __init__(self) -> None:
        self.order_of: dict[str, list[int]] = {}
        self.inflight = self.most_inflight = 0
        self.busy_first = 0  # answer 429 + Retry-After this many times
        self.together = asyncio.Event()  # set once two requests are in flight at once

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert verify("k", request.headers["X-Flashtx-Signature"], body)
        if self.busy_first:
            self.busy_first -= 1
            return web.Response(status=429, headers={"Retry-After": "7"})
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        if self.inflight >= 2:
            self.together.set()
        await self.together.wait()  # a sink that sends one at a time never gets past this
        event = json.loads(body)
        self.order_of.setdefault(event["orderId"], []).append(event["sequence"])
        self.inflight -= 1
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, _Receiver]]:
    state = _Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", state
    await runner.cleanup()


def _events(orders: int, steps: int) -> list[event_pb2.Event]:
    return [event_pb2.Event(event_id=f"o{o}:{s}", order_id=f"o{o}", sequence=s,
                            type="order.paid") for s in range(1, steps + 1)
            for o in range(orders)]


async def test_events_go_out_concurrently_and_each_order_in_its_order(receiver) -> None:
    url, state = receiver
    sink = WebhookSink(url, "k", concurrency=4)
    await sink.deliver(_events(orders=8, steps=3))
    await sink.close()
    assert state.order_of == {f"o{o}": [1, 2, 3] for o in range(8)}
    assert 1 < state.most_inflight <= 4


async def test_a_busy_receiver_says_how_long_to_wait(receiver) -> None:
    url, state = receiver
    state.busy_first = 1
    state.together.set()
    sink = WebhookSink(url, "k")
    with pytest.raises(RetryLater) as caught:
        await sink.deliver(_events(orders=1, steps=1))
    await sink.close()
    assert caught.value.after_s == 7.0
