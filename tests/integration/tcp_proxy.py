"""A TCP proxy that tests can cut and restore: a real network outage between the engine
and Postgres, without stopping the machine's Postgres."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import parse_qs, urlsplit

from flashtx.app import free_port


class CuttableProxy:
    def __init__(self, target: str | tuple[str, int]) -> None:
        """target: (host, port) or the path of a unix socket."""
        self._target = target
        self.port = free_port()  # outside the ephemeral range: free again at a restore
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.restore()

    def cut(self) -> None:
        """Drops every connection and refuses new ones."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result()

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self._target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self._target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def proxied(dsn: str) -> tuple[CuttableProxy, str]:
    """A proxy in front of the server of `dsn`, and the DSN that goes through it."""
    parts = urlsplit(dsn)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/"):
        proxy = CuttableProxy(f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
    else:
        proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    return proxied_dsn(dsn, proxy)


def proxied_dsn(dsn: str, proxy: CuttableProxy) -> tuple[CuttableProxy, str]:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return proxy, f"postgresql://{user}@127.0.0.1:{proxy.port}{parts.path}"
