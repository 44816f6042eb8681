"""The `flashtx` command: serve, demo, status, bench, migrate, replay-dead-letters, and
merchant / key / sku / order to manage a running engine over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        try:
            from flashtx.bench.cli import main as bench_main
        except ImportError as error:  # installed without the bench extra
            console.print(f"[red]flashtx bench needs the bench extra ({error.name} is"
                          " missing): pip install 'flashtx[bench]'[/red]")
            return 2
        return bench_main(argv[1:])
    if argv and argv[0] == "migrate":
        from flashtx.adapters.legacy.cli import main as migrate_main

        return migrate_main(argv[1:])
    parser = argparse.ArgumentParser(prog="flashtx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flashtx {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start or join a Ray cluster and serve gRPC")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default 50051)")
    serve.add_argument("--address", default=None,
                       help="Ray cluster address to join (default: start a local one)")
    serve.add_argument("--gateways", type=int, default=None,
                       help="gateway actors at start (default: FLASHTX_GATEWAYS)")
    serve.add_argument("--stock-shards", type=int, default=None,
                       help="stock shard actors (default: FLASHTX_STOCK_SHARDS)")
    serve.add_argument("--order-shards", type=int, default=None,
                       help="order shard actors (default: FLASHTX_ORDER_SHARDS)")
    serve.add_argument("--dashboard", action="store_true", help="start the Ray dashboard")
    serve.add_argument("--connectors", default=None,
                       help="JSON file of connectors to run (docs/events.md)")
    dev = commands.add_parser(
        "dev", help="serve on this machine for development: a merchant, SKUs and keys printed")
    dev.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051)")
    dev.add_argument("--merchant", default=None,
                     help="the merchant to create (default: dev-<random>)")
    dev.add_argument("--json", action="store_true",
                     help="print the address and keys as one JSON line (for scripts)")
    demo = commands.add_parser("demo", help="run a local flash sale through the real gRPC port")
    demo.add_argument("--buyers", type=int, default=2000, help="concurrent buyers")
    demo.add_argument("--units", type=int, default=500, help="units of the hot SKU")
    commands.add_parser("bench", help="benchmark harness (flashtx bench --help)")
    commands.add_parser("migrate", help="import a legacy merchant (flashtx migrate --help)")
    status = commands.add_parser("status", help="one screen of a running deployment")
    status.add_argument("--address", default="auto", help="Ray cluster address")
    status.add_argument("--watch", type=float, default=0,
                        help="refresh every N seconds until Ctrl-C")
    status.add_argument("--json", action="store_true",
                        help="print the actors' statistics as JSON (for scripts)")
    health = commands.add_parser(
        "health", help="ask a gateway's gRPC health service; exit 0 when it serves")
    health.add_argument("--address", default="127.0.0.1:50051", help="gateway host:port")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    health.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                        help="speak TLS (default: when FLASHTX_TLS_CERT_FILE is set, as the"
                             " gateway on this host does)")
    health.add_argument("--ca-file", default=None,
                        help="the CA that signed the gateway's certificate (default:"
                             " FLASHTX_TLS_CA_FILE, else the certificate itself)")
    health.add_argument("--server-name", default=None,
                        help="a name the certificate carries (default:"
                             " FLASHTX_TLS_SERVER_NAME, localhost)")
    reshard = commands.add_parser(
        "reshard", help="add stock shards to the running deployment while orders flow")
    reshard.add_argument("--stock-shards", type=int, required=True,
                         help="stock shards wanted (more than the deployment has now)")
    reshard.add_argument("--dsn", default=None,
                         help="the deployment's Postgres (default: FLASHTX_POSTGRES_DSN)")
    reshard.add_argument("--timeout", type=float, default=300.0,
                         help="seconds to wait for the deployment's answer")
    replay = commands.add_parser("replay-dead-letters",
                                 help="deliver a connector's dead letters again")
    replay.add_argument("connector", help="the connector's name")
    replay.add_argument("--address", default="auto", help="Ray cluster address")
    from flashtx import admin

    admin.add_commands(commands)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if options.command == "serve":
        return serve_command(options)
    if options.command == "status":
        return status_command(options)
    if options.command == "replay-dead-letters":
        return replay_command(options)
    if options.command == "health":
        return health_command(options)
    if options.command == "reshard":
        return reshard_command(options)
    if options.command in ("merchant", "key", "sku", "order"):
        return admin.run(options)
    if options.command == "dev":
        from flashtx.dev import run_dev

        return run_dev(options.port, options.merchant, options.json)
    from flashtx.demo import run_demo

    return run_demo(options.buyers, options.units)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flashtx")
    except PackageNotFoundError:
        return "unknown (not installed)"


def show_operator_key(key: str, data_dir: str, terminal: bool | None = None) -> Path | None:
    """A generated operator key is shown once: on a terminal, printed; otherwise (a
    service's log, a container's output) it never goes to the output: it is written to
    `<data_dir>/operator-key`, readable by its owner alone, and the path is printed.
    Answers that path (None: printed)."""
    if sys.stdout.isatty() if terminal is None else terminal:
        console.print("operator key (shown once; set FLASHTX_OPERATOR_KEY to choose it):\n"
                      f"  {key}")
        return None
    from flashtx.adapters.embedded import default_data_dir

    folder = Path(data_dir) if data_dir else default_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "operator-key"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(key + "\n")
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    console.print(f"operator key written to {path} (mode 0600; not printed: this output"
                  " is not a terminal). Set FLASHTX_OPERATOR_KEY to choose it.")
    return path


def serve_command(options: argparse.Namespace) -> int:
    from flashtx.app import EngineStartError, LocalEngine
    from flashtx.engine.config import ConfigError, load_config

    overrides = {name: value for name, value in (
        ("gateways", options.gateways), ("stock_shards", options.stock_shards),
        ("order_shards", options.order_shards)) if value is not None}
    if options.connectors:
        overrides["connectors_file"] = options.connectors
    try:
        config = load_config(**overrides)
    except ConfigError as error:
        console.print(f"[bold red]flashtx cannot start:[/] {error}")
        return 2
    port = options.port or config.grpc_port
    # A stop at any moment drains: asked for while the engine starts, it waits for the
    # start to end (LocalEngine.start keeps this handler through ray.init).
    stop = threading.Event()

    def asked_to_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: at once, no drain
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, asked_to_stop)
    try:
        engine = LocalEngine.start(port=port, ray_address=options.address,
                                   dashboard=options.dashboard, config=config)
    except EngineStartError as error:
        console.print(f"[bold red]flashtx cannot start:[/] {error}")
        return 2
    used = engine.config  # stock shards: as a reshard left them, where one did
    console.print(f"[bold green]flashtx serving[/] on port {port} "
                  f"({used.gateways} gateways, {used.stock_shards} stock shards, "
                  f"{used.order_shards} order shards)")
    if engine.operator_key and not config.operator_key:
        show_operator_key(engine.operator_key, config.data_dir)
    from flashtx.reshard import POLL_S, serve_pending

    while not stop.wait(POLL_S):  # `flashtx reshard` asks through the database
        if engine.lease_lost():
            console.print("[bold red]another deployment took this database:[/] stopping")
            break
        serve_pending(engine)
    console.print("draining gateways and stopping...")
    engine.stop()
    return 0


def reshard_command(options: argparse.Namespace) -> int:
    """Prints the outcome as JSON (exit 0), or one line saying why not (exit 1)."""
    from flashtx.engine.config import ConfigError, load_config
    from flashtx.reshard import ReshardError, request

    err = Console(stderr=True)
    if options.stock_shards < 2:
        err.print("[bold red]flashtx reshard:[/] --stock-shards must be at least 2")
        return 1
    try:
        dsn = options.dsn or load_config().postgres_dsn
    except ConfigError as error:
        err.print(f"[bold red]flashtx reshard:[/] {error}")
        return 2
    if not dsn or dsn == "none":
        err.print("[bold red]flashtx reshard:[/] needs the deployment's database"
                  " (--dsn or FLASHTX_POSTGRES_DSN)")
        return 1
    try:
        with err.status(f"resharding to {options.stock_shards} stock shards …"):
            result = asyncio.run(request(dsn, options.stock_shards, options.timeout))
    except ReshardError as error:
        err.print(f"[bold red]flashtx reshard:[/] {error}")
        return 1
    print(json.dumps(result))
    return 0


def status_command(options: argparse.Namespace) -> int:
    from rich.live import Live

    from flashtx.actors.routing import NAMESPACE
    from flashtx.status import collect, render

    if not _join_cluster(options.address, NAMESPACE):
        return 2
    if options.json:
        import json

        print(json.dumps(collect(), default=str))
        return 0
    if not options.watch:
        console.print(render(collect()))
        return 0
    with Live(render(collect()), console=console, refresh_per_second=1) as live:
        try:
            while True:
                live.update(render(collect(options.watch)))
        except KeyboardInterrupt:
            return 0


def health_command(options: argparse.Namespace) -> int:
    """SERVING: exit 0; anything else (not serving, no answer): one line, exit 1. For
    container health checks and scripts (the same check as Kubernetes' gRPC probe, which
    speaks no TLS: with TLS on, probes run this command). TLS as the gateway's own
    settings say (FLASHTX_TLS_CERT_FILE), or as asked."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from flashtx.engine.config import ConfigError, load_config

    try:
        config = load_config()
    except ConfigError as error:
        console.print(f"{options.address}: {error}")
        return 2
    tls = bool(config.tls_cert_file) if options.tls is None else options.tls
    try:
        if tls:
            roots_file = options.ca_file or config.tls_ca_file or config.tls_cert_file
            roots = Path(roots_file).read_bytes() if roots_file else None
            name = options.server_name or config.tls_server_name
            channel = grpc.secure_channel(
                options.address, grpc.ssl_channel_credentials(root_certificates=roots),
                options=[("grpc.ssl_target_name_override", name)])
        else:
            channel = grpc.insecure_channel(options.address)
        with channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=options.timeout)
    except OSError as error:
        console.print(f"{options.address}: cannot read the CA file: {error}")
        return 1
    except grpc.RpcError as error:
        console.print(f"{options.address}: no answer ({error.code().name})")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    console.print(f"{options.address}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


def _join_cluster(address: str, namespace: str, probe_s: float = 3.0) -> bool:
    """Joins the Ray cluster at `address` ("auto": the one on this machine); False, with
    one line said, when there is none (a wrong address fails within `probe_s`, where
    Ray itself would wait for minutes)."""
    import socket

    import ray

    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), probe_s):
                pass
        except (OSError, ValueError) as error:
            console.print(f"[bold red]no running flashtx cluster at {address}:[/] {error}")
            return False
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        console.print(f"[bold red]no running flashtx cluster at {address}:[/] {error}")
        return False
    return True


def replay_command(options: argparse.Namespace) -> int:
    import ray

    from flashtx.actors.ports import NAMESPACE, RayPeer, wait_all

    if not _join_cluster(options.address, NAMESPACE):
        return 2
    try:
        ray.get_actor(f"connector-{options.connector}")
    except ValueError:
        console.print(f"[bold red]no connector named {options.connector!r} is running[/]")
        return 1
    connector: Any = RayPeer(name=f"connector-{options.connector}")
    delivered: int
    still_dead: int
    [(delivered, still_dead)] = wait_all([connector.replay_dead_letters()])
    console.print(f"{options.connector}: {delivered} delivered, {still_dead} still dead")
    return 0 if still_dead == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
