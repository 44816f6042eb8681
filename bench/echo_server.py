"""Baseline: a bare grpc.aio server that answers every unary call with the request's bytes
(or, for a method given with ``--answer METHOD=FILE``, with that file's bytes).

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
from collections.abc import Callable

import grpc
import uvloop


def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _answering(answer: bytes) -> Callable[[bytes, grpc.aio.ServicerContext], bytes]:
    def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    return handle


class _EchoEverything(grpc.GenericRpcHandler):
    def __init__(self, answers: dict[str, bytes]) -> None:
        self._handlers = {method: grpc.unary_unary_rpc_method_handler(_answering(answer))
                          for method, answer in answers.items()}
        self._echo = grpc.unary_unary_rpc_method_handler(_echo)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self._handlers.get(handler_call_details.method, self._echo)


def _stop_at_end_of_input(stop: asyncio.Event) -> None:
    if not sys.stdin.read(1):
        stop.set()


async def serve(port: int, host: str, answers: dict[str, bytes] | None = None) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers((_EchoEverything(answers or {}),))
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
    parser.add_argument("--answer", action="append", default=[], metavar="METHOD=FILE",
                        help="answer METHOD (/package.Service/Method) with FILE's bytes")
    args = parser.parse_args(argv)
    answers = {}
    for pair in args.answer:
        method, _, path = pair.partition("=")
        with open(path, "rb") as file:
            answers[method] = file.read()
    uvloop.run(serve(args.port, args.host, answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
