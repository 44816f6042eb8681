"""`flashtx dev`: the engine on this machine for developing against its API. One command
starts a local Ray cluster, the embedded Postgres and Redis (or the servers the settings
name) and the engine; creates a merchant with a few SKUs and an admin, a channel and a
SaaS key; prints the address, the keys and a first call; and serves until Ctrl-C, which
drains the gateways and stops everything."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import threading
from typing import Any

from rich.console import Console

from flashtx.app import EngineStartError, LocalEngine, new_operator_key
from flashtx_client import Client
from flashtx_client.v1 import common_pb2, merchant_pb2, stock_pb2

console = Console(soft_wrap=True)  # keys and code stay on one line each

SKUS = (("tee-black-m", "T-shirt, black, M", 1_990, 100, 0),
        ("mug-logo", "Mug with logo", 1_200, 250, 0),
        ("sneaker-drop", "Limited sneaker (one per buyer)", 17_900, 50, 1))


def run_dev(port: int, merchant_id: str | None, as_json: bool) -> int:
    stop = threading.Event()

    def asked_to_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: at once
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, asked_to_stop)
    if not as_json:
        console.print("[bold]flashtx dev[/]: starting a local Ray cluster and the engine …")
    try:
        # A key of its own each time: printed below, so any tool can use it.
        engine = LocalEngine.start(port=port, operator_key=new_operator_key())
    except EngineStartError as error:
        console.print(f"[bold red]flashtx dev cannot start:[/] {error}")
        return 2
    try:
        assert engine.operator_key is not None  # chosen above
        setup = asyncio.run(_set_up(engine.address, engine.operator_key,
                                    merchant_id or f"dev-{secrets.token_hex(3)}"))
        if as_json:
            print(json.dumps(setup), flush=True)
        else:
            _show(setup)
        stop.wait()
        if not as_json:
            console.print("draining gateways and stopping …")
    finally:
        engine.stop()
    return 0


async def _set_up(address: str, operator_key: str, merchant_id: str) -> dict[str, Any]:
    async with Client(address, operator_key) as operator:
        created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
            merchant_id=merchant_id, name="Dev Shop", payment_window_s=900))
    keys = {"admin": created.admin_key_secret}
    async with Client(address, created.admin_key_secret) as shop:
        await shop.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=[
            stock_pb2.Sku(sku_id=sku_id, name=name, price_minor=price, on_hand=on_hand,
                          per_buyer_limit=limit)
            for sku_id, name, price, on_hand, limit in SKUS]))
        for label, scope in (("channel", common_pb2.SCOPE_CHANNEL),
                             ("saas", common_pb2.SCOPE_SAAS)):
            key = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
                scopes=[scope], label=f"flashtx dev {label}"))
            keys[label] = key.secret
    return {"address": address, "operator_key": operator_key, "merchant_id": merchant_id,
            "keys": keys, "skus": [sku[0] for sku in SKUS]}


def _show(setup: dict[str, Any]) -> None:
    keys = setup["keys"]
    console.print(f"[bold green]flashtx serving[/] on {setup['address']} (plaintext gRPC,"
                  " reflection on)")
    console.print(f"merchant {setup['merchant_id']}, SKUs: {', '.join(setup['skus'])}")
    console.print(f"  operator key  {setup['operator_key']}")
    console.print(f"  admin key     {keys['admin']}")
    console.print(f"  channel key   {keys['channel']}   (place, cancel, read orders)")
    console.print(f"  saas key      {keys['saas']}   (read, pay, fulfil, watch events)")
    console.print("a first order, from Python:")
    console.print(
        "  from flashtx_client import Client\n"
        "  from flashtx_client.v1 import order_pb2\n"
        f"  async with Client({setup['address']!r}, {keys['channel']!r}) as c:\n"
        "      await c.orders.PlaceOrder(order_pb2.PlaceOrderRequest(idempotency_key='k1',"
        " buyer_id='b1',\n"
        "          lines=[order_pb2.OrderLine(sku_id='mug-logo', quantity=1)]))",
        highlight=False, markup=False)
    console.print("Ctrl-C stops it (the gateways drain first).")
