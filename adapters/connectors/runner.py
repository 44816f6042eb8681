"""The loop every connector runs: read its consumer group, deliver, acknowledge; retry a
failing batch with exponential backoff, then move it to the dead-letter stream."""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as redis
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random_exponential

from flashtx.adapters.connectors.sinks import SINKS, Sink
from flashtx.adapters.events import (
    BEGAN_KEY,
    TRIMMED_KEY,
    GroupRead,
    StreamEntry,
    decode,
    gap_after,
    stream_key,
)
from flashtx_client.v1 import event_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    kind: str  # a key of SINKS
    merchant_id: str
    types: tuple[str, ...] = ()
    max_attempts: int = 5
    backoff_ms_first: int = 100
    backoff_ms_max: int = 10_000
    options: dict[str, Any] = field(default_factory=dict)  # passed to the sink

    @property
    def dead_letter_key(self) -> str:
        return f"flashtx:dead:{self.name}"


def load_specs(path: str) -> list[ConnectorSpec]:
    """Reads ``{"connectors": [{"name", "kind", "merchant_id", ...sink options}]}``."""
    if not path:
        return []
    specs = []
    for raw in json.loads(Path(path).read_text())["connectors"]:
        known = {k: raw.pop(k) for k in ("name", "kind", "merchant_id", "max_attempts",
                                         "backoff_ms_first", "backoff_ms_max") if k in raw}
        types = tuple(raw.pop("types", ()))
        if known.get("kind") not in SINKS:
            raise ValueError(f"connector {known.get('name')}: kind must be one of {list(SINKS)}")
        accepted = set(inspect.signature(SINKS[known["kind"]]).parameters) | set(known)
        for key in raw:  # a mistyped option (timout_s) is an error, never ignored
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            if key not in accepted:
                raise ValueError(f"connector {known.get('name')}: unknown option {key!r}"
                                 + (f"; did you mean {close[0]!r}?" if close else ""))
        specs.append(ConnectorSpec(types=types, options=raw, **known))
    return specs


def backoff(spec: ConnectorSpec) -> Callable[[RetryCallState], float]:
    """The wait before the next attempt: the receiver's Retry-After (an error's `after_s`)
    wins; else exponential backoff with full jitter over the upper half, so many
    connectors failing together do not retry in lockstep: uniform(d/2, d), d starting at
    `backoff_ms_first` and doubling each attempt up to `backoff_ms_max`."""
    half_first, half_max = spec.backoff_ms_first / 2000, spec.backoff_ms_max / 2000
    # d/2 fixed + uniform(0, d/2) jitter, both halves doubling and capped together.
    jittered = (wait_exponential(multiplier=half_first, max=half_max)
                + wait_random_exponential(multiplier=half_first, max=half_max))

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        after_s = getattr(error, "after_s", None)
        return float(after_s) if after_s is not None else float(jittered(state))

    return wait


