"""Loopback servers, fake DNS and a connection recorder for the image-fetch tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from core.intake.fetch import SafeResolver
from tests.core.intake import hostile

PNG = hostile.encode(hostile.photo((8, 8)), "PNG")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# Some containers run without IPv6; tests that must reach ::1 skip there.
IPV6_LOOPBACK = _has_ipv6_loopback()

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """A loopback TCP server whose every connection runs `script`; counts what happens."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.bytes_sent = 0
        self.disconnected = asyncio.Event()
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def on_ipv6(self) -> bool:
        """Whether this server also listens on ::1."""
        return len(self._servers) > 1

    async def start(self, *, ipv6: bool = False) -> RawServer:
        first = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._servers.append(first)
        self.port = first.sockets[0].getsockname()[1]
        if ipv6 and IPV6_LOOPBACK:  # the same port on ::1, so [::1] and friends reach us
            with contextlib.suppress(OSError):  # that port may be taken on ::1; tests then skip
                self._servers.append(await asyncio.start_server(self._serve, "::1", self.port))
        return self

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.bytes_sent += len(data)
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.script(reader, writer, self)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up: that is what several tests wait for
        finally:
            self.disconnected.set()
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        # Hang up on every client; each script then ends on its next read or write.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        for server in self._servers:
            server.close()
            await server.wait_closed()


async def wait_for_hangup(reader: asyncio.StreamReader) -> None:
    """Block until the client closes its side."""
    while await reader.read(65536):
        pass


def head(status: str = "200 OK", **headers: str | int) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/octet-stream",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def serve_png(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    server: RawServer) -> None:
    await server.send(writer, head(Content_Length=len(PNG), Connection="close") + PNG)


class WebServer:
    """An aiohttp app on loopback: images, non-images, statuses and redirects."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        app = web.Application()
        app.router.add_get("/png", self._bytes(PNG, "text/plain"))  # the bytes decide, not this
        app.router.add_get("/html", self._bytes(hostile.HTML, "image/jpeg"))
        app.router.add_get("/svg", self._bytes(hostile.SVG, "image/svg+xml"))
        app.router.add_get("/pdf", self._bytes(hostile.PDF, "application/pdf"))
        app.router.add_get("/empty", self._bytes(b"", "image/png"))
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/to", self._redirect)
        app.router.add_get("/chain/{n}", self._chain)
        app.router.add_get("/no-location", self._no_location)
        app.router.add_get("/{tail:.*}", self._status)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> WebServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.paths.append(request.path)
        self.headers.append(dict(request.headers))

    def _bytes(self, body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[Any]]:
        async def handler(request: web.Request) -> web.Response:
            self._seen(request)
            return web.Response(body=body, content_type=content_type)
        return handler

    async def _status(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=int(request.match_info.get("code", 404)), text="nope")

    async def _redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=int(request.query.get("status", 302)),
                            headers={"Location": request.query["target"]})

    async def _chain(self, request: web.Request) -> web.Response:
        self._seen(request)
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(body=PNG, content_type="image/png")
        return web.Response(status=301, headers={"Location": f"/chain/{left - 1}"})

    async def _no_location(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=302)


class FakeDNS(AbstractResolver):
    """A resolver with a fixed table (name → addresses); other names fail like NXDOMAIN."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for address in self.table[host]]

    async def close(self) -> None:
        return None


class HangingDNS(FakeDNS):
    """A resolver that never answers (a black-holed DNS server)."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class PretendPublic(SafeResolver):
    """The production resolver, except that `public` names count as public (they are loopback)."""

    def __init__(self, table: dict[str, list[str]], public: set[str]) -> None:
        self._dns = FakeDNS(table)
        super().__init__(allow_private=False, base=self._dns)
        self.public = public

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host in self.public:
            return await self._dns.resolve(host, port, family)
        return await super().resolve(host, port, family)


DNS_TABLE = {
    "public.test": ["127.0.0.1"],
    "internal.test": ["127.0.0.1"],
    "internal6.test": ["::1"],
    "localhost": ["127.0.0.1"],
    "localhost.": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "lan.test": ["192.168.0.10"],
    "mixed.test": ["93.184.216.34", "10.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
}

_recording: list[list[Any]] = []
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _recording:
        _recording[-1].append(args[1])


@contextlib.contextmanager
def recorded_connects() -> Iterator[list[Any]]:
    """Every socket.connect() the process makes inside the block (CPython audit events)."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # hooks cannot be removed; it only records while a block runs
        _hook_installed = True
    seen: list[Any] = []
    _recording.append(seen)
    try:
        yield seen
    finally:
        _recording.remove(seen)
