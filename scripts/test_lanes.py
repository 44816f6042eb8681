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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--lane={lane}", "--durations=15", *args.pytest_args]
        with log.open("wb") as out:
            running[lane] = (subprocess.Popen(command, cwd=ROOT, stdout=out,
                                              stderr=subprocess.STDOUT), log)
    results: dict[str, tuple[int, float]] = {}
    while running:
        for lane, (process, log) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[lane]
            took_s = time.monotonic() - started
            results[lane] = (code, took_s)
            print(f"\n===== lane {lane}: exit {code} after {took_s:.0f} s =====", flush=True)
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
        time.sleep(0.2)
    print("\n===== lanes =====")
    for lane in lanes:
        code, took_s = results[lane]
        # pytest's 5: no tests collected in the lane (a selection with -k or a path)
        state = "passed" if code in (0, 5) else f"FAILED (exit {code})"
        print(f"{lane:>8}: {state}, {took_s:.0f} s")
    print(f"all lanes: {time.monotonic() - started:.0f} s")
    return 0 if all(code in (0, 5) for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
