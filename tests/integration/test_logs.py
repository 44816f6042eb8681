"""JSON logs (`log_format = "json"`, as the shared engine runs): every engine process
writes one JSON object a line, through Ray's LoggingConfig, with Ray's ids and flashtx's
fields."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
import ray

from flashtx.app import LocalEngine

pytestmark = [pytest.mark.cluster]


def test_engine_processes_log_one_json_object_a_line(engine: LocalEngine) -> None:
    assert engine.config.log_format == "json"
    session = ray._private.worker._global_node.get_session_dir_path()
    records = []
    for path in glob.glob(os.path.join(session, "logs", "worker-*.err")):
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    serving = [r for r in records if "serving on port" in r.get("message", "")]
    assert serving, f"no gateway start among {len(records)} JSON lines"
    assert {"levelname", "actor_id", "job_id", "timestamp_ns"} <= set(serving[0])
