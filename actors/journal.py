"""Write-behind with group commit: entries queue in memory, and one background task
writes them in batches (one transaction each). ``append`` takes the entries of one
operation (a whole batch of orders) and returns one future, done when all of them are
durable: the cost per order is a list append, not a future.

When the database is slow or down the queue fills to ``entries_max`` and ``has_room``
turns false so callers refuse new work; failed commits are retried with backoff, in
order, and resume by themselves when the database returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from flashtx.actors import metrics, tracing
from flashtx.engine.errors import InvariantViolation

log = logging.getLogger(__name__)

# flush(entries, retry): retry is True when an earlier try of the same entries failed,
# possibly after committing them (the answer was lost): the flush must then not write them
# twice.
Flush = Callable[[list[Any], bool], Awaitable[None]]


class GroupCommitter:
    def __init__(self, flush: Flush, *, batch_max: int, delay_s: float, entries_max: int,
                 retry_delay_s_max: float, name: str) -> None:
        self._flush = flush
        self._batch_max = batch_max
        self._delay_s = delay_s
        self._entries_max = entries_max
        self._retry_delay_s_max = retry_delay_s_max
        self._name = name
        # (entries, done when durable, the span of the work that appended them)
        self._groups: deque[tuple[list[Any], asyncio.Future[None], Any]] = deque()
        self._committing: list[asyncio.Future[None]] = []  # the batch being written
        self.depth = 0  # entries waiting
        self.held = 0  # room taken by work that waits on the database before it appends
        self._wakeup = asyncio.Event()
        # Since when (the loop's clock) the database has been failing this journal's
        # commits or reads (None: it answers).
        self.failing_since: float | None = None
        self._commit_started: float | None = None  # the commit now waiting, since when
        self.commits = 0
        self.committed_entries = 0
        self.commit_seconds = 0.0  # time spent in commits (the database's share)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def has_room(self, entries: int = 1) -> bool:
        return self.depth + self.held + entries <= self._entries_max

    def room(self, share: float = 1.0) -> int:
        """Entries that may still be appended while the queue stays within `share` of its
        bound (background work passes its share, leaving the rest to new orders)."""
        return max(0, int(self._entries_max * share) - self.depth - self.held)

    def hold(self, entries: int) -> bool:
        """Takes room for `entries` to be appended once something else is read from the
        database (False, nothing taken, when there is none): what waits for the database
        is bounded with what waits for its commit. Give it back with `release`."""
        if not self.has_room(entries):
            return False
        self.held += entries
        return True

    def release(self, entries: int) -> None:
        self.held -= entries

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def failing_for_s(self, unanswered_s_min: float = 1.0) -> float | None:
        """How long the database has been failing this journal's commits, or leaving one
        unanswered for `unanswered_s_min` or more (a link that drops packets: the commit
        waits until its timeout); None while it answers."""
        now = asyncio.get_running_loop().time()
        if self.failing_since is not None:
            return now - self.failing_since
        if self._commit_started is not None and (
                now - self._commit_started >= unanswered_s_min):
            return now - self._commit_started
        return None

    def _failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = asyncio.get_running_loop().time()

    def database_failed(self, error: BaseException) -> None:
        """A read for this journal's work failed: the database is reported failing (in
        stats, and in the answer to refused work) until a read or a commit succeeds."""
        if not self.failing:
            log.warning("%s: the database failed: %r", self._name, error)
        self._failed()

    def database_answered(self) -> None:
        if self.failing and not self._groups and not self._committing:
            log.warning("%s: the database answers again", self._name)
            self.failing_since = None

    def append(self, entries: list[Any], link: Any = None) -> asyncio.Future[None]:
        """`link`: the span of the work appending (the commit's span links to it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._groups.append((entries, future, link))
        self.depth += len(entries)
        self._wakeup.set()
        return future

    def durable(self) -> asyncio.Future[None]:
        """Done once every entry appended so far is committed (batches commit in order)."""
        if self._groups:
            return self._groups[-1][1]
        if self._committing:
            return self._committing[-1]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.depth < self._batch_max:
                await asyncio.sleep(self._delay_s)  # let a batch gather
            batch: list[Any] = []
            futures: list[asyncio.Future[None]] = []
            links: list[Any] = []
            while self._groups and (not batch or len(batch) + len(self._groups[0][0])
                                    <= self._batch_max):
                entries, future, link = self._groups.popleft()
                batch.extend(entries)
                futures.append(future)
                links.append(link)
            started = time.perf_counter()
            self._committing = futures
            with tracing.span("journal.commit", links=links, journal=self._name,
                              entries=len(batch)):
                await self._commit_until_done(batch)
            self._committing = []
            elapsed_s = time.perf_counter() - started
            self.commit_seconds += elapsed_s
            metrics.record(metrics.commit_seconds(), elapsed_s, actor=self._name)
            metrics.record(metrics.batch_items(), len(batch), hop="commit")
            self.depth -= len(batch)
            self.commits += 1
            self.committed_entries += len(batch)
            for future in futures:
                if not future.done():
                    future.set_result(None)
            if not self._groups:
                self._wakeup.clear()

    async def _commit_until_done(self, entries: list[Any]) -> None:
        delay_s = 0.05
        retry = False
        while True:
            self._commit_started = asyncio.get_running_loop().time()
            try:
                await self._flush(entries, retry)
                if self.failing:
                    log.warning("%s: commits resumed", self._name)
                self.failing_since = self._commit_started = None
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
                self._failed()
                self._commit_started = None
                retry = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._retry_delay_s_max)
