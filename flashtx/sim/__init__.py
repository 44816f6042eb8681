"""A deterministic simulator of the shards: the real OrderShard and StockShard classes on
virtual time, with a database, a network and processes that fail on purpose, checked
after every step against what the database says. ``python -m flashtx.sim --help``."""

from flashtx.sim.run import Outcome, run_seed
from flashtx.sim.world import Faults

__all__ = ["Faults", "Outcome", "run_seed"]
