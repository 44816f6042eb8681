"""Where connectors deliver events."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from google.protobuf import json_format

from protos.flashtx.v1 import event_pb2

SIGNATURE_HEADER = "X-Flashtx-Signature"


def sign(secret: str, body: bytes) -> str:
    """The webhook signature: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Sink:
    """Delivers a batch of events or raises. Batches are retried whole."""

    batch_max = 1

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class WebhookSink(Sink):
    """HTTP POST of one event as JSON, signed with HMAC-SHA256 over the body."""

    def __init__(self, url: str, secret: str, timeout_s: float = 5.0, **_: Any) -> None:
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        for event in events:
            body = json_format.MessageToJson(event).encode()
            headers = {"Content-Type": "application/json", "X-Flashtx-Event-Id": event.event_id,
                       SIGNATURE_HEADER: sign(self._secret, body)}
            async with self._session.post(self._url, data=body, headers=headers) as response:
                if response.status >= 300:
                    raise RuntimeError(f"webhook answered {response.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ExportSink(Sink):
    """Batched writes for a data warehouse: a Postgres table (COPY) or CSV files."""

    batch_max = 500

    def __init__(self, target: str, dsn: str = "", table: str = "event_export",
                 path: str = "", **_: Any) -> None:
        self._target, self._dsn, self._table, self._path = target, dsn, table, path

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        rows = [(e.event_id, e.merchant_id, e.type, e.order_id, e.sequence, e.created_at_ms,
                 json_format.MessageToJson(e, indent=None)) for e in events]
        if self._target == "csv":
            self._append_csv(rows)
            return
        connection = await asyncpg.connect(self._dsn)
        try:
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS flashtx.{self._table} (event_id text PRIMARY KEY,"
                " merchant_id text, type text, order_id text, sequence integer,"
                " created_at_ms bigint, event text)")
            async with connection.transaction():  # at least once in, exactly once stored
                await connection.executemany(
                    f"INSERT INTO flashtx.{self._table} VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (event_id) DO NOTHING", rows)
        finally:
            await connection.close()

    def _append_csv(self, rows: list[tuple[Any, ...]]) -> None:
        folder = Path(self._path)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "events.csv").open("a", newline="") as file:
            csv.writer(file).writerows(rows)


SINKS: dict[str, type[Sink]] = {"webhook": WebhookSink, "export": ExportSink}

__all__ = ["SIGNATURE_HEADER", "SINKS", "ExportSink", "Sink", "WebhookSink", "json", "sign"]
