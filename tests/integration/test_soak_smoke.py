"""A small soak run (bench/soak.py) works end to end: orders placed, paid, fulfilled and
cancelled leave memory once finished (a long payment window here: no payment is late on
a slow machine), and each checkpoint restarts the deployment, which recovers and passes
its invariant checks."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import run_bench


def test_a_small_soak_run(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = run_bench("flashtx.bench.soak",
                     ["--orders", "4000", "--checkpoints", "2", "--batch", "200",
                      "--payment-window-s", "600", "--vacuum", "--json", str(out),
                      "--cart-changes", "10", "--cart-hold-s", "600",
                      "--plot", str(tmp_path / "soak.png")], tmp_path, timeout_s=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    points = json.loads(out.read_text())
    assert [p["orders_placed"] for p in points] == [2000, 4000]
    last = points[-1]
    assert last["tables"]["orders"] == 4000  # every order placed once, none refused
    # Each order placed (a batch retried after overload answers its placed ones REPLAYED).
    assert last["outcomes"]["OK"] + last["outcomes"].get("REPLAYED", 0) >= 4000
    assert set(last["outcomes"]) <= {"OK", "REPLAYED", "PayOrder OK", "FulfillOrder OK",
                                     "CancelOrder OK", "retried RESOURCE_EXHAUSTED",
                                     "retried UNAVAILABLE", "UpdateQuantity OK",
                                     "UpdateQuantity RESOURCE_EXHAUSTED",
                                     "UpdateQuantity UNAVAILABLE"}, last["outcomes"]
    # The same 20 carts changed 200 times, holding stock: heaps follow the live items.
    assert last["outcomes"]["UpdateQuantity OK"] > 0 and 0 < last["carts"] <= 20
    assert set(last["expiry_entries"]) == {"order", "stock"}
    assert last["orders_evicted"] > 0  # finished orders left memory
    # The checkpoint waited for finished orders to leave: what is left is live.
    assert last["orders_in_memory"] == last["tables"]["live_orders"]
    assert last["outcomes"].get("FulfillOrder OK", 0) > 0
    assert all(p["recovery_s"] > 0 and p["memory_mb"] for p in points)
    assert all(p["vacuum_s"] is not None for p in points)
    assert (tmp_path / "soak.png").stat().st_size > 0