class ConnectorRunner:
    def __init__(self, spec: ConnectorSpec, client: redis.Redis, sink: Sink,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.spec = spec
        self._client = client
        self._sink = sink
        self._sleep = sleep  # between attempts (tests record the waits instead)
        self._stream = stream_key(spec.merchant_id)
        self.delivered = 0
        self.dead_lettered = 0
        # Gaps: events trimmed (or lost with Redis's data) before this connector read
        # them; each is dead-lettered as a marker naming where it was and where it went
        # on, and counted (docs/events.md).
        self.gaps = 0
        self._position = "0-0"  # the last entry this connector's group was given
        self.failing = False
        self.last_error = ""

    async def run(self) -> None:
        await self._ensure_group()
        backlog = True  # first our own pending entries (delivered before a crash, unacked)
        while True:
            try:
                if backlog:
                    self._position = await self._group_position()
                entries = await self._read("0" if backlog else ">")
                if backlog and not entries:
                    backlog = False
                    continue
                if entries:
                    if not backlog:
                        await self._check_gap()
                        self._position = entries[-1][0].decode()
                    await self._handle(entries)
            except redis.RedisError as error:
                self.failing, self.last_error = True, repr(error)
                await asyncio.sleep(1.0)

    async def _ensure_group(self) -> None:
        while True:
            try:
                await self._client.xgroup_create(self._stream, self.spec.name, id="0",
                                                 mkstream=True)
                return
            except redis.ResponseError as error:
                if "BUSYGROUP" in str(error):
                    return
                raise
            except redis.RedisError:
                await asyncio.sleep(1.0)

    async def _group_position(self) -> str:
        """The last entry id given to this connector's group."""
        for group in await self._client.xinfo_groups(self._stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.spec.name:
                position = group["last-delivered-id"]
                return str(position.decode() if isinstance(position, bytes) else position)
        return "0-0"

    async def _check_gap(self) -> None:
        """After a read: were events between the last one given and this read trimmed
        (or lost with Redis's data)? Then the gap is dead-lettered as a marker and
        counted: never passed over without a trace."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(BEGAN_KEY)
            pipe.hget(TRIMMED_KEY, self._stream)
            began, trimmed = await pipe.execute()
        resumed_at = gap_after(self._position, began, trimmed)
        if resumed_at is None:
            return
        self.gaps += 1
        await self._client.xadd(self.spec.dead_letter_key, {
            "gap_after": self._position, "resumed_after": resumed_at,
            "error": "events were trimmed before this connector read them"})
        log.warning("connector %s: events after %s were trimmed before it read them;"
                    " it goes on after %s (a gap marker is in its dead letters)",
                    self.spec.name, self._position, resumed_at)

    async def _read(self, cursor: str) -> list[StreamEntry]:
        answer = cast(GroupRead, await self._client.xreadgroup(
            self.spec.name, self.spec.name, {self._stream: cursor},
            count=self._sink.batch_max, block=1000))
        return [(entry_id, fields) for _, entries in answer for entry_id, fields in entries
                if fields]

    async def _handle(self, entries: list[StreamEntry]) -> None:
        events = [decode(fields) for _, fields in entries]
        wanted = [e for e in events if not self.spec.types or e.type in self.spec.types]
        error = await self._deliver_with_retries(wanted) if wanted else None
        if error is not None:
            await self._dead_letter(entries, error)
        await self._client.xack(self._stream, self.spec.name, *[i for i, _ in entries])
        if error is None:
            self.delivered += len(wanted)

    async def _deliver_with_retries(self, events: list[event_pb2.Event]) -> str | None:
        """None when delivered; else the last error after max_attempts (waits: ``backoff``)."""
        retrying = AsyncRetrying(stop=stop_after_attempt(self.spec.max_attempts),
                                 wait=backoff(self.spec), sleep=self._sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        await self._sink.deliver(events)
                    except Exception as error:
                        self.failing, self.last_error = True, repr(error)
                        raise
        except Exception as error:  # any sink failure is retried, then dead-lettered
            return repr(error)
        self.failing = False
        return None

    async def _dead_letter(self, entries: list[StreamEntry], error: str) -> None:
        for _, fields in entries:
            await self._client.xadd(self.spec.dead_letter_key,
                                    {"event": fields[b"event"], "error": error[:500]})
        self.dead_lettered += len(entries)
        log.warning("connector %s dead-lettered %d events: %s", self.spec.name, len(entries),
                    error)

    async def replay_dead_letters(self) -> tuple[int, int]:
        """Delivers dead letters again (one attempt each); returns (delivered, still dead)."""
        entries = cast(list[StreamEntry], await self._client.xrange(self.spec.dead_letter_key))
        delivered = 0
        for entry_id, fields in entries:
            if b"event" not in fields:  # a gap marker (_check_gap): nothing to deliver
                continue
            try:
                await self._sink.deliver([decode(fields)])
            except Exception as error:  # stays dead; the next replay tries again
                self.last_error = repr(error)
                continue
            await self._client.xdel(self.spec.dead_letter_key, entry_id)
            delivered += 1
        self.delivered += delivered
        return delivered, len(entries) - delivered

    async def stats(self) -> dict[str, Any]:
        pending = 0
        try:
            info = await self._client.xpending(self._stream, self.spec.name)
            pending = int(info["pending"])
            dead = await self._client.xlen(self.spec.dead_letter_key)
        except redis.RedisError:
            dead = -1
        return {"name": self.spec.name, "kind": self.spec.kind, "delivered": self.delivered,
                "dead_lettered": self.dead_lettered, "dead_letters": dead, "pending": pending,
                "gaps": self.gaps,
                "failing": self.failing, "last_error": self.last_error}
