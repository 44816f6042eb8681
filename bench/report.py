"""The run's report: JSON document, summary table and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.table import Table

PLOT_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)


def latency_ms(histogram: HdrHistogram) -> dict[str, float]:
    if not histogram.total_count:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    return {
        "p50": histogram.get_value_at_percentile(50.0) / 1000,
        "p99": histogram.get_value_at_percentile(99.0) / 1000,
        "p999": histogram.get_value_at_percentile(99.9) / 1000,
        "max": histogram.get_max_value() / 1000,
    }


def target_summary(merged: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields of one target's run (without the ledger and histogram objects)."""
    outcomes = merged["outcomes"]
    rejected = {code: count for code, count in sorted(outcomes.items()) if code != "ok"}
    return {
        "throughput_per_s": round(merged["throughput_per_s"], 1),
        "accepted_per_s": round(
            outcomes.get("ok", 0) * merged["throughput_per_s"] / max(1, merged["completed"]), 1
        ),
        "latency_ms": latency_ms(merged["histogram"]),
        "attempted": merged["attempted"],
        "accepted": outcomes.get("ok", 0),
        "rejected": rejected,
        "other_operations": dict(sorted(merged["other_operations"].items())),
        "timeline_per_s": merged["timeline"],
        **({"cpu": merged["cpu"]} if "cpu" in merged else {}),
        **({"events": merged["events"]} if "events" in merged else {}),
        **({"materializer": merged["materializer"]} if "materializer" in merged else {}),
    }


