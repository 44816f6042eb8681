"""`flashtx demo`, the main job, run as a user runs it: its own process, its own local
Ray cluster, the configured Postgres (else an embedded one in a fresh data directory).
It exits 0 only when both sales sold exactly their units, every order committed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_sells_exactly_the_units_twice(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "flashtx", "demo", "--buyers", "600", "--units", "150"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "CAMPAIGN_NOT_ACTIVE" in output  # the order before the campaign's start
