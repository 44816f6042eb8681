"""The Prometheus alert rules (cluster/alerts.yml) are valid, and fire when they should
(promtool's rule unit tests, cluster/alerts_test.yml). CI installs Prometheus, which
ships promtool (.ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("FLASHTX_TEST_REQUIRE_PROMETHEUS"):
            pytest.fail("promtool is required here and missing")
        pytest.skip("promtool missing (apt-get install prometheus)")
    return subprocess.run([promtool, *args], cwd=CLUSTER, capture_output=True, text=True)


def test_the_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_on_the_series_they_watch() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_loads_the_rules() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_has_a_grafana_panel() -> None:
    """Each metric actors/metrics.py defines is drawn by cluster/grafana/flashtx.json (as
    Ray exports it: ray_<name>, counters with _total, histograms by their series)."""
    import json
    import re

    source = (CLUSTER.parent / "actors" / "metrics.py").read_text()
    names = re.findall(r'metrics\.\w+\(\s*"(flashtx_\w+)"', source)
    assert len(names) >= 10
    dashboard = json.loads((CLUSTER / "grafana" / "flashtx.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    missing = [n for n in names if f"ray_{n}" not in exprs]
    assert not missing, f"no panel draws {missing}"
