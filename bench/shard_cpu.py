"""CPU per order of the shards alone, in one process, without Ray, gRPC or Postgres.

    python -m bench.shard_cpu --orders 100000 --batch 200 [--profile out.pstats]

The real OrderShard and StockShard classes, wired as in the simulator (flashtx.sim: calls
copy their arguments and answers with pickle, as Ray does; the store is in memory),
place batches of one-line orders on a few hot SKUs and report the CPU microseconds per
order. No network, no other process, virtual time: the figure moves only when the
shards' code does, so it shows a hot-path change that end-to-end runs on a noisy machine
cannot. `--profile` writes a cProfile of the placing for `python -m pstats`.
"""

from __future__ import annotations

import argparse
import cProfile
import time

from flashtx.actors import gcpolicy
from flashtx.actors.order_shard import OrderShard
from flashtx.actors.stock_shard import StockShard
from flashtx.engine.messages import PlaceBatch, SkuBatch
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.sim.run import sim_config
from flashtx.sim.world import Faults, SimPeer, World, run_in

MERCHANT = "cpu-shop"


async def _place_all(world: World, orders: int, batch: int, skus: int,
                     profiler: cProfile.Profile | None) -> float:
    config = sim_config(slots_total=64, journal_entries_max=1_000_000,
                        commit_orders_max=5000, commit_delay_ms_max=1.0,
                        place_orders_batch_max=max(batch, 1000),
                        # The simulator's frequent snapshots (every 0.2 s of virtual time)
                        # are background work, not the order path's: off here.
                        order_snapshot_interval_s=0)
    stock_table = RoutingTable.uniform(config.slots_total, 2)
    order_table = RoutingTable.uniform(config.slots_total, 1)
    for i in range(2):
        world.add(f"stock-{i}", lambda i=i: StockShard(i, config, stock_table.slots_of(i),
                                                       ["order-0"]))
    world.add("order-0", lambda: OrderShard(0, config, stock_table, order_table))
    for n in range(skus):
        sku_id = f"sku{n}"
        shard = stock_table.shard_of_slot[slot_of(MERCHANT, sku_id, config.slots_total)]
        await SimPeer(f"stock-{shard}").upsert(SkuBatch.of([(MERCHANT, sku_id, sku_id, 100,
                                                             10 * orders, 0)]))
    order = SimPeer("order-0")
    placed = 0
    cpu_s = 0.0
    for start in range(0, orders, batch):
        items = PlaceBatch.of([(MERCHANT, f"k{i}", f"b{i}", ((f"sku{i % skus}", 1),), 900,
                  slot_of(MERCHANT, f"b{i}", config.slots_total), 0, "key", "", "USD")
                 for i in range(start, min(orders, start + batch))])
        began = time.process_time()
        if profiler is not None:
            profiler.enable()
        answers = await order.place(items)
        if profiler is not None:
            profiler.disable()
        cpu_s += time.process_time() - began
        placed += sum(1 for code, _ in answers if code.name == "OK")
    if placed != orders:
        raise SystemExit(f"placed {placed} of {orders}")
    return cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--skus", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the placing here")
    parser.add_argument("--gc", choices=("engine", "default"), default="engine",
                        help="engine: the engine processes' GC policy (actors.gcpolicy); "
                        "default: CPython's")
    args = parser.parse_args()
    if args.gc == "engine":
        gcpolicy.install(sim_config())
    world = World(1, Faults.none())
    profiler = cProfile.Profile() if args.profile else None
    cpu_s = run_in(world, lambda: _place_all(world, args.orders, args.batch, args.skus,
                                             profiler))
    print(f"{args.orders:,} orders in batches of {args.batch}: "
          f"{cpu_s / args.orders * 1e6:.1f} µs of CPU per order (order shard + stock shards"
          f" + copies of calls and answers + in-memory store)")
    if profiler is not None:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
