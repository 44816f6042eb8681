"""python -m flashtx.sim: run seeds of the shard simulator.

    python -m flashtx.sim --seeds 0:500              # 500 seeds, one line each failing
    python -m flashtx.sim --seeds 0:100000 --jobs 2  # a long run on two processes
    python -m flashtx.sim --seed 87 --verbose        # replay one seed exactly

Exit status 1 when any seed fails; each failure prints the command that replays it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter

DEFAULT_STEPS = 60


def _one(job: tuple[int, int]) -> tuple[int, list[str], int, int, dict[str, int], int,
                                       int, int, int]:
    from flashtx.sim.run import run_seed

    outcome = run_seed(*job)
    return (outcome.seed, outcome.failures, outcome.acked, outcome.crashes, outcome.reshards,
            outcome.clock_steps, int(outcome.shared_keys),
            outcome.refused.get("IDEMPOTENCY_CONFLICT", 0), int(outcome.host_skew_ms > 0))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashtx.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="one seed")
    parser.add_argument("--seeds", default="0:100", help="a range FIRST:END (END excluded)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="buyer operations per seed")
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--verbose", action="store_true", help="every failure of a seed")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":  # set iteration order is part of a replay
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "flashtx.sim", *argv])
    if args.seed is not None:
        first, end = args.seed, args.seed + 1
    else:
        first_text, _, end_text = args.seeds.partition(":")
        first, end = int(first_text), int(end_text)
    jobs = [(seed, args.steps) for seed in range(first, end)]
    started = time.monotonic()
    failing, acked, crashes, clock_steps, shared, conflicts, skewed = [], 0, 0, 0, 0, 0, 0
    reshards: Counter[str] = Counter()
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = list(pool.imap_unordered(_one, jobs, chunksize=50))
    else:
        results = [_one(job) for job in jobs]
    for (seed, failures, seed_acked, seed_crashes, seed_reshards, seed_steps, seed_shared,
         seed_conflicts, seed_skewed) in results:
        skewed += seed_skewed
        acked += seed_acked
        shared += seed_shared
        conflicts += seed_conflicts
        clock_steps += seed_steps
        crashes += seed_crashes
        reshards.update(seed_reshards)
        if failures:
            failing.append(seed)
            shown = failures if args.verbose else failures[:1]
            print(f"seed {seed} FAILED: " + "\n    ".join(shown))
            print(f"    replay: python -m flashtx.sim --seed {seed} --steps {args.steps}"
                  " --verbose")
    elapsed_s = time.monotonic() - started
    print(f"{len(jobs)} seeds ({first}..{end - 1}), {args.steps} steps each, in {elapsed_s:.1f} s:"
          f" {len(failing)} failed; {acked} orders acknowledged, {crashes} shard crashes;"
          f" stock reshards: {reshards['done']} done, {reshards['rolled back']} rolled back;"
          f" {clock_steps} runs with the clock stepped back; {skewed} runs with hosts'"
          f" clocks apart; {shared} runs with keys shared"
          f" by buyers ({conflicts} orders refused as idempotency conflicts)")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
