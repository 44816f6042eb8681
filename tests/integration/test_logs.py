"""JSON logs (`log_format = "json"`): every engine process writes one JSON object a line,
through Ray's LoggingConfig, with Ray's ids and flashtx's fields."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

REPO_ROOT = Path(__file__).resolve().parents[2]

# A separate process: the test process's Ray (the session engine's) has its own logging.
_ENGINE = """
import ray
from flashtx.app import LocalEngine
engine = LocalEngine.start(postgres_dsn="none", redis_url="none", log_format="json",
                           stock_shards=1, order_shards=1)
print("SESSION", ray._private.worker._global_node.get_session_dir_path(), flush=True)
engine.stop()
"""


def test_engine_processes_log_one_json_object_a_line(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLASHTX_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _ENGINE], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    session = next(line.split(" ", 1)[1] for line in done.stdout.splitlines()
                   if line.startswith("SESSION "))
    records = []
    for path in glob.glob(os.path.join(session, "logs", "worker-*.err")):
        for line in Path(path).read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    serving = [r for r in records if "serving on port" in r.get("message", "")]
    assert serving, f"no gateway start among {len(records)} JSON lines"
    assert {"levelname", "actor_id", "job_id", "timestamp_ns"} <= set(serving[0])
