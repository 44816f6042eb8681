"""`flashtx merchant|key|sku|order ...`: manage a running engine over its gRPC port, as
any client does (the key's scopes apply). Answers print as JSON; a refusal prints its
status, reason and metadata (docs/errors.md) and exits 1.

    export FLASHTX_GRPC_ADDRESS=127.0.0.1:50051 FLASHTX_API_KEY=ftx1....
    flashtx merchant create shop-1 --name "Shop 1"      # operator key; prints the admin key
    flashtx sku upsert tee --name "T-shirt" --price-minor 1999 --on-hand 500
    flashtx sku adjust tee --delta 20 --request-id restock-42
    flashtx sku import catalogue.csv   # sku_id,name,price_minor,on_hand[,per_buyer_limit]
    flashtx order get 0007ab…
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from flashtx.engine.config import Config
from flashtx.engine.errors import DomainError
from flashtx.engine.validation import check_sku
from flashtx_client import Client, FlashtxError
from flashtx_client.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2

__all__ = ["add_commands", "run"]

_SCOPES = {"admin": common_pb2.SCOPE_ADMIN, "channel": common_pb2.SCOPE_CHANNEL,
           "saas": common_pb2.SCOPE_SAAS}


def add_commands(commands: Any) -> None:
    """The admin subcommands, on the `flashtx` parser's subparsers."""

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=os.environ.get("FLASHTX_GRPC_ADDRESS",
                                                                "127.0.0.1:50051"),
                            help="gRPC address (default: FLASHTX_GRPC_ADDRESS or"
                                 " 127.0.0.1:50051)")
        parser.add_argument("--key", default=os.environ.get("FLASHTX_API_KEY", ""),
                            help="API key (default: FLASHTX_API_KEY)")

    merchant = commands.add_parser("merchant", help="create or show merchants")
    merchant_ops = merchant.add_subparsers(dest="op", required=True)
    create = merchant_ops.add_parser("create", help="create a merchant (operator key)")
    create.add_argument("merchant_id", help="[a-z0-9_-]{3,40}")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--payment-window-s", type=int, default=0,
                        help="seconds to pay an order (0: the engine's default)")
    create.add_argument("--currency", default="",
                        help="ISO 4217 code, e.g. EUR (default: the engine's, USD)")
    show = merchant_ops.add_parser("get", help="the key's merchant and its keys")
    merchants = merchant_ops.add_parser(
        "list", help="every merchant, in id order, a page at a time (operator key)")
    merchants.add_argument("--page-size", type=int, default=0,
                           help="merchants per page (0: the engine's default, 20)")
    merchants.add_argument("--page-token", default="",
                           help="the previous page's nextPageToken")
    for parser in (create, show, merchants):
        connection(parser)

    key = commands.add_parser("key", help="create or revoke API keys (admin key)")
    key_ops = key.add_subparsers(dest="op", required=True)
    key_create = key_ops.add_parser("create", help="a new key; prints its secret once")
    key_create.add_argument("--scope", action="append", choices=sorted(_SCOPES),
                            required=True, help="a scope (repeatable)")
    key_create.add_argument("--label", default="", help="what the key is for")
    key_revoke = key_ops.add_parser("revoke", help="revoke a key")
    key_revoke.add_argument("key_id")
    for parser in (key_create, key_revoke):
        connection(parser)

    sku = commands.add_parser("sku", help="add, change or read SKUs (admin key)")
    sku_ops = sku.add_subparsers(dest="op", required=True)
    upsert = sku_ops.add_parser("upsert", help="create a SKU or set its fields and on-hand")
    upsert.add_argument("sku_id")
    upsert.add_argument("--name", required=True)
    upsert.add_argument("--price-minor", type=int, required=True, help="price in cents")
    upsert.add_argument("--on-hand", type=int, required=True, help="units on hand")
    upsert.add_argument("--per-buyer-limit", type=int, default=0, help="0: no limit")
    adjust = sku_ops.add_parser("adjust", help="add (or remove) units")
    adjust.add_argument("sku_id")
    adjust.add_argument("--delta", type=int, required=True)
    adjust.add_argument("--reason", default="cli")
    adjust.add_argument("--request-id", default="",
                        help="applied once however often the command is retried")
    level = sku_ops.add_parser("get", help="a SKU's level, read from its shard")
    level.add_argument("sku_id")
    imported = sku_ops.add_parser(
        "import", help="upsert every SKU of a CSV file (header: sku_id,name,price_minor,"
        "on_hand[,per_buyer_limit]); a file with a bad row is refused whole")
    imported.add_argument("csv_file", help="the CSV file ('-': standard input)")
    for parser in (upsert, adjust, level, imported):
        connection(parser)

    order = commands.add_parser("order", help="read or change orders")
    order_ops = order.add_subparsers(dest="op", required=True)
    for name, help_text in (("get", "show an order"), ("cancel", "cancel (refund if paid)"),
                            ("fulfil", "mark a paid order fulfilled")):
        parser = order_ops.add_parser(name, help=help_text)
        parser.add_argument("order_id")
        connection(parser)
    listing = order_ops.add_parser("list", help="a buyer's orders, newest first")
    listing.add_argument("buyer_id")
    listing.add_argument("--page-size", type=int, default=20)
    listing.add_argument("--page-token", default="")
    connection(listing)


def run(options: argparse.Namespace) -> int:
    return asyncio.run(_run(options))


