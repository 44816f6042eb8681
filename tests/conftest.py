"""The suite in lanes: `--lane NAME` runs one share of it, and scripts/test_lanes.py runs
the lanes side by side (``make test``). A lane is a set of tests that share nothing a
test of another lane holds: the shared engine (one Ray cluster, started once), or
scenarios that start their own Ray clusters, `flashtx serve` processes or network
namespaces, and mostly wait (on restarts, timeouts, detection) rather than compute.
Without `--lane` everything runs in one process, as before."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Scenarios with their own clusters or processes, by module, in the lane that runs them;
# those not named here run in "own". Spread so that the lanes end at about the same time.
OWN_LANES = {
    "test_process_crash": "own-2",
    "test_node_loss": "own-2",
    "test_soak_smoke": "own-2",
    "test_demo": "own-2",
    "test_autoscaling": "own-2",
}
LANES = ("engine", "own", "own-2", "netns")


def lane_of(item: pytest.Item) -> str:
    """unit and simulator tests and the tests on the shared engine: "engine"; the network
    scenarios: "netns"; the other integration tests (their own clusters): "own…"."""
    path = str(item.fspath)
    if f"{os.sep}netns{os.sep}" in path:
        return "netns"
    if f"{os.sep}integration{os.sep}" in path and "engine" not in getattr(
            item, "fixturenames", ()):
        return OWN_LANES.get(item.module.__name__.rpartition(".")[2], "own")
    return "engine"


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
