"""Where connectors deliver events."""

from __future__ import annotations

import asyncio
import csv
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from google.protobuf import json_format
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flashtx_client.v1 import event_pb2

# Standard Webhooks (https://www.standardwebhooks.com/): each delivery carries these three
# headers; any Standard Webhooks library verifies them (``verify`` is one).
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"


def signer(secret: str) -> Webhook:
    """The signer of a connector's `secret`: ``whsec_<base64 key>`` as the standard writes
    secrets; any other string is the raw key (its UTF-8 bytes). Empty: an error."""
    return Webhook(secret if secret.startswith(SECRET_PREFIX) else secret.encode())


def _headers(webhook: Webhook, event_id: str, body: bytes,
             timestamp_s: int | None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp_s is None else timestamp_s
    signature = webhook.sign(event_id, datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: signature}


def sign(secret: str, event_id: str, body: bytes,
         timestamp_s: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery: ``webhook-id`` (the event id),
    ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (``v1,<base64
    HMAC-SHA256 of "<id>.<timestamp>.<body>">``). The id and the time are signed with the
    body, so a captured call cannot be replayed later (``verify`` refuses an old one)."""
    return _headers(signer(secret), event_id, body, timestamp_s)


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """What a receiver checks (the Standard Webhooks library's ``Webhook.verify``): the
    signature matches the id, the time and the body, and that time is within five minutes
    of now (a replayed call fails)."""
    webhook = signer(secret)
    try:
        webhook.verify(body, dict(headers.items()), json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: a malformed header or body
        return False
    return True


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
    """HTTP POST of each event as JSON, signed per Standard Webhooks (``sign``). Up to
    `concurrency` events are in flight at once, events of one order one after another in
    their order; a batch is retried whole when any of its events fails (receivers
    deduplicate by webhook-id, the event id: delivery is at least once)."""

    def __init__(self, url: str, secret: str, timeout_s: float = 5.0, concurrency: int = 8,
                 batch_max: int = 64) -> None:
        if concurrency < 1 or batch_max < 1:
            raise ValueError("concurrency and batch_max must be >= 1")
        self._url = url
        self._webhook = signer(secret)  # a bad secret stops the start, not each delivery
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
                   **_headers(self._webhook, event.event_id, body, None)}
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

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "SINKS", "TIMESTAMP_HEADER", "ExportSink",
           "RetryLater", "Sink", "WebhookSink", "json", "retry_after_s", "sign", "signer",
           "verify"]
