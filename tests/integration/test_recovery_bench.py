"""The recovery bench works: its fill writes the engine's current row shapes (it once
broke silently when columns were added) and a small run of the bench itself starts a
deployment on such a history, which loads the live orders alone."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from flashtx.adapters import embedded
from flashtx.adapters.postgres import Store
from flashtx.bench.recovery import MERCHANT, fill
from flashtx.engine.config import load_config
from flashtx.engine.orders import OrderStatus
from tests.integration.conftest import _database, database_on, run_bench


async def test_the_recovery_fill_is_loaded_back_by_the_shards_query() -> None:
    server_dsn = embedded.postgres_dsn()
    name = f"flashtx_recovery_{secrets.token_hex(4)}"
    await _database(server_dsn, name, create=True)
    try:
        dsn = database_on(server_dsn, name)
        states = await fill(dsn, 500, live=100, batch=200)
        store = await Store.open(dsn, 2)
        try:
            slots = range(load_config().slots_total)
            loaded = await store.load_orders(slots)
            settled = [*await store.load_settled(2, 0), *await store.load_settled(2, 1)]
        finally:
            await store.close()
    finally:
        await _database(server_dsn, name, create=False)
    assert states == {OrderStatus.RESERVED: 10, OrderStatus.PAID: 90,
                      OrderStatus.FULFILLED: 320, OrderStatus.CANCELLED: 40,
                      OrderStatus.EXPIRED: 40}
    assert len(loaded) == 100  # the live ones only
    statuses = sorted(row["status"] for row, _ in loaded)
    assert statuses == [1] * 10 + [2] * 90  # a tenth still reserved, the rest paid
    assert all(row["merchant_id"] == MERCHANT and len(lines) == 1 for row, lines in loaded)
    assert sum(row["units"] for row in settled) == 320  # every fulfilled unit still sold


def test_a_small_recovery_bench_run_starts_on_a_long_history(tmp_path: Path) -> None:
    done = run_bench("flashtx.bench.recovery", ["--orders", "1200", "--live", "200", "--days", "3"],
                     tmp_path, timeout_s=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["orders_loaded"] == 200  # the live orders alone
    assert report["start_to_serving_s"] > 0 and report["ray_start_s"] > 0
    assert report["order_shard_restart_s"] > 0
    # The second start reads the snapshots the shards wrote: the same 200 live orders.
    assert report["first_recovered_from"] == ["ledger", "ledger"]
    assert report["recovered_from"] == ["snapshot", "snapshot"]
    assert report["orders_loaded_from_snapshots"] == 200 and report["snapshot_bytes"] > 0
