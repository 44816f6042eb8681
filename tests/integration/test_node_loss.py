"""Removing a node that holds shards mid-load (see node_loss.py, run in its own process
because it needs a multi-node cluster of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.retrying import fresh_database

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_shards_recover_on_the_surviving_node(tmp_path) -> None:
    report_file, log_file = tmp_path / "report.json", tmp_path / "node_loss.log"
    async with fresh_database("flashtx_node") as dsn:
        # Output to a file, not a pipe: Ray's daemons may hold a pipe open after the run.
        with log_file.open("w") as log:
            returncode = subprocess.run(
                [sys.executable, "-m", "tests.integration.node_loss", dsn, str(report_file)],
                stdout=log, stderr=subprocess.STDOUT, timeout=240,
                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}).returncode
    assert report_file.exists(), log_file.read_text()[-4000:]
    report = json.loads(report_file.read_text())
    assert returncode == 0, report
    assert report["outcomes"] == ["FAILED_PRECONDITION", "OK"]
    assert report["acked"] == report["stored"] == report["ok"]
    assert report["acked_all_stored"] and report["moved"]