async def _run(options: argparse.Namespace) -> int:
    if (options.command, options.op) == ("sku", "import"):
        return await _import_skus(options)
    async with Client(options.address, options.key, retries=True) as client:
        call = _call(client, options)
        try:
            answer = await call()
        except grpc.aio.AioRpcError as error:
            print(json.dumps(_refusal(error)))
            return 1
    print(json_format.MessageToJson(answer, indent=2))
    return 0


def _call(client: Client, o: argparse.Namespace) -> Callable[[], Awaitable[Any]]:
    strong = common_pb2.READ_CONSISTENCY_STRONG
    calls: dict[tuple[str, str], Callable[[], Awaitable[Any]]] = {
        ("merchant", "create"): lambda: client.merchants.CreateMerchant(
            merchant_pb2.CreateMerchantRequest(merchant_id=o.merchant_id, name=o.name,
                                               payment_window_s=o.payment_window_s,
                                               currency=o.currency)),
        ("merchant", "get"): lambda: client.merchants.GetMerchant(
            merchant_pb2.GetMerchantRequest()),
        ("merchant", "list"): lambda: client.merchants.ListMerchants(
            merchant_pb2.ListMerchantsRequest(page_size=o.page_size,
                                              page_token=o.page_token)),
        ("key", "create"): lambda: client.merchants.CreateApiKey(
            merchant_pb2.CreateApiKeyRequest(scopes=[_SCOPES[s] for s in o.scope],
                                             label=o.label)),
        ("key", "revoke"): lambda: client.merchants.RevokeApiKey(
            merchant_pb2.RevokeApiKeyRequest(key_id=o.key_id)),
        ("sku", "upsert"): lambda: client.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(
            skus=[stock_pb2.Sku(sku_id=o.sku_id, name=o.name, price_minor=o.price_minor,
                                on_hand=o.on_hand, per_buyer_limit=o.per_buyer_limit)])),
        ("sku", "adjust"): lambda: client.stock.AdjustStock(stock_pb2.AdjustStockRequest(
            sku_id=o.sku_id, delta=o.delta, reason=o.reason, request_id=o.request_id)),
        ("sku", "get"): lambda: client.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id=o.sku_id, consistency=strong)),
        ("order", "get"): lambda: client.orders.GetOrder(
            order_pb2.GetOrderRequest(order_id=o.order_id)),
        ("order", "cancel"): lambda: client.orders.CancelOrder(
            order_pb2.CancelOrderRequest(order_id=o.order_id, reason="cli")),
        ("order", "fulfil"): lambda: client.orders.FulfillOrder(
            order_pb2.FulfillOrderRequest(order_id=o.order_id)),
        ("order", "list"): lambda: client.orders.ListOrders(order_pb2.ListOrdersRequest(
            buyer_id=o.buyer_id, page_size=o.page_size, page_token=o.page_token)),
    }
    return calls[(o.command, o.op)]


CSV_COLUMNS = ("sku_id", "name", "price_minor", "on_hand", "per_buyer_limit")
UPSERT_CHUNK = 1000  # SKUs per UpsertSkus (the engine's skus_per_upsert_max default)


def read_sku_csv(text: str) -> list[stock_pb2.Sku]:
    """The SKUs of a CSV file, checked as the engine checks them (its default limits);
    ValueError naming the first bad line: the file is refused whole, nothing is sent."""
    limits = Config()
    rows = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS[:4] if c not in (rows.fieldnames or ())]
    if missing:
        raise ValueError(f"the header lacks {', '.join(missing)}")
    unknown = [c for c in rows.fieldnames or () if c not in CSV_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})")
    skus = []
    for row in rows:
        try:
            sku = stock_pb2.Sku(
                sku_id=row["sku_id"], name=row["name"], price_minor=int(row["price_minor"]),
                on_hand=int(row["on_hand"]), per_buyer_limit=int(row.get("per_buyer_limit")
                                                                 or 0))
            check_sku(limits, "", sku.sku_id, sku.name, sku.price_minor, sku.on_hand,
                      sku.per_buyer_limit)
        except (TypeError, ValueError) as error:
            raise ValueError(f"line {rows.line_num}: {error}") from None
        except DomainError as error:
            raise ValueError(f"line {rows.line_num}: {error.message}") from None
        skus.append(sku)
    if not skus:
        raise ValueError("no SKU in the file")
    return skus


async def _import_skus(options: argparse.Namespace) -> int:
    """Upserts a CSV's SKUs in chunks; prints how many were upserted and each refusal."""
    try:
        path = options.csv_file
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        skus = read_sku_csv(text)
    except (OSError, ValueError) as error:
        print(json.dumps({"status": "INVALID_ARGUMENT", "message": str(error)}))
        return 2
    upserted, refused = 0, []
    async with Client(options.address, options.key, retries=True) as client:
        for start in range(0, len(skus), UPSERT_CHUNK):
            chunk = skus[start:start + UPSERT_CHUNK]
            try:
                answer = await client.stock.UpsertSkus(stock_pb2.UpsertSkusRequest(skus=chunk))
            except grpc.aio.AioRpcError as error:
                print(json.dumps({**_refusal(error), "upserted": upserted}))
                return 1
            for sku, result in zip(chunk, answer.results, strict=True):
                if result.code == common_pb2.RESULT_CODE_OK:
                    upserted += 1
                else:
                    refused.append({"sku_id": sku.sku_id, "reason": result.reason,
                                    "message": result.message})
    print(json.dumps({"upserted": upserted, "refused": refused}, indent=2))
    return 0 if not refused else 1


def _refusal(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """A failed call as JSON: status, message, and the ErrorInfo reason and metadata."""
    refused = error if isinstance(error, FlashtxError) else FlashtxError(error)
    return refused.as_dict()
