"""One deployment per database (adapters/lease.py): a second start on a database another
deployment holds refuses in one line naming the holder, before Ray starts; it takes over
once the holder is gone (stopped, or its process killed); a holder whose lease was taken
while its connection was broken learns it has lost it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import pytest
import ray

from flashtx.adapters.lease import LOCK_KEY, DatabaseHeld, DatabaseLease
from flashtx.adapters.postgres import Store
from flashtx.app import EngineStartError, LocalEngine
from tests.integration.conftest import REPO_ROOT
from tests.integration.retrying import fresh_database
from tests.integration.tcp_proxy import proxied


async def migrated(dsn: str) -> None:
    await (await Store.open(dsn, 1)).close()


async def until_acquired(lease: DatabaseLease, timeout_s: float = 30) -> None:
    """Takes the lease once the holder's session has ended (Postgres ends it as soon as
    it sees the connection close)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.to_thread(lease.acquire)
            return
        except DatabaseHeld:
            assert time.monotonic() < deadline, "the lease was never freed"
            await asyncio.sleep(0.2)


async def test_a_second_deployment_refuses_and_takes_over_once_the_first_is_gone() -> None:
    async with fresh_database("flashtx_lease") as dsn:
        await migrated(dsn)
        first = DatabaseLease(dsn, holder="first deployment (test)")
        await asyncio.to_thread(first.acquire)
        second = DatabaseLease(dsn, holder="second")
        with pytest.raises(DatabaseHeld, match="first deployment \\(test\\)"):
            await asyncio.to_thread(second.acquire)
        # The engine refuses in one line, before Ray starts.
        started = ray.is_initialized()
        with pytest.raises(EngineStartError, match="another deployment holds") as caught:
            await asyncio.to_thread(LocalEngine.start, postgres_dsn=dsn, redis_url="none",
                                    postgres_lease_wait_s=0.5)
        assert "first deployment (test)" in str(caught.value) and "\n" not in str(caught.value)
        assert ray.is_initialized() == started
        await asyncio.to_thread(first.release)
        await until_acquired(second)
        await asyncio.to_thread(second.release)

        # A holder whose process is killed outright frees it too.
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, dsn], cwd=REPO_ROOT, stdout=subprocess.PIPE,
            text=True, start_new_session=True)
        try:
            assert holder.stdout is not None
            assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "held"
            third = DatabaseLease(dsn, holder="third")
            with pytest.raises(DatabaseHeld, match="killed holder"):
                await asyncio.to_thread(third.acquire)
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(30)
        await until_acquired(third)
        await asyncio.to_thread(third.release)


_HOLD = """
import sys, time
from flashtx.adapters.lease import DatabaseLease
DatabaseLease(sys.argv[1], holder="killed holder").acquire()
print("held", flush=True)
time.sleep(600)
"""


async def test_a_holder_whose_lease_was_taken_meanwhile_knows_it_has_lost_it() -> None:
    async with fresh_database("flashtx_lease_lost") as dsn:
        await migrated(dsn)
        # The holder reaches the database through a link the test cuts: its session ends
        # (a network fault), another deployment takes the lease while the link is down,
        # and the holder, back, finds it taken. (Through the link, the holder cannot take
        # the lease back first, whatever the machine's speed.)
        link, through_link = proxied(dsn)
        first = DatabaseLease(through_link, holder="first", check_interval_s=0.2)
        await asyncio.to_thread(first.acquire)
        try:
            link.cut()
            try:
                second = DatabaseLease(dsn, holder="second")
                await until_acquired(second)
            finally:
                link.restore()
            assert await asyncio.to_thread(first.lost.wait, 30), "the loss went unnoticed"
            await asyncio.to_thread(second.release)
        finally:
            await asyncio.to_thread(first.release)


async def test_a_holder_takes_back_the_lease_its_own_old_session_still_holds() -> None:
    """A link that dropped packets: the holder gave its connection up, the server still
    holds the old session (and the lock) until its keepalives end it. The holder ends its
    own old session and takes the lease again; it is not lost."""
    async with fresh_database("flashtx_lease_own") as dsn:
        await migrated(dsn)
        left_behind = await asyncpg.connect(dsn)  # the old session, still holding it
        try:
            assert await left_behind.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
            lease = DatabaseLease(dsn, holder="this deployment")
            lease.backend_pid = await left_behind.fetchval("SELECT pg_backend_pid()")
            connection = await lease._take_again()
            assert connection is not None and not lease.lost.is_set()
            assert lease.backend_pid == await connection.fetchval("SELECT pg_backend_pid()")
            await connection.close()
            # Another deployment's session is not ended: that lease is lost.
            other = await asyncpg.connect(dsn)
            try:
                assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
                assert await lease._take_again() is None and lease.lost.is_set()
            finally:
                await other.close()
        finally:
            await left_behind.close()
