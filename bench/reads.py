"""``python -m bench.reads``: snapshot stock reads, the gateway against a bare gRPC server.

    python -m bench.reads --duration 8 --skus 100 [--engine-config FIELD=VALUE ...]

Starts a local engine (one gateway and per-key rates raised, as ``flashtx bench`` does;
or uses ``--target``, whose per-key read rate then applies), gives a fresh merchant
``--catalog`` SKUs, then drives two requests with h2load (Debian's ``nghttp2-client``: a
load generator in C, so the client's CPU stays small beside the server's):

* GetStock of one SKU, snapshot consistency;
* GetStockLevels of ``--skus`` SKUs, snapshot consistency.

The same bytes then go to the bare grpc.aio server (``bench.echo_server``), which answers
each with the engine's own answer to it: the ratio is the engine's cost over gRPC's.
Every answer is checked once from Python before the load (status OK, the levels
expected). h2load counts HTTP/2 answers, not gRPC statuses, so each run is also checked by
the bytes it received: a refused call carries no message, and a run whose answers are not
all full-sized is reported as failed (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import grpc
from rich.console import Console
from rich.table import Table

from flashtx.bench import targets_setup
from flashtx.bench.scenarios import SkuSpec
from flashtx.bench.targets import engine_setup
from flashtx_client.v1 import common_pb2, stock_pb2

GET_STOCK = "/flashtx.v1.StockService/GetStock"
GET_STOCK_LEVELS = "/flashtx.v1.StockService/GetStockLevels"


@dataclass(frozen=True)
class Request:
    name: str
    method: str
    body: bytes  # the serialized request message
    levels: int  # levels in its answer


@dataclass(frozen=True)
class Outcome:
    requests_per_s: float
    mean_ms: float
    done: int
    full_answers: bool


def _frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (not compressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _requests(sku_ids: list[str], levels_per_read: int) -> list[Request]:
    snapshot = common_pb2.READ_CONSISTENCY_SNAPSHOT
    one = stock_pb2.GetStockRequest(sku_id=sku_ids[0], consistency=snapshot)
    many = stock_pb2.GetStockLevelsRequest(sku_ids=sku_ids[:levels_per_read],
                                           consistency=snapshot)
    return [Request("GetStock (1 SKU)", GET_STOCK, one.SerializeToString(), 1),
            Request(f"GetStockLevels ({levels_per_read} SKUs)", GET_STOCK_LEVELS,
                    many.SerializeToString(), levels_per_read)]


async def _answer(address: str, api_key: str, request: Request) -> bytes:
    """The engine's answer to `request` (raw bytes), checked."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(request.method)
        answer: bytes = await call(request.body, metadata=engine_setup.bearer(api_key),
                                   timeout=30)
    if request.method == GET_STOCK:
        found = 1 if stock_pb2.GetStockResponse.FromString(answer).level.sku_id else 0
    else:
        parsed = stock_pb2.GetStockLevelsResponse.FromString(answer)
        if parsed.missing_sku_ids:
            raise RuntimeError(f"{request.name}: missing {list(parsed.missing_sku_ids)[:3]}")
        found = len(parsed.levels)
    if found != request.levels:
        raise RuntimeError(f"{request.name}: {found} levels in the answer, not {request.levels}")
    return answer


_RATE = re.compile(r"finished in [\d.]+s, ([\d.]+) req/s")
_DONE = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")
_DATA = re.compile(r"\((\d+)\) data")
_MEAN = re.compile(r"time for request:\s+\S+\s+\S+\s+(\S+)")


def _h2load(address: str, api_key: str, request: Request, body_path: str, answer_size: int,
            args: argparse.Namespace) -> Outcome:
    command = ["h2load", "-D", str(args.duration), "--warm-up-time", str(args.warmup),
               "-c", str(args.connections), "-m", str(args.streams), "-d", body_path,
               "-H", "content-type: application/grpc", "-H", "te: trailers",
               "-H", f"authorization: Bearer {api_key}", f"http://{address}{request.method}"]
    ran = subprocess.run(command, capture_output=True, text=True)
    output = ran.stdout
    if ran.returncode:
        raise RuntimeError(f"h2load failed ({ran.returncode}): {ran.stderr or output}")
    rate, done, data, mean = (pattern.search(output) for pattern in (_RATE, _DONE, _DATA, _MEAN))
    if not (rate and done and data and mean):
        raise RuntimeError(f"cannot read h2load's report:\n{output}")
    succeeded = int(done.group(2))
    # Every answer a full message (a refusal carries none); as_of_ms may vary in length.
    full = succeeded > 0 and int(data.group(1)) >= succeeded * (answer_size + 5) * 0.98
    return Outcome(float(rate.group(1)), _milliseconds(mean.group(1)), succeeded, full)


