"""`flashtx status`: one screen of a running deployment: nodes, gateways, shards, rates,
latencies and lags, from the actors' own statistics."""

from __future__ import annotations

import time
from typing import Any

import ray
from rich.console import Group
from rich.table import Table

from flashtx.actors.ports import NAMESPACE, Admin, RayPeer, wait_all

KINDS = ("gateway", "merchant", "stock", "order", "relay", "connector")


def _actors() -> dict[str, Admin]:
    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry.get("namespace") == NAMESPACE]
    return {name: RayPeer(name=name) for name in sorted(names)
            if name.split("-")[0] in KINDS}


def _stats(actors: dict[str, Admin]) -> dict[str, Any]:
    calls = {name: peer.stats() for name, peer in actors.items()}
    found: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            [found[name]] = wait_all([call], timeout_s=5)
        except Exception as error:  # a dead or busy actor is shown as such
            found[name] = {"error": type(error).__name__}
    return found


def collect(interval_s: float = 1.0) -> dict[str, Any]:
    """Two samples `interval_s` apart, so that rates can be shown."""
    actors = _actors()
    first = _stats(actors)
    time.sleep(interval_s)
    second = _stats(actors)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"first": first, "second": second, "interval_s": interval_s, "nodes": nodes}


def _rate(snapshot: dict[str, Any], name: str, field: str) -> float:
    before = snapshot["first"].get(name, {}).get(field, 0) or 0
    after = snapshot["second"].get(name, {}).get(field, 0) or 0
    return float(max(0, after - before) / snapshot["interval_s"])


def render(snapshot: dict[str, Any]) -> Group:
    stats = snapshot["second"]
    nodes = snapshot["nodes"]
    summary = Table(title="flashtx", show_header=False)
    summary.add_row("nodes alive", str(len(nodes)))
    summary.add_row("CPUs", str(int(sum(n["Resources"].get("CPU", 0) for n in nodes))))
    for kind in KINDS:
        summary.add_row(f"{kind} actors", str(sum(1 for n in stats if n.startswith(kind))))
    routing = stats.get("order-0", {}).get("stock_routing")
    if routing:
        summary.add_row("stock routing", stock_routing_line(routing))
    table = Table(title="actors")
    for column in ("actor", "state", "orders/s", "items/s", "queue", "latency ms", "lag"):
        table.add_column(column, justify="left" if column in ("actor", "state") else "right")
    for name, row in stats.items():
        table.add_row(*_row(snapshot, name, row))
    return Group(summary, table)


def stock_routing_line(routing: dict[str, Any]) -> str:
    """Which stock routing table the shards use: the configured one (version 1), or the
    one a reshard stored, which wins over `stock_shards` at every start."""
    line = f"{routing['shards']} stock shards, table v{routing['version']}"
    if routing["version"] > 1:
        line += " (stored by a reshard; it wins over stock_shards)"
    if not routing.get("settled", True):
        line += " [yellow]reshard not completed[/]"
    return line


def _row(snapshot: dict[str, Any], name: str, row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [name, f"[red]{row['error']}[/]", "", "", "", "", ""]
    state = "[yellow]commits failing[/]" if row.get("commit_failing") else "ok"
    if row.get("materialize_failing"):
        state = "[yellow]materializing failing[/]"
    if row.get("redis_failing") or row.get("failing"):
        state = "[yellow]failing: " + str(row.get("last_error", ""))[:40] + "[/]"
    orders = _rate(snapshot, name, "committed_entries") / 2 if name.startswith("order") else 0
    items = _rate(snapshot, name, "items_sent") + _rate(snapshot, name, "relayed") + _rate(
        snapshot, name, "delivered")
    queue = row.get("journal_depth", row.get("inflight", row.get("pending",
                                                                  row.get("merchants", ""))))
    calls = _rate(snapshot, name, "rpc_count")
    latency = (_rate(snapshot, name, "rpc_seconds") / calls * 1000) if calls else 0.0
    lag = f"{row['lag_ms']} ms" if "lag_ms" in row else str(row.get("dead_letters", ""))
    if "materialize_lag_ms" in row:  # an order shard: its materializer's lag
        lag = f"{row['materialize_lag_ms']} ms ({row['materialize_lag_batches']} batches)"
    return [name, state, f"{orders:,.0f}" if orders else "", f"{items:,.0f}" if items else "",
            str(queue), f"{latency:.1f}" if latency else "", lag]
