"""Baseline: a bare grpc.aio server that answers every unary call with the request's bytes.

It does no parsing and no work: its throughput is the ceiling of Python gRPC on this
machine for the client the bench uses. Run in its own process (``python -m
bench.echo_server``); it prints ``PORT <n>`` once serving and stops on SIGTERM or when
its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import uvloop


def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


class _EchoEverything(grpc.GenericRpcHandler):
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(_echo)


def _stop_at_end_of_input(stop: asyncio.Event) -> None:
    if not sys.stdin.read(1):
        stop.set()


async def serve(port: int, host: str) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers((_EchoEverything(),))
    bound_port = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"PORT {bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # The parent holds our stdin: when it dies, stdin closes and we stop too.
    loop.add_reader(sys.stdin.fileno(), _stop_at_end_of_input, stop)
    await stop.wait()
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
