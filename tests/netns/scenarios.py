"""Faults between hosts under load, each ending with the sale's verification.

    sudo python -m tests.netns.scenarios                     # all six, a table at the end
    sudo python -m tests.netns.scenarios link-loss host-kill --json report.json
    sudo python -m tests.netns.scenarios link-loss pg-blackhole host-kill --together

Each scenario builds the hosts (tests/netns/hosts.py) on a fresh database, starts the
client host's flash sale (tests/netns/load.py), applies its fault once orders are being
placed, lifts it, lets every buyer finish, then checks Postgres: units sold or held
never exceed the stock (oversold), every acknowledged order is stored under its key
(lost acknowledged), one order per key (duplicates), one unit per buyer (limit
violations). It reports what clients saw before, during and after the fault (attempts,
status codes, median and p99 latency) and how long after the fault ended the first order
was placed again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.integration.retrying import materialized
from tests.netns.hosts import PG_PORT, WORKERS, Hosts

UNITS, BUYERS, RATE = 400, 900, 60.0  # the sale lasts ~15 s at this rate
SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    fault: Callable[[Hosts], None]
    lift: Callable[[Hosts], None]
    # How long the fault lasts (a host killed: how long "during" is watched after the kill,
    # a window a client's attempts surely fall in; the kill itself takes milliseconds).
    hold_s: float


SCENARIOS = {s.name: s for s in (
    Scenario("link-loss", "worker host a loses its link for 10 s, then it heals",
             lambda h: h.cut("a"), lambda h: h.heal("a"), 10.0),
    Scenario("host-kill", "worker host a is killed outright (every process on it)",
             lambda h: h.kill("a"), lambda h: None, 3.0),
    Scenario("netem", "200 ms delay and 5 % loss on worker host a's link, whole run",
             lambda h: None, lambda h: None, 0.0),
    Scenario("pg-unreachable", "Postgres unreachable from worker host a for 15 s",
             lambda h: h.block("a", PG_PORT), lambda h: h.unblock("a", PG_PORT), 15.0),
    Scenario("head-unreachable", "the head host (GCS, driver) unreachable for 20 s",
             lambda h: h.cut("head"), lambda h: h.heal("head"), 20.0),
    Scenario("pg-blackhole", "Postgres blackholed (packets dropped) from both worker hosts"
             " for 20 s", lambda h: [h.blackhole(w, PG_PORT) for w in WORKERS] and None,
             lambda h: [h.restore(w, PG_PORT) for w in WORKERS] and None, 20.0),
)}


async def _database(name: str, create: bool) -> None:
    connection = await asyncpg.connect(SERVER_DSN)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if create:
            await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()


async def _orders(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(
            "SELECT count(*) FROM flashtx.orders WHERE merchant_id = 'netns-shop'") or 0)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await connection.close()


async def verify(dsn: str, acked: dict[str, str]) -> dict[str, int]:
    """The sale's invariants from Postgres: each count must be 0."""
    connection = await asyncpg.connect(dsn)
    try:
        await materialized(connection)
        on_hand = int(await connection.fetchval(
            "SELECT coalesce(sum(delta), 0) FROM flashtx.stock_adjustments"
            " WHERE merchant_id = 'netns-shop' AND sku_id = 'drop'") or 0)
        states = await connection.fetch(
            "SELECT o.order_id, o.idempotency_key, o.buyer_id, l.quantity,"
            " coalesce(t.status, 1) AS status FROM flashtx.orders o"
            " JOIN flashtx.order_lines l USING (order_id)"
            " LEFT JOIN (SELECT DISTINCT ON (order_id) order_id, status"
            "   FROM flashtx.order_transitions ORDER BY order_id, sequence DESC) t"
            "   USING (order_id)"
            " WHERE o.merchant_id = 'netns-shop'")
    finally:
        await connection.close()
    live = [r for r in states if r["status"] in (1, 2, 3)]  # reserved, paid, fulfilled
    stored = {r["idempotency_key"]: r["order_id"] for r in states}
    per_buyer = Counter()
    for r in live:
        per_buyer[r["buyer_id"]] += r["quantity"]
    return {
        "oversold": max(0, sum(r["quantity"] for r in live) - on_hand),
        "lost_acked": sum(1 for key, order_id in acked.items() if stored.get(key) != order_id),
        "duplicates": len(states) - len(stored),
        "limit_violations": sum(1 for units in per_buyer.values() if units > 1),
    }


