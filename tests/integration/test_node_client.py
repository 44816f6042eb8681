"""The Node.js example (examples/node, built from the .proto files alone with
@grpc/grpc-js) against the real engine: it places, replays, is refused with ErrorInfo
metadata, pays and watches the event. CI installs its packages (.ci/run)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from flashtx.app import LocalEngine
from flashtx_client import Client
from tests.integration.conftest import unique_merchant_id

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


async def test_the_node_client_places_replays_reads_error_info_and_watches(
        engine: LocalEngine, shop: Client) -> None:
    node = shutil.which("node")
    if node is None or not (EXAMPLE / "node_modules").is_dir():
        if os.environ.get("FLASHTX_TEST_REQUIRE_NODE") == "1":
            pytest.fail("node and examples/node/node_modules are required here")
        pytest.skip("node or the example's packages are missing (npm ci in examples/node)")
    run = unique_merchant_id("n")
    process = await asyncio.create_subprocess_exec(
        node, "client.mjs", cwd=EXAMPLE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FLASHTX_ADDRESS": engine.address, "FLASHTX_API_KEY": shop.token,
             "FLASHTX_RUN": run})
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["replayed"] is True and seen["total_minor"] == "250"
    assert seen["refused"] == {"reason": "OUT_OF_STOCK", "metadata": {
        "sku_id": f"node-{run}", "available": "0", "requested": "1"}}
    assert seen["paid_status"] == "ORDER_STATUS_PAID"
    assert seen["event"] == {"type": "order.paid", "sequence": 2,
                             "order_status": "ORDER_STATUS_PAID"}
