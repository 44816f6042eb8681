"""The suite in lanes: `--lane NAME` runs one share of it, and scripts/test_lanes.py runs
the lanes side by side (``make test``). A lane shares nothing with another: "side" holds
the network scenarios (hosts in namespaces and a Ray cluster of their own, which spend a
third of their time waiting in fault windows) and the shard simulator (pure CPU, one
process), which fills those windows; "own" the scenarios that start deployments of their
own (a node lost, the whole server killed, a reshard from the command line, the demo, the
dev server, the soak); "main" the rest, around the shared engine. Without `--lane`
everything runs in one process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

LANES = ("main", "side", "own")
# Modules whose tests start deployments (Ray clusters, `flashtx serve` processes) of their
# own and never use the shared engine: in "own", but for one that fills "side" (whose
# scenarios end first). Not more lanes: deployments started side by side find each
# other's Ray clusters (`ray start` and address "auto" connect to the latest one), and
# five lanes took longer than three with a core busy (535 s against 390–440 s).
OWN_DEPLOYMENTS = {"test_node_loss.py": "own", "test_process_crash.py": "own",
                   "test_reshard_cli.py": "own", "test_demo.py": "own",
                   "test_soak_smoke.py": "own", "test_dev.py": "own",
                   "test_recovery_bench.py": "side",
                   # Not a deployment: a virtual environment built and a mypy run.
                   "test_client_package.py": "side"}


def lane_of(item: pytest.Item) -> str:
    """The network scenarios and the simulator: "side"; deployments of their own: "own"
    (one in "side"); the rest: "main" (times per layout: docs/testing.md)."""
    path = str(item.fspath)
    if f"{os.sep}netns{os.sep}" in path or f"{os.sep}sim{os.sep}" in path:
        return "side"
    return OWN_DEPLOYMENTS.get(os.path.basename(path), "main")


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
