"""Webhook connectors without Ray: Standard Webhooks signatures that cannot be replayed,
Retry-After, backoff between attempts, per-order ordering under concurrency, and connector
files that refuse unknown options."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from flashtx.adapters.connectors import ConnectorRunner, ConnectorSpec, load_specs, sign, verify
from flashtx.adapters.connectors.sinks import RetryLater, Sink, WebhookSink, retry_after_s
from flashtx_client.v1 import event_pb2


def _whsec(raw: str) -> str:
    """A raw secret as Standard Webhooks writes secrets."""
    return "whsec_" + base64.b64encode(raw.encode()).decode()


def test_a_signature_is_standard_and_covers_the_id_the_body_and_its_time() -> None:
    body, now = b'{"a":1}', int(time.time())
    headers = sign("s3cret", "o1:1", body, timestamp_s=now)
    assert headers["webhook-id"] == "o1:1" and headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(_whsec("s3cret")).verify(body, headers)  # the library's own verifier accepts it
    assert verify("s3cret", headers, body)
    assert not verify("s3cret", headers, b'{"a":2}')  # a changed body
    assert not verify("s3cret", {**headers, "webhook-id": "o1:2"}, body)  # a changed id
    assert not verify("other", headers, body)  # the wrong secret
    old = sign("s3cret", "o1:1", body, timestamp_s=now - 600)  # a capture, replayed late
    assert not verify("s3cret", old, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(_whsec("s3cret")).verify(body, old)
    assert not verify("s3cret", {"X-Flashtx-Signature": "t=1,v1=ab"}, body)  # the old format
    assert not verify("s3cret", {**headers, "webhook-signature": "v1"}, body)  # malformed


def test_a_whsec_secret_is_the_standard_base64_key() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's test vector
    headers = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}',
                   timestamp_s=1614265330)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    fresh = sign(secret, "e1", b"{}")
    assert verify(secret, fresh, b"{}")
    Webhook(secret).verify(b"{}", fresh)
    # Any other secret is its UTF-8 bytes: the same key written as whsec_ signs the same.
    assert sign("shared-secret", "e1", b"{}", 1) == sign(_whsec("shared-secret"), "e1", b"{}", 1)
    with pytest.raises(EmptyWebhookSecretError):  # when the connector starts
        WebhookSink("http://x", "")


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
        assert verify("k", request.headers, body)
        assert request.headers["webhook-id"] == json.loads(body)["eventId"]
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


class _Flaky(Sink):
    """Fails with the given errors, one per attempt, then delivers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.attempts = list(errors), 0

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)


def _runner(sink: Sink, waits: list[float], **spec: int) -> ConnectorRunner:
    async def sleep(seconds: float) -> None:  # records the wait instead of sleeping
        waits.append(seconds)

    return ConnectorRunner(ConnectorSpec(name="c", kind="webhook", merchant_id="m", **spec),
                           None, sink, sleep=sleep)  # type: ignore[arg-type]


async def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0]  # backoff_ms_first doubling, capped at 1000 ms
    seen: list[list[float]] = []
    for _ in range(50):
        waits: list[float] = []
        sink = _Flaky(*(RuntimeError(f"down {i}") for i in range(10)))
        runner = _runner(sink, waits, max_attempts=6, backoff_ms_first=100,
                         backoff_ms_max=1000)
        error = await runner._deliver_with_retries([event_pb2.Event(event_id="e")])
        assert error == repr(RuntimeError("down 5")) == runner.last_error
        assert sink.attempts == 6 and runner.failing
        assert len(waits) == 5  # none after the last attempt
        assert all(d / 2 <= w <= d for w, d in zip(waits, ceilings, strict=True)), waits
        seen.append(waits)
    assert len({w[0] for w in seen}) > 1  # jittered: runners do not retry in lockstep


async def test_a_receivers_retry_after_wins_over_the_backoff() -> None:
    waits: list[float] = []
    sink = _Flaky(RetryLater("webhook answered 429", 7.0), RuntimeError("webhook answered 500"))
    runner = _runner(sink, waits, max_attempts=5, backoff_ms_first=100, backoff_ms_max=1000)
    assert await runner._deliver_with_retries([event_pb2.Event(event_id="e")]) is None
    assert sink.attempts == 3 and not runner.failing
    assert runner.last_error == repr(RuntimeError("webhook answered 500"))
    assert waits[0] == 7.0 and 0.1 <= waits[1] <= 0.2  # the second wait: 2 x first


async def test_a_delivery_that_succeeds_does_not_wait() -> None:
    waits: list[float] = []
    runner = _runner(_Flaky(), waits)
    assert await runner._deliver_with_retries([event_pb2.Event(event_id="e")]) is None
    assert waits == [] and not runner.failing
