"""Connectors on real Redis with a real HTTP endpoint: signed webhooks, retries, dead
letters and their replay, a warehouse export, and isolation between connectors."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from flashtx.adapters.connectors import ConnectorSpec, verify
from flashtx_client import Client
from flashtx_client.v1 import merchant_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus

pytestmark = pytest.mark.cluster


class Endpoint:
    """An HTTP endpoint that records signed events, or fails, or hangs, on demand."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.mode = "ok"
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.released = asyncio.Event()  # ends every hanging request

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, request.headers, body):  # Standard Webhooks headers
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "fail":
            return web.Response(status=503)
        if self.mode == "hang":
            await self.released.wait()
        self.received.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def endpoints():
    good, bad = Endpoint("good-secret"), Endpoint("bad-secret")
    app = web.Application()
    app.router.add_post("/good", good.handle)
    app.router.add_post("/bad", bad.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", good, bad
    good.released.set()
    bad.released.set()
    await runner.cleanup()


async def wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_webhooks_retry_dead_letter_replay_and_stay_isolated(
        engine, shop: Client, endpoints, tmp_path) -> None:
    base_url, good, bad = endpoints
    merchant_id = (await shop.merchants.GetMerchant(
        merchant_pb2.GetMerchantRequest())).merchant.merchant_id
    bad.mode = "hang"
    erp = ConnectorSpec(name=f"erp-{merchant_id}", kind="webhook", merchant_id=merchant_id,
                        max_attempts=2, backoff_ms_first=50,
                        options={"url": f"{base_url}/bad", "secret": "bad-secret",
                                 "timeout_s": 0.1})
    crm = ConnectorSpec(name=f"crm-{merchant_id}", kind="webhook", merchant_id=merchant_id,
                        types=("order.reserved",),
                        options={"url": f"{base_url}/good", "secret": "good-secret"})
    export = ConnectorSpec(name=f"dw-{merchant_id}", kind="export", merchant_id=merchant_id,
                           options={"target": "csv", "path": str(tmp_path)})
    actors = {spec.name: engine.topology.add_connector(spec) for spec in (erp, crm, export)}
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=100))
    placed = [(await shop.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
        idempotency_key=f"k{i}", buyer_id=f"b{i}",
        lines=[order_pb2.OrderLine(sku_id="s", quantity=1)]))).order for i in range(20)]

    # The healthy connector gets every order.reserved event, signed, while the other hangs.
    await wait_until(lambda: len(good.received) == 20, timeout_s=10)
    assert {e["orderId"] for e in good.received} == {o.order_id for o in placed}
    assert good.bad_signatures == 0
    # The export writes all 21 events (1 stock + 20 orders), batched.
    await wait_until(lambda: (tmp_path / "events.csv").exists()
                     and len((tmp_path / "events.csv").read_text().splitlines()) == 21)
    # The hanging one retries, then dead-letters every event.
    # (Awaiting the actor, not ray.get: this loop also serves the endpoints.)
    deadline = time.monotonic() + 60
    while (stats := await actors[erp.name].stats.remote())["dead_letters"] < 21:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert stats["failing"] and bad.received == []
    bad.mode = "ok"
    # A replay delivers what the endpoint takes now; one that is slower than the
    # connector's 0.1 s timeout on a loaded machine stays dead, and an operator replays
    # again (at most three replays here).
    delivered, still_dead = await actors[erp.name].replay_dead_letters.remote()
    for _ in range(2):
        if not still_dead:
            break
        more, still_dead = await actors[erp.name].replay_dead_letters.remote()
        delivered += more
    assert (delivered, still_dead) == (21, 0)
    # Every event, once or more (a delivery that timed out may have arrived as well).
    received = {e["eventId"] for e in bad.received}
    assert len(received) == 21 and {e["eventId"] for e in good.received} <= received
    assert (await actors[erp.name].stats.remote())["dead_letters"] == 0