def phases(attempts: list[list[Any]], fault_at: float, lifted_at: float) -> dict[str, Any]:
    """What clients saw before, during and after the fault."""
    seen: dict[str, Any] = {}
    for name, low, high in (("before", 0.0, fault_at), ("during", fault_at, lifted_at),
                            ("after", lifted_at, float("inf"))):
        part = [a for a in attempts if low <= a[0] < high]
        latencies = sorted(a[1] for a in part)
        seen[name] = {
            "attempts": len(part),
            "codes": dict(Counter(a[2] for a in part)),
            "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        }
    placed_after = [a[0] + a[1] / 1000 for a in attempts if a[0] >= lifted_at and a[2] == "OK"]
    seen["first_ok_after_s"] = (round(min(placed_after) - lifted_at, 2) if placed_after
                                else None)
    return seen


def run(name: str, logs: Path) -> dict[str, Any]:
    """One scenario: its fault once, in a sale of its own."""
    return run_faults([name], logs)


# A sale for several faults one after another: at least 850 buyers arriving at 12/s, and
# more until the last fault is lifted (a rate alone once let the sale end before the last
# fault began on a loaded machine).
SEQUENCE_UNITS, SEQUENCE_BUYERS, SEQUENCE_RATE = 800, 850, 12.0


def run_faults(names: list[str], logs: Path) -> dict[str, Any]:
    """The faults of `names` one after another in one sale (on one set of hosts): each
    applied once the sale is under way and orders are placed again after the one before
    (or the stock is gone), then lifted; the sale's invariants checked at the end."""
    faults = [SCENARIOS[name] for name in names]
    units, buyers, rate = ((UNITS, BUYERS, RATE) if len(faults) == 1 else
                           (SEQUENCE_UNITS, SEQUENCE_BUYERS, SEQUENCE_RATE))
    label = "+".join(names)
    database = f"flashtx_netns_{secrets.token_hex(3)}"
    asyncio.run(_database(database, create=True))
    dsn = SERVER_DSN.rsplit("/", 1)[0] + f"/{database}"
    windows: list[tuple[float, float]] = []
    try:
        with Hosts.up(dsn, logs=logs) as hosts:
            applied = hosts.netem("a", 200, 5.0) if "netem" in names else ""
            config = {"gateways": hosts.gateways, "operator_key": hosts.operator_key,
                      "merchant_id": "netns-shop", "units": units, "buyers": buyers,
                      "rate": rate, "give_up_s": 180, "max_buyers": 4 * buyers,
                      "release_file": str(logs / f"{label}-released")}
            config_file, report_file = logs / f"{label}-config.json", logs / f"{label}.json"
            config_file.write_text(json.dumps(config))
            load = hosts.spawn("client", sys.executable, "-m", "tests.netns.load",
                               str(config_file), str(report_file),
                               log=logs / f"{label}-load.log")
            placed = _wait_for_orders(dsn, units // 5, load, logs / f"{label}-load.log")
            for scenario in faults:
                fault_at = time.time()
                scenario.fault(hosts)
                time.sleep(scenario.hold_s)
                scenario.lift(hosts)
                windows.append((fault_at, time.time()))
                if scenario is not faults[-1]:  # orders again (or sold out) before the next
                    placed = _wait_for_orders(dsn, min(placed + 1, units), load,
                                              logs / f"{label}-load.log")
            Path(config["release_file"]).touch()  # buyers may stop arriving now
            try:
                load.wait(timeout=300)
            except subprocess.TimeoutExpired:
                load.kill()
            if load.returncode != 0 or not report_file.exists():
                raise RuntimeError(f"the load failed: {logs / f'{label}-load.log'}")
            report = json.loads(report_file.read_text())
            invariants = asyncio.run(verify(dsn, report["acked"]))
    finally:
        asyncio.run(_database(database, create=False))
    what = "; then ".join(s.what for s in faults)
    fault_at, lifted_at = windows[0][0], windows[-1][1]
    return {"scenario": label, "what": f"{what} ({applied})" if applied else what,
            "invariants": invariants, "outcomes": report["outcomes"],
            "acked": len(report["acked"]), "units": units, "buyers": report["buyers"],
            "fault_s": round(lifted_at - fault_at, 1),
            "faults": [{"scenario": name, "fault_s": round(lifted - at, 1),
                        **phases(report["attempts"], at, lifted)}
                       for name, (at, lifted) in zip(names, windows, strict=True)],
            **phases(report["attempts"], fault_at, lifted_at)}


def _wait_for_orders(dsn: str, count: int, load: subprocess.Popen[bytes], log: Path) -> int:
    """Waits until `count` orders are stored (the sale goes on); answers how many are."""
    deadline = time.monotonic() + 120
    while (placed := asyncio.run(_orders(dsn))) < count:
        if load.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the sale did not go on ({placed} orders): {log}")
        time.sleep(0.2)
    return placed


def _recovered(result: dict[str, Any]) -> str:
    if result["first_ok_after_s"] is not None:
        return f"{result['first_ok_after_s']} s"
    if result["during"]["codes"].get("OK"):
        return "served throughout: sold out during the fault"
    return "no order placed after it"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | buyers' final answers | invariants | before: p50 / p99 ms | during:"
             " attempts, codes, p99 ms | after: p50 / p99 ms | first order after the fault"
             " ended |", "|---|---|---|---|---|---|---|"]
    for r in results:
        during = r["during"]
        lines.append(
            f"| {r['scenario']}: {r['what']} | {r['outcomes']} | "
            f"{'all 0' if not any(r['invariants'].values()) else r['invariants']} | "
            f"{r['before']['p50_ms']} / {r['before']['p99_ms']} | {during['attempts']},"
            f" {during['codes']}, {during['p99_ms']} | {r['after']['p50_ms']} /"
            f" {r['after']['p99_ms']} | {_recovered(r)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netns.scenarios",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(SCENARIOS), help="scenarios")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--logs", default="", help="keep logs here (default: a temp dir)")
    parser.add_argument("--together", action="store_true",
                        help="the faults one after another in one sale (as the test does)")
    args = parser.parse_args(argv)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="flashtx-netns-"))
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for names in [args.names] if args.together else [[name] for name in args.names]:
        print(f"{'+'.join(names)}: {'; then '.join(SCENARIOS[n].what for n in names)} …",
              flush=True)
        results.append(run_faults(names, logs))
        for fault in results[-1]["faults"] if args.together else []:
            print(json.dumps({k: fault[k] for k in ("scenario", "during",
                                                    "first_ok_after_s")}), flush=True)
        print(json.dumps({k: results[-1][k] for k in ("invariants", "outcomes",
                                                      "first_ok_after_s")}), flush=True)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"logs: {logs}")
    return 0 if all(not any(r["invariants"].values()) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
