"""Runs the test suite's lanes side by side (``make test``; tests/conftest.py says what a
lane is), each in a pytest process of its own with its output in a file, printed whole
when the lane ends. Exit status 1 when any lane fails.

    python scripts/test_lanes.py [--lanes main,side,own] [-- PYTEST ARGS]

The network scenarios wait through their fault windows (a link down 10 s, Postgres
blackholed 20 s) and the simulator computes in one process: in the "side" lane they run
beside the rest of the suite ("main"). On a single core everything runs in one pytest
process. A lane's tests run one at a time."""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LANES = ("main", "side", "own")
PARALLEL_CORES_MIN = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", default=",".join(LANES))
    parser.add_argument("--force", action="store_true",
                        help=f"lanes side by side even on fewer than {PARALLEL_CORES_MIN}"
                             " cores")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to every lane")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < PARALLEL_CORES_MIN and not args.force:
        command = [sys.executable, "-m", "pytest", "-q", "--durations=25", *args.pytest_args]
        return subprocess.run(command, cwd=ROOT).returncode
    lanes = [lane for lane in args.lanes.split(",") if lane]
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="flashtx-lanes-"))
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for lane in lanes:
        log = logs / f"{lane}.log"
        # A temporary folder per lane: pytest's own keeps the newest three sessions' and
        # deletes the others' (a lane's files gone under its running deployment).
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--lane={lane}", "--durations=15", f"--basetemp={logs / (lane + '-tmp')}",
                   *args.pytest_args]
        with log.open("wb") as out:
            running[lane] = (subprocess.Popen(command, cwd=ROOT, stdout=out,
                                              stderr=subprocess.STDOUT), log)
    results: dict[str, tuple[int, float, float]] = {}
    lane_of_pid = {process.pid: lane for lane, (process, _) in running.items()}
    while running:
        # Reaps the lanes, and the processes their processes left behind (Ray's daemons
        # outlive the driver that started them): each lane's CPU time is its processes'
        # and the descendants they reaped; `CPU` in all counts the orphans too.
        pid, status, usage = os.wait4(-1, os.WNOHANG) if _reaping else (0, 0, None)
        if pid == 0 or pid not in lane_of_pid:
            if pid == 0:
                time.sleep(0.2)
            if not _reaping:
                for lane, (process, _) in list(running.items()):
                    if process.poll() is not None:
                        _done(lane, process.returncode, None, running, results, started)
            continue
        lane = lane_of_pid[pid]
        running[lane][0].returncode = os.waitstatus_to_exitcode(status)
        _done(lane, running[lane][0].returncode, usage, running, results, started)
    if _reaping:  # what is left of the lanes' processes ends with them (10 s at most)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.1)
            except ChildProcessError:
                break
    print("\n===== lanes =====")
    for lane in lanes:
        code, took_s, cpu_s = results[lane]
        # pytest's 5: no tests collected in the lane (a selection with -k or a path)
        state = "passed" if code in (0, 5) else f"FAILED (exit {code})"
        print(f"{lane:>8}: {state}, {took_s:.0f} s, CPU {cpu_s:.0f} s")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"all lanes: {time.monotonic() - started:.0f} s, CPU"
          f" {children.ru_utime + children.ru_stime:.0f} s (the lanes' processes and every"
          " descendant that ended)")
    return 0 if all(code in (0, 5) for code, _, _ in results.values()) else 1


def _subreaper() -> bool:
    """Orphans of the lanes' processes become this process's children (Linux), so their
    CPU time is counted and they are reaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _done(lane: str, code: int, usage: Any, running: dict[str, Any],
          results: dict[str, tuple[int, float, float]], started: float) -> None:
    log = running.pop(lane)[1]
    took_s = time.monotonic() - started
    cpu_s = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
    results[lane] = (code, took_s, cpu_s)
    print(f"\n===== lane {lane}: exit {code} after {took_s:.0f} s =====", flush=True)
    sys.stdout.write(log.read_text(errors="replace"))
    sys.stdout.flush()


PR_SET_CHILD_SUBREAPER = 36
_reaping = sys.platform == "linux" and _subreaper()

if __name__ == "__main__":
    sys.exit(main())
