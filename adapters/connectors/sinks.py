"""Where connectors deliver events."""

from __future__ import annotations

import asyncio
import csv
import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from google.protobuf import json_format

from flashtx.protos.flashtx.v1 import event_pb2

SIGNATURE_HEADER = "X-Flashtx-Signature"
SIGNATURE_TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp_s: int | None = None) -> str:
    """The webhook signature header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">``. The time is signed with the body, so a captured call cannot be
    replayed later: receivers reject a `t` older than a few minutes (``verify``)."""
    stamp = int(time.time()) if timestamp_s is None else timestamp_s
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return f"t={stamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes,
           tolerance_s: int = SIGNATURE_TOLERANCE_S, now_s: float | None = None) -> bool:
    """What a receiver checks: the signature matches the body and its time, and that time
    is within `tolerance_s` of now (a replayed call fails)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - stamp) > tolerance_s:
        return False
    expected = sign(secret, body, stamp).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


class RetryLater(RuntimeError):
    """A receiver asked for time (429 or 503 with Retry-After): the runner waits so long
    instead of its own backoff."""

    def __init__(self, message: str, after_s: float) -> None:
        super().__init__(message)
        self.after_s = after_s


def retry_after_s(value: str | None, limit_s: float = 300.0) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), limit_s)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), limit_s)


class Sink:
    """Delivers a batch of events or raises. Batches are retried whole."""

    batch_max = 1

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class WebhookSink(Sink):
    """HTTP POST of each event as JSON, signed (``sign``). Up to `concurrency` events
    are in flight at once, events of one order one after another in their order; a batch
    is retried whole when any of its events fails (receivers deduplicate by
    X-Flashtx-Event-Id: delivery is at least once)."""

    def __init__(self, url: str, secret: str, timeout_s: float = 5.0, concurrency: int = 8,
                 batch_max: int = 64) -> None:
        if concurrency < 1 or batch_max < 1:
            raise ValueError("concurrency and batch_max must be >= 1")
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._concurrency = concurrency
        self.batch_max = batch_max

    async def deliver(self, events: Sequence[event_pb2.Event]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        chains: dict[str, list[event_pb2.Event]] = {}
        for event in events:  # one chain per order (stock events: each its own)
            chains.setdefault(event.order_id or event.event_id, []).append(event)
        gate = asyncio.Semaphore(self._concurrency)

        async def send_chain(chain: list[event_pb2.Event]) -> None:
            async with gate:
                for event in chain:
                    await self._post(event)

        results = await asyncio.gather(*(send_chain(c) for c in chains.values()),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise max(failures, key=lambda f: getattr(f, "after_s", 0.0))

    async def _post(self, event: event_pb2.Event) -> None:
        assert self._session is not None
        body = json_format.MessageToJson(event).encode()
        headers = {"Content-Type": "application/json", "X-Flashtx-Event-Id": event.event_id,
                   SIGNATURE_HEADER: sign(self._secret, body)}
        async with self._session.post(self._url, data=body, headers=headers) as response:
            if response.status < 300:
                return
            after = retry_after_s(response.headers.get("Retry-After"))
            if after is not None and response.status in (429, 503):
                raise RetryLater(f"webhook answered {response.status}", after)
            raise RuntimeError(f"webhook answered {response.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ExportSink(Sink):
    """Batched writes for a data warehouse: a Postgres table (COPY) or CSV files."""

    batch_max = 500

    def __init__(self, target: str, dsn: str = "", table: str = "event_export",
                 path: str = "") -> None:
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

__all__ = ["SIGNATURE_HEADER", "SINKS", "ExportSink", "RetryLater", "Sink", "WebhookSink",
           "json", "retry_after_s", "sign", "verify"]
