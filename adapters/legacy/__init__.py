"""`flashtx migrate`: import merchants, SKUs, stock, customers and orders from a legacy
commerce system into flashtx's durable tables, repeatably and checkably.

    mapping.py    the mapping file (TOML): legacy tables and columns → flashtx entities
    source.py     where legacy rows come from: a Postgres schema, or a directory of CSV
                  exports staged into a scratch schema with COPY
    transform.py  pure row conversion: deterministic ids, slots, validation → rejects
    target.py     the SQL this importer runs against flashtx's tables
    sync.py       one run: diff legacy against flashtx, write only the differences
                  (first import, re-run, resume after an interruption and re-sync are
                  the same operation)
    reconcile.py  counts and checksums per entity, legacy vs flashtx
    sample.py     a sample legacy schema and data generator (small and full size)
    cli.py        the command line
"""

from flashtx.adapters.legacy.mapping import Mapping, load_mapping
from flashtx.adapters.legacy.sync import SyncOptions, SyncReport, run_sync

__all__ = ["Mapping", "SyncOptions", "SyncReport", "load_mapping", "run_sync"]