def document(
    config: dict[str, Any],
    engine: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    baselines: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The --json document: the engine's figures at top level, baselines beside them."""
    top: dict[str, Any] = {"scenario": config["scenario"], "mode": config["mode"]}
    top.update(
        engine
        or {
            "throughput_per_s": 0.0,
            "attempted": 0,
            "accepted": 0,
            "rejected": {},
            "latency_ms": latency_ms(HdrHistogram(1, 2, 1)),
        }
    )
    top["invariants"] = (verification or {}).get("invariants", {})
    top["verification_checked"] = (verification or {}).get("checked", {})
    top["baselines"] = baselines
    top["ratios"] = {
        f"engine_vs_{name}": round(top["throughput_per_s"] / b["throughput_per_s"], 3)
        for name, b in baselines.items()
        if b["throughput_per_s"] > 0 and engine
    }
    top["config"] = config
    top["goals"] = goals(top) if engine else {}
    return top


def goals(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goals that this run's shape can judge: measured figure against target."""
    ratios, judged = doc["ratios"], {}
    if doc["config"]["loop"] == "open":
        # Every target gets the same rate: only latency tells them apart. Meaningful for the
        # goal when --rate is half of the maximum measured in a closed-loop run.
        p99_ms = doc["latency_ms"]["p99"]
        return {"p99_ms_at_rate": {"measured": p99_ms, "goal": 15.0, "met": p99_ms <= 15.0}}
    if doc["mode"] == "unary" and "engine_vs_echo" in ratios:
        judged["unary_vs_echo_ratio"] = (ratios["engine_vs_echo"], 0.7)
    if doc["scenario"] == "flash-sale":
        if "engine_vs_postgres" in ratios:
            judged["flash_sale_vs_postgres_ratio"] = (ratios["engine_vs_postgres"], 20.0)
        if "engine_vs_redis" in ratios:
            judged["flash_sale_vs_redis_ratio"] = (ratios["engine_vs_redis"], 1.0)
    if doc["mode"] == "batch":
        judged["batch_orders_per_s"] = (doc["throughput_per_s"], 100_000.0)
        if "engine_vs_copy" in ratios:  # the database's limit for the engine's rows
            judged["batch_vs_bare_copy_ratio"] = (ratios["engine_vs_copy"], 0.25)
    met = _met(judged)
    events = doc.get("events")
    if events and events["events"]:  # lower is better: judged apart
        met["events_p99_ms"] = {"measured": events["p99_ms"], "goal": 250.0,
                                "met": events["p99_ms"] <= 250.0}
    return met


def _met(judged: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    return {
        name: {"measured": measured, "goal": goal, "met": measured >= goal}
        for name, (measured, goal) in judged.items()
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def print_summary(console: Console, doc: dict[str, Any]) -> None:
    rows = {"engine": doc} if doc.get("attempted") else {}
    rows.update(doc["baselines"])
    table = Table(
        title=f"flashtx bench · {doc['scenario']} · {doc['mode']} · "
        f"{doc['config']['loop']} loop · {doc['config']['duration_s']} s"
    )
    for column in (
        "target",
        "orders/s",
        "accepted",
        "rejected",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "engine ×",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for name, row in rows.items():
        ratio = doc["ratios"].get(f"engine_vs_{name}")
        latency = row["latency_ms"]
        table.add_row(
            name,
            f"{row['throughput_per_s']:,.0f}",
            f"{row['accepted']:,}",
            f"{sum(row['rejected'].values()):,}",
            f"{latency['p50']:.2f}",
            f"{latency['p99']:.2f}",
            f"{latency['p999']:.2f}",
            f"{latency['max']:.1f}",
            "" if ratio is None else f"{ratio:.2f}",
        )
    console.print(table)
    _print_cpu(console, rows)
    events = rows.get("engine", {}).get("events")
    if events:
        console.print(
            f"events: {events['events']:,} order.reserved events in the stream for "
            f"{events['accepted']:,} accepted orders; placement → stream p50 "
            f"{events['p50_ms']} ms, p99 {events['p99_ms']} ms, max {events['max_ms']} ms")
    lag = rows.get("engine", {}).get("materializer")
    if lag:
        console.print(
            f"materializer: journal rows not materialized during the run: at most "
            f"{lag['max_rows']:,}, oldest p50 {lag['p50_lag_ms']} ms, max {lag['max_lag_ms']} "
            f"ms; caught up {lag['catch_up_s']} s after the load ended")
    if doc.get("attempted"):
        _print_invariants(console, doc)


def _print_cpu(console: Console, rows: dict[str, Any]) -> None:
    """--profile: CPU µs per answered order of each stage, one column per target."""
    profiled = {name: row["cpu"] for name, row in rows.items() if "cpu" in row}
    if not profiled:
        return
    table = Table(title="CPU µs per answered order, by stage (measured window; bench.cpu)")
    table.add_column("stage")
    for name in profiled:
        table.add_column(name, justify="right")
    stages = next(iter(profiled.values()))["us_per_order"]
    for stage in stages:
        values = [cpu["us_per_order"][stage] for cpu in profiled.values()]
        if any(values):
            table.add_row(stage, *(f"{value:,.1f}" for value in values))
    table.add_row("ack path (without materializer pg, other)",
                  *(f"{cpu.get('us_per_order_ack_path', cpu['us_per_order_total']):,.1f}"
                    for cpu in profiled.values()))
    table.add_row("total (without other)",
                  *(f"{cpu['us_per_order_total']:,.1f}" for cpu in profiled.values()))
    console.print(table)


def _print_invariants(console: Console, doc: dict[str, Any]) -> None:
    invariants = doc["invariants"]
    bad = {name: count for name, count in invariants.items() if count}
    verdict = "[green]all 0[/green]" if not bad else f"[red]violated: {bad}[/red]"
    console.print(
        f"invariants ({', '.join(invariants)}): {verdict}; checked {doc['verification_checked']}"
    )
    if doc["rejected"]:
        console.print(f"engine rejections: {doc['rejected']}")
    for name, goal in doc["goals"].items():
        verdict = "[green]met[/green]" if goal["met"] else "[red]not met[/red]"
        console.print(f"goal {name}: {goal['measured']:,.2f} (goal {goal['goal']:,}) {verdict}")


def plot(path: Path, doc: dict[str, Any], histograms: dict[str, HdrHistogram]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"engine": doc} if doc.get("attempted") else {}
    rows.update(doc["baselines"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, row in rows.items():
        timeline = row["timeline_per_s"][: int(doc["config"]["duration_s"])]
        left.plot(range(len(timeline)), timeline, label=name, marker=".")
        histogram = histograms.get(name)
        if histogram is not None and histogram.total_count:
            xs = [1 / (1 - p / 100) if p < 100 else 1e5 for p in PLOT_PERCENTILES]
            ys = [histogram.get_value_at_percentile(p) / 1000 for p in PLOT_PERCENTILES]
            right.plot(xs, ys, label=name, marker="o")
    left.set(
        title="throughput (orders answered per second)",
        xlabel="second of measurement",
        ylabel="orders/s",
    )
    left.set_yscale("symlog")
    right.set(title="latency by percentile", xlabel="percentile", ylabel="latency (ms)")
    right.set_xscale("log")
    right.set_yscale("log")
    ticks = [1 / (1 - p / 100) if p < 100 else 1e5 for p in PLOT_PERCENTILES]
    right.set_xticks(ticks, [f"{p:g}" for p in PLOT_PERCENTILES], rotation=45)
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(f"flashtx bench · {doc['scenario']} · {doc['mode']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
