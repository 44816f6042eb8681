"""The batch journal's materializer lag over a run (docs/architecture.md, "Materialized
query tables"): the journal rows committed and not yet materialized, sampled from the
database every `interval_s` while the load runs, then how long after the load's end the
materializers take to catch up (no row left).

    sampler = JournalLag(dsn).start()     # before the load
    ...                                   # the load
    figures = sampler.finish()            # {max_rows, max_lag_ms, p50_lag_ms, catch_up_s}
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import asyncpg

CATCH_UP_S_MAX = 120.0


class JournalLag:
    def __init__(self, dsn: str, interval_s: float = 0.5) -> None:
        self._dsn = dsn
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._samples: list[tuple[int, int]] = []  # (rows, oldest row's age in ms)
        self._catch_up_s: float | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()),
                                        name="bench-journal-lag", daemon=True)

    def start(self) -> JournalLag:
        self._thread.start()
        return self

    async def _sample(self, connection: asyncpg.Connection) -> tuple[int, int]:
        row = await connection.fetchrow(
            "SELECT count(*), coalesce((extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            " - min(created_at_ms), 0) FROM flashtx.order_journal")
        return int(row[0]), max(0, int(row[1]))

    async def _run(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        try:
            while not self._stop.is_set():
                self._samples.append(await self._sample(connection))
                await asyncio.sleep(self._interval_s)
            ended = time.monotonic()
            while time.monotonic() - ended < CATCH_UP_S_MAX:
                if (await self._sample(connection))[0] == 0:
                    self._catch_up_s = round(time.monotonic() - ended, 2)
                    return
                await asyncio.sleep(0.1)
        finally:
            await connection.close()

    def finish(self) -> dict[str, Any]:
        """Stops sampling, waits for the catch-up (at most CATCH_UP_S_MAX), answers the
        figures (catch_up_s None: not caught up by then)."""
        self._stop.set()
        self._thread.join(timeout=CATCH_UP_S_MAX + 15)
        lags = sorted(lag for _, lag in self._samples) or [0]
        return {"samples": len(self._samples),
                "max_rows": max((rows for rows, _ in self._samples), default=0),
                "p50_lag_ms": lags[len(lags) // 2], "max_lag_ms": lags[-1],
                "catch_up_s": self._catch_up_s}
