"""A few-second run of `flashtx bench` against a local engine and the baselines.

Asserts what must hold on any machine: every invariant count is 0, every attempted order
got an answer, and the JSON document has its documented shape. Never timings: figures
belong in bench/RESULTS.md. The bench runs in its own process against the session's
engine (`--target`, a merchant of its own per run; no Ray start of its own); the
baselines use FLASHTX_POSTGRES_DSN / FLASHTX_REDIS_URL when set, else the embedded
servers of adapters.embedded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = ("oversold", "lost_acked", "duplicates", "limit_violations")
LATENCY_KEYS = {"p50", "p99", "p999", "max"}
TOP_LEVEL_KEYS = {
    "scenario",
    "mode",
    "throughput_per_s",
    "latency_ms",
    "attempted",
    "accepted",
    "rejected",
    "invariants",
    "baselines",
}


@pytest.fixture
def shared_engine_args(engine, database_dsn: str) -> list[str]:
    """The session's engine as the bench's --target: no Ray start of its own. Each run
    makes a merchant of its own in it."""
    return ["--target", engine.address, "--operator-key", engine.operator_key,
            "--engine-postgres-dsn", database_dsn]


# So few units that any machine sells them out within the run: 3 hot SKUs of 20 units
# are gone after ~50 orders, and the run is measured from its first order (no warm-up).
SOLD_OUT = ("--stock-per-sku", "20", "--buyers", "400", "--warmup", "0")


def run_bench(tmp_path: Path, *args: str) -> tuple[dict, Path]:
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "bench",
        # A smoke run checks shapes and invariants, not rates: one second of load.
        "--duration",
        "1",
        "--warmup",
        "0",
        "--processes",
        "1",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
        *args,  # after the defaults: argparse takes the last of each option
    ]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return json.loads(out_json.read_text()), out_png


def assert_shape_and_invariants(doc: dict) -> None:
    assert set(doc) >= TOP_LEVEL_KEYS
    assert set(doc["latency_ms"]) >= LATENCY_KEYS
    assert doc["attempted"] > 0
    assert doc["accepted"] > 0
    assert doc["accepted"] + sum(doc["rejected"].values()) == doc["attempted"]
    for name in INVARIANTS:
        assert doc["invariants"][name] == 0, (name, doc["invariants"])
    assert all(count == 0 for count in doc["invariants"].values()), doc["invariants"]
    assert doc["verification_checked"]["orders_looked_up"] > 0
    # Durable by default: acknowledged orders were looked up in the engine's Postgres too.
    assert doc["verification_checked"]["postgres_orders_checked"] > 0


def test_flash_sale_unary_with_all_baselines(tmp_path: Path,
                                            shared_engine_args: list[str]) -> None:
    doc, plot = run_bench(
        tmp_path,
        *shared_engine_args,
        "--scenario",
        "flash-sale",
        "--mode",
        "unary",
        "--concurrency",
        "16",
        "--baselines",
        "echo,postgres,redis",
        # Few units and few buyers: the sale sells out and per-buyer limits bind. One call
        # per order: 3 s, so that ~50 orders sell out even on a loaded machine (after 1 s,
        # with three lanes and a busy core, once none had been refused).
        *SOLD_OUT,
        "--duration",
        "3",
    )
    assert_shape_and_invariants(doc)
    assert (doc["scenario"], doc["mode"]) == ("flash-sale", "unary")
    assert set(doc["baselines"]) == {"echo", "postgres", "redis"}
    for name, baseline in doc["baselines"].items():
        assert baseline["throughput_per_s"] > 0, name
        assert set(baseline["latency_ms"]) >= LATENCY_KEYS
        assert baseline["oversold"] == 0, name
    assert "out_of_stock" in doc["rejected"]
    assert plot.stat().st_size > 0


def test_catalog_batch_open_loop(tmp_path: Path, shared_engine_args: list[str]) -> None:
    doc, _ = run_bench(
        tmp_path,
        *shared_engine_args,
        "--scenario",
        "catalog",
        "--mode",
        "batch",
        "--batch-size",
        "50",
        "--rate",
        "2000",
        "--catalog-skus",
        "2000",
        "--baselines",
        "none",
    )
    assert_shape_and_invariants(doc)
    assert (doc["scenario"], doc["mode"]) == ("catalog", "batch")
    assert doc["config"]["loop"] == "open"
    assert doc["baselines"] == {}


def campaign_held(doc: dict) -> dict[str, int]:
    """reserved + sold per campaign SKU, as verification read them from GetCampaign."""
    skus = doc["verification_checked"]["campaign"]["skus"]
    return {sku_id: state["reserved"] + state["sold"] for sku_id, state in skus.items()}


def test_flash_sale_in_a_campaign_with_buckets(tmp_path: Path,
                                               shared_engine_args: list[str]) -> None:
    doc, _ = run_bench(
        tmp_path,
        *shared_engine_args,
        "--scenario",
        "flash-sale",
        "--mode",
        "unary",
        "--concurrency",
        "16",
        "--buckets",
        "2",
        "--baselines",
        "echo",
        *SOLD_OUT,
    )
    assert_shape_and_invariants(doc)
    assert doc["config"]["buckets"] == 2
    assert any("ignore --buckets" in note for note in doc["config"]["notes"])
    assert set(doc["baselines"]) == {"echo"}
    # The campaign took every unit; sales came out of its buckets, never beyond them.
    skus = doc["verification_checked"]["campaign"]["skus"]
    assert set(skus) == {"hot-000", "hot-001", "hot-002"}
    for state in skus.values():
        assert state["units"] == state["allotment"] == 20
        assert state["reserved"] + state["sold"] <= 20
    assert sum(campaign_held(doc).values()) > 0
    assert "out_of_stock" in doc["rejected"]


def test_cart_checkout_storm(tmp_path: Path, shared_engine_args: list[str]) -> None:
    doc, plot = run_bench(
        tmp_path,
        *shared_engine_args,
        "--scenario",
        "cart-checkout",
        "--buyers",
        "300",
        "--concurrency",
        "16",
        "--buckets",
        "2",
        "--fill-allowance",
        "4",
    )
    assert_shape_and_invariants(doc)
    assert (doc["scenario"], doc["mode"]) == ("cart-checkout", "unary")
    assert doc["baselines"] == {}
    figures = doc["cart_checkout"]
    assert figures["buyers"] == 300
    assert figures["campaign_buckets"] == 2
    assert figures["fill"]["carts"] == 300 and figures["fill"]["unfilled"] == 0
    # Every buyer checked out once; half the demanded units were on sale: some refused.
    assert doc["attempted"] == 300
    assert figures["units_on_sale"] < figures["units_demanded"]
    assert "out_of_stock" in doc["rejected"]
    checked = doc["verification_checked"]
    assert sum(campaign_held(doc).values()) == checked["acked_units"] > 0
    assert checked["replay_checks"] == checked["acked_orders"] == doc["accepted"]
    assert checked["carts_checked"] > 0
    for name in ("extra_units", "unaccounted_units", "carts_not_empty", "cart_mismatch"):
        assert doc["invariants"][name] == 0, (name, doc["invariants"])
    assert plot.stat().st_size > 0


def test_the_reads_bench_runs(engine, tmp_path: Path) -> None:
    """`python -m bench.reads` (h2load against the gateway and a bare grpc.aio server)
    runs end to end: every answer of both targets is a full message (exit status 0)."""
    if shutil.which("h2load") is None:
        assert not os.environ.get("FLASHTX_TEST_REQUIRE_H2LOAD"), "h2load missing"
        pytest.skip("h2load (nghttp2-client) is not installed")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "flashtx.bench.reads", "--target", engine.address, "--operator-key",
         engine.operator_key, "--duration", "1", "--warmup", "0", "--catalog", "20",
         "--skus", "10", "--connections", "1", "--streams", "4"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "GetStockLevels (10 SKUs)" in done.stdout
