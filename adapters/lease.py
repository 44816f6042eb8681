"""One deployment per database. Two `flashtx serve` on one database would each run shards
for every slot: two order books, two stock ledgers, each committing its own view. The
deployment holds a lease on its database for as long as it runs: a session-level
advisory lock on a connection of its own. Postgres ends it with the session, so a holder
whose process or host is gone frees it at once (its connection closes, or TCP keepalives
end it); a second deployment that finds it held refuses to start, naming the holder.

A holder whose lease connection breaks (the database restarting, a network fault) takes
the lease again once it can; if another deployment took it meanwhile, the lease is lost
for good and `lost` says so (`flashtx serve` then stops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

LOCK_KEY = 0x666C_6173_6874_7801  # "flashtx" and a 1: the lock's id in pg_locks
HOLDER_SETTING = "deployment_holder"


class DatabaseHeld(RuntimeError):
    """Another deployment holds the database."""


class DatabaseLease:
    """The lease, held by a thread of its own (its own event loop and connection), so
    that it outlives the event loops its owner runs and ends with its process."""

    def __init__(self, dsn: str, *, check_interval_s: float = 2.0,
                 connect_timeout_s: float = 10.0, holder: str | None = None,
                 server_settings: dict[str, str] | None = None) -> None:
        """`server_settings`: the session's (TCP keepalives: the server ends the session
        of a holder whose host vanished, which frees the lease)."""
        self._dsn = dsn
        self._server_settings = server_settings
        self._check_interval_s = check_interval_s
        self._connect_timeout_s = connect_timeout_s
        self.holder = holder or (f"flashtx serve on {socket.gethostname()} (pid {os.getpid()},"
                                 f" since {time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
        self._acquired = threading.Event()
        self._stopping = threading.Event()
        self.lost = threading.Event()  # another deployment holds it now
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.backend_pid: int | None = None  # the server process of the session holding it

    def acquire(self, wait_s: float = 0.0) -> None:
        """Takes the lease or raises: DatabaseHeld (naming the holder) once it has been
        held for `wait_s` (a holder that just ended may not have been seen to end yet),
        or the error that kept the database from answering."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._acquire_once()
            except DatabaseHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _acquire_once(self) -> None:
        self._error = None  # a lease may be asked for again after a refusal
        self._acquired.clear()
        self._stopping.clear()
        self.lost.clear()
        self._thread = threading.Thread(target=self._run, name="flashtx-lease", daemon=True)
        self._thread.start()
        self._acquired.wait(self._connect_timeout_s + 30)
        if self._error is not None:
            self._thread.join(5)
            raise self._error
        if not self._acquired.is_set():
            self.release()
            raise TimeoutError("the database did not answer the lease's request")

    def release(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self._connect_timeout_s + 5)

    # --- the lease's thread ----------------------------------------------------------------

    def _run(self) -> None:
        # Signals to the process are the main thread's to take (`flashtx serve` holds back
        # SIGTERM while Ray starts, then drains): this thread, and those it starts, never
        # take them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            asyncio.run(self._hold())
        except BaseException as error:  # to acquire()'s caller
            self._error = error
            self._acquired.set()

    async def _hold(self) -> None:
        connection = await self._take()
        while not self._stopping.is_set():
            await asyncio.to_thread(self._stopping.wait, self._check_interval_s)
            if self._stopping.is_set():
                break
            try:
                await connection.fetchval("SELECT 1", timeout=self._check_interval_s * 2)
                continue
            except Exception as error:  # a session ended, a link down, a database gone
                log.warning("the deployment's lease connection broke (%r); taking the lease"
                            " again", error)
                connection.terminate()
            connection = await self._take_again()
            if connection is None:
                return
        try:
            await connection.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        finally:
            await connection.close()

    async def _take(self) -> Any:
        """The first take: any failure goes to acquire()'s caller."""
        connection = await self._connect()
        try:
            held_by = await self._try(connection)
        except BaseException:
            await connection.close()
            raise
        if held_by is not None:
            await connection.close()
            raise DatabaseHeld(f"another deployment holds this database: {held_by}; stop it"
                               " first (its lease ends with its process)")
        self._acquired.set()
        return connection

    async def _take_again(self) -> Any:
        """After the connection broke: retried until the database answers; None when
        another deployment holds the lease now (lost for good)."""
        delay_s = 0.5
        while not self._stopping.is_set():
            try:
                connection = await self._connect()
            except Exception:  # not answering yet: try again
                await asyncio.to_thread(self._stopping.wait, delay_s)
                delay_s = min(delay_s * 2, 10.0)
                continue
            try:
                held_by = await self._try(connection)
            except Exception:
                connection.terminate()
                await asyncio.to_thread(self._stopping.wait, delay_s)
                continue
            if held_by is None:
                log.warning("the deployment's lease is held again")
                return connection
            if await self._end_own_old_session(connection):
                await connection.close()
                continue  # it was this holder's own session, left behind: take it now
            await connection.close()
            log.critical("the deployment lost its lease on the database to %s; it must stop",
                         held_by)
            self.lost.set()
            return None
        return None

    async def _connect(self) -> Any:
        return await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s,
                                     server_settings=self._server_settings)

    async def _end_own_old_session(self, connection: Any) -> bool:
        """The lock held by this holder's own earlier session (a link that dropped packets:
        the client gave the connection up, the server still holds it until its keepalives
        end it): that session is ended, and True answered."""
        holder_pid = await connection.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
            (LOCK_KEY >> 32) & 0xFFFF_FFFF, LOCK_KEY & 0xFFFF_FFFF)
        if holder_pid is None or holder_pid != self.backend_pid:
            return False
        log.warning("the lease is held by this deployment's own earlier session (pid %d):"
                    " ending it", holder_pid)
        await connection.fetchval("SELECT pg_terminate_backend($1)", holder_pid)
        return True

    async def _try(self, connection: Any) -> str | None:
        """Takes the lock and names this holder (None), or answers who holds it."""
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            self.backend_pid = await connection.fetchval("SELECT pg_backend_pid()")
            await connection.execute(
                "INSERT INTO flashtx.settings (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                HOLDER_SETTING, self.holder)
            return None
        held_by = await connection.fetchval(
            "SELECT value FROM flashtx.settings WHERE name = $1", HOLDER_SETTING)
        return str(held_by or "a deployment that did not say who it is")
