"""`flashtx migrate`: import from a legacy system, verify, re-sync; `flashtx migrate sample`
makes a sample legacy schema to try it on."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from flashtx.adapters.legacy.mapping import MappingError, load_mapping
from flashtx.adapters.legacy.sample import SIZES, create_sample, export_csv, sample_mapping
from flashtx.adapters.legacy.sync import SyncOptions, SyncReport, run_sync

__all__ = ["main"]

console = Console()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "sample":
        return _sample_command(argv[1:])
    parser = argparse.ArgumentParser(
        prog="flashtx migrate", description="Import merchants from a legacy commerce system "
        "(or re-sync them, or --verify). `flashtx migrate sample --help` makes sample data.")
    parser.add_argument("--mapping", type=Path, required=True, help="mapping file (TOML)")
    parser.add_argument("--source-dsn", default=None,
                        help="legacy Postgres DSN (default: the flashtx database)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="read CSV exports (<table>.csv) from this directory instead")
    parser.add_argument("--dsn", default=None, help="flashtx Postgres DSN (default: "
                        "FLASHTX_POSTGRES_DSN, else the embedded server)")
    parser.add_argument("--merchant", action="append", default=[],
                        help="flashtx merchant id to migrate (repeat; default: all)")
    parser.add_argument("--verify", action="store_true", help="compare only, write nothing")
    parser.add_argument("--rejects", type=Path, default=Path("migrate-rejects.jsonl"))
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    options = parser.parse_args(argv)
    if not 1 <= options.batch_rows <= 100_000:
        parser.error("--batch-rows must be in 1..100000")
    try:
        mapping = load_mapping(options.mapping)
    except (OSError, MappingError) as error:
        console.print(f"[red]mapping:[/] {error}")
        return 2
    sync_options = SyncOptions(
        target_dsn=options.dsn or _default_dsn(), source_dsn=options.source_dsn,
        csv_dir=options.csv, merchants=frozenset(options.merchant),
        batch_rows=options.batch_rows, reject_path=options.rejects,
        verify_only=options.verify, quiet=options.quiet)
    report = asyncio.run(run_sync(mapping, sync_options))
    print_report(report, options.verify)
    return 0 if report.reconciled else 1


def _default_dsn() -> str:
    from flashtx.adapters.embedded import postgres_dsn

    return postgres_dsn()


def print_report(report: SyncReport, verify_only: bool) -> None:
    table = Table(title="reconciliation: legacy vs flashtx")
    table.add_column("entity", no_wrap=True)
    for column in ("legacy", "rejected", "expected", "flashtx", "checksum", "written", ""):
        table.add_column(column, justify="right", no_wrap=True)
    for row in report.reconciliation:
        counts = report.counts(row.entity)
        written = f"+{counts.inserted}/~{counts.updated}/-{counts.removed}"
        checksum = (f"{row.flashtx_checksum % 16**6:06x}" if row.matches else
                    f"{row.expected_checksum % 16**6:06x}≠{row.flashtx_checksum % 16**6:06x}")
        table.add_row(row.entity, f"{row.legacy_rows:,}", f"{row.rejected_rows:,}",
                      f"{row.expected_rows:,}", f"{row.flashtx_rows:,}", checksum,
                      "-" if verify_only else written,
                      "[green]ok[/]" if row.matches else "[red]DIFFERS[/]")
    console.print(table)
    rows = sum(counts.legacy for counts in report.entities.values())
    console.print(f"{len(report.merchant_ids)} merchants, {rows:,} legacy rows in "
                  f"{report.seconds:.1f}s ({rows / max(report.seconds, 1e-9):,.0f} rows/s); "
                  f"{report.written:,} rows written; {report.rejected:,} rejected"
                  + (f" (reasons in {report.reject_path})" if report.rejected else ""))


def _sample_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flashtx migrate sample",
                                     description="create a sample legacy schema with data")
    parser.add_argument("--schema", default="legacy")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--prefix", default="legacy", help="merchant ids are PREFIX-shop-N")
    parser.add_argument("--dsn", default=None, help="where to create it (default: flashtx's)")
    parser.add_argument("--mapping-out", type=Path, default=Path("legacy-mapping.toml"))
    parser.add_argument("--csv", type=Path, default=None, help="also export CSVs here")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    asyncio.run(_make_sample(options.dsn or _default_dsn(), options))
    options.mapping_out.write_text(sample_mapping(options.schema))
    console.print(f"sample '{options.size}' in schema {options.schema} "
                  f"({time.perf_counter() - started:.1f}s); mapping: {options.mapping_out}")
    return 0


async def _make_sample(dsn: str, options: argparse.Namespace) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await create_sample(connection, options.schema, SIZES[options.size], options.prefix)
        if options.csv is not None:
            await export_csv(connection, options.schema, options.csv)
    finally:
        await connection.close()
