"""The suite in lanes: `--lane NAME` runs one share of it, and scripts/test_lanes.py runs
the lanes side by side (``make test``). A lane shares nothing with another: "side" holds
the network scenarios (hosts in namespaces and a Ray cluster of their own, which spend a
third of their time waiting in fault windows) and the shard simulator (pure CPU, one
process), which fills those windows; "own" and "own2" the scenarios that start
deployments of their own (a node lost, the whole server killed, a reshard from the
command line, the demo, the dev server, the soak and recovery benches); "main" and
"main2" the rest, each around a shared engine of its own (most of the suite's time there
is waiting: for metrics to be exported, shards to restart, bench runs). Without `--lane`
everything runs in one process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

LANES = ("main", "main2", "side", "own", "own2")
# Modules whose tests start deployments (Ray clusters, `flashtx serve` processes) of their
# own and never use the shared engine: in "own" and "own2", about even (by their time
# without a busy core: own ~230 s, own2 ~190 s).
OWN_DEPLOYMENTS = {"test_soak_smoke.py": "own", "test_dev.py": "own", "test_demo.py": "own",
                   "test_recovery_bench.py": "own",
                   "test_reshard_cli.py": "own2", "test_process_crash.py": "own2",
                   "test_node_loss.py": "own2",
                   # Not a deployment: a virtual environment built and a mypy run.
                   "test_client_package.py": "side"}
# The shared engine's longest modules (most of their time waits: metrics exported, shards
# restarted, gateways added, bench runs): a second shared engine of their own, "main2".
SECOND_ENGINE = frozenset({"test_metrics.py", "test_recovery.py", "test_autoscaling.py",
                           "test_bench_smoke.py", "test_traces.py", "test_migrate_live.py",
                           "test_resharding.py", "test_drain.py"})


def lane_of(item: pytest.Item) -> str:
    """The network scenarios and the simulator: "side"; deployments of their own: "own"
    and "own2"; the shared engine's longest modules: "main2"; the rest: "main" (times per
    layout: docs/testing.md)."""
    path = str(item.fspath)
    if f"{os.sep}netns{os.sep}" in path or f"{os.sep}sim{os.sep}" in path:
        return "side"
    name = os.path.basename(path)
    return OWN_DEPLOYMENTS.get(name, "main2" if name in SECOND_ENGINE else "main")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lane", choices=LANES, default=None,
                     help="run one lane of the suite (scripts/test_lanes.py runs all)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lane = config.getoption("--lane")
    if lane is None:
        return
    kept = [item for item in items if lane_of(item) == lane]
    config.hook.pytest_deselected(items=[item for item in items if lane_of(item) != lane])
    items[:] = kept


if os.environ.get("FLASHTX_TEST_CPU_PROFILE"):  # where the suite's CPU goes, per test
    import time as _time

    import psutil

    def _busy_s() -> float:
        times = psutil.cpu_times()
        return float(times.user + times.system + times.nice)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
        wall, busy = _time.monotonic(), _busy_s()
        yield
        with open(os.environ["FLASHTX_TEST_CPU_PROFILE"], "a") as out:
            out.write(f"{_time.monotonic() - wall:.2f}\t{_busy_s() - busy:.2f}\t"
                      f"{item.nodeid}\n")