def _milliseconds(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before measuring")
    parser.add_argument("--catalog", type=int, default=1000, help="SKUs of the merchant")
    parser.add_argument("--skus", type=int, default=100, help="SKUs per GetStockLevels")
    parser.add_argument("--connections", type=int, default=4, help="h2load connections")
    parser.add_argument("--streams", type=int, default=32,
                        help="h2load streams in flight per connection")
    parser.add_argument("--target", help="host:port of a running engine (else a local one)")
    parser.add_argument("--operator-key", help="with --target: its operator key")
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--stock-shards", type=int, default=2)
    parser.add_argument("--order-shards", type=int, default=2)
    parser.add_argument("--engine-config", action="append", default=[],
                        metavar="FIELD=VALUE", help="engine config override (repeatable)")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    if args.target and not args.operator_key:
        parser.error("--target needs --operator-key")
    args.engine_postgres_dsn = None
    console = Console()
    run_id = uuid.uuid4().hex[:8]
    skus = [SkuSpec(f"sku-{i:06d}", 1_000_000, 0, 500 + i) for i in range(args.catalog)]
    rows: list[tuple[Request, Outcome, Outcome]] = []
    with tempfile.TemporaryDirectory() as folder:
        with targets_setup.engine(args, console) as (address, operator_key, _, _):
            info = asyncio.run(engine_setup.prepare(address, operator_key, run_id, skus))
            requests = _requests([sku.sku_id for sku in skus], args.skus)
            answers, bodies, engine_runs = [], [], []
            for i, request in enumerate(requests):
                answers.append(asyncio.run(_answer(address, info["api_key"], request)))
                bodies.append(os.path.join(folder, f"request-{i}"))
                with open(bodies[-1], "wb") as file:
                    file.write(_frame(request.body))
            for request, body, answer in zip(requests, bodies, answers, strict=True):
                console.print(f"engine: {request.name} …")
                engine_runs.append(_h2load(address, info["api_key"], request, body,
                                           len(answer), args))
        answer_files = []
        for i, (request, answer) in enumerate(zip(requests, answers, strict=True)):
            path = os.path.join(folder, f"answer-{i}")
            with open(path, "wb") as file:
                file.write(answer)
            answer_files.append(f"{request.method}={path}")
        with targets_setup.echo_server(tuple(answer_files)) as echo_address:
            for request, body, answer, engine_run in zip(requests, bodies, answers,
                                                         engine_runs, strict=True):
                console.print(f"bare grpc.aio: {request.name} …")
                echo_run = _h2load(echo_address, "echo", request, body, len(answer), args)
                rows.append((request, engine_run, echo_run))
    table = Table(title=f"snapshot reads, h2load -c {args.connections} -m {args.streams},"
                  f" {args.duration:g} s ({time.strftime('%H:%M UTC', time.gmtime())})")
    for column in ("request", "engine req/s", "engine levels/s", "engine mean ms",
                   "bare grpc.aio req/s", "bare mean ms", "engine ×"):
        table.add_column(column, justify="left" if column == "request" else "right")
    failed = False
    for request, engine_run, echo_run in rows:
        failed |= not (engine_run.full_answers and echo_run.full_answers)
        table.add_row(request.name, f"{engine_run.requests_per_s:,.0f}",
                      f"{engine_run.requests_per_s * request.levels:,.0f}",
                      f"{engine_run.mean_ms:.1f}", f"{echo_run.requests_per_s:,.0f}",
                      f"{echo_run.mean_ms:.1f}",
                      f"{engine_run.requests_per_s / echo_run.requests_per_s:.2f}")
    console.print(table)
    if failed:
        console.print("[red]some answers were not full messages (refused calls): see the"
                      " gateway's log[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
