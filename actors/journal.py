"""Write-behind with group commit: entries queue in memory, and one background task
writes them in batches (one transaction each). Each ``append`` returns a future that is
done when its entry is durable.

When the database is slow or down the queue fills to ``entries_max`` and ``has_room``
turns false so callers refuse new work; failed commits are retried with backoff, in
order, and resume by themselves when the database returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from engine.errors import InvariantViolation

log = logging.getLogger(__name__)

Flush = Callable[[list[Any]], Awaitable[None]]


class GroupCommitter:
    def __init__(self, flush: Flush, *, batch_max: int, delay_s: float, entries_max: int,
                 retry_delay_s_max: float, name: str) -> None:
        self._flush = flush
        self._batch_max = batch_max
        self._delay_s = delay_s
        self._entries_max = entries_max
        self._retry_delay_s_max = retry_delay_s_max
        self._name = name
        self._entries: list[Any] = []
        self._futures: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self.failing = False
        self.commits = 0
        self.committed_entries = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        return len(self._entries)

    def has_room(self, entries: int = 1) -> bool:
        return len(self._entries) + entries <= self._entries_max

    def append(self, entry: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._entries.append(entry)
        self._futures.append(future)
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._entries) < self._batch_max:
                await asyncio.sleep(self._delay_s)  # let a batch gather
            entries, futures = self._entries[:self._batch_max], self._futures[:self._batch_max]
            await self._commit_until_done(entries)
            del self._entries[:len(entries)], self._futures[:len(futures)]
            self.commits += 1
            self.committed_entries += len(entries)
            for future in futures:
                if not future.done():
                    future.set_result(None)
            if not self._entries:
                self._wakeup.clear()

    async def _commit_until_done(self, entries: list[Any]) -> None:
        delay_s = 0.05
        while True:
            try:
                await self._flush(entries)
                if self.failing:
                    log.warning("%s: commits resumed", self._name)
                self.failing = False
                return
            except InvariantViolation:
                # Rows the database refuses as inconsistent mean memory is wrong: crash,
                # and let Ray restart this actor from durable state.
                log.critical("%s: commit refused as inconsistent; restarting", self._name,
                             exc_info=True)
                os._exit(70)
            except Exception as error:  # database down or slow: keep the entries, retry
                if not self.failing:
                    log.warning("%s: commit failed, retrying: %r", self._name, error)
                self.failing = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._retry_delay_s_max)
