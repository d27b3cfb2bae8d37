"""The web server's connections: a header deadline, a cap per client address, quiet errors.

aiohttp closes a connection idle for `keepalive_timeout` (from its start, and after each
response), but it has no deadline for a request's headers once they have begun to arrive,
and no hook that runs for a connection before its first request — where a cap on
connections per address has to act. So each connection's protocol is wrapped
(`ConnectionGuard.protocol`): the wrapper counts connections per address and refuses the
ones over the cap with a JSON 429, starts a header deadline at a request's first byte, and
forwards everything else to aiohttp's own protocol untouched. The app's outermost middleware
tells the guard when a request's headers are complete (`request_started`) and when it is
answered (`request_finished`).

aiohttp answers a request it cannot parse (broken framing, a header line over 8 KB, a
`Content-Encoding` it cannot decode) before any route or middleware sees it, in plain text;
`JsonErrorHandler` gives those the API's JSON error shape. Its server log (`SERVER_LOGGER`)
reports them with the parser's message, which quotes the raw request line or header (a
`?token=` in the line, a cookie): `RequestLineFilter` turns those records into one line
without them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from cachetools import TTLCache

from bot.web.identity import address_key
from bot.web.jobs import error_body, json_response

logger = logging.getLogger(__name__)
# aiohttp's server logger for our runner (passed as `logger=`), with `RequestLineFilter`.
SERVER_LOGGER = "sonify.web.server"
# A refused connection gets a moment to read the 429 before the socket closes.
REFUSAL_LINGER_S = 1.0
REFUSAL_RETRY_S = 5
# Refusals of one address are logged at most once per this many seconds.
REFUSAL_LOG_EVERY_S = 60.0


def _refusal() -> bytes:
    """The whole HTTP answer to a connection over the cap (its request is not read)."""
    body = json.dumps(error_body("too_many_connections", "en")).encode()
    head = ("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {REFUSAL_RETRY_S}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's checks."""

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], asyncio.Protocol]
                 ) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        peer_address = peer[0] if isinstance(peer, tuple) else None
        self._address = address_key(peer_address)
        # A trusted proxy's connections carry many clients: their requests are counted per
        # client instead, once the headers name it (`enter`).
        capped = not (peer_address and self._guard.trusted(peer_address))
        if not self._guard.admit(self._address, transport, self, capped=capped):
            transport.write(_refusal())
            if transport.can_write_eof():
                transport.write_eof()
            # Closing at once could reset the client's request before it reads the answer.
            self._deadline = asyncio.get_running_loop().call_later(
                REFUSAL_LINGER_S, transport.close)
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: whatever it sends is dropped
        if not self._in_request and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(
                self._guard.header_timeout_s, self._headers_late)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._inner is None:
            return
        self._guard.release(self._address, self._transport)
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        """The headers of a request are complete: no deadline until it is answered."""
        self._in_request = True
        self._cancel_deadline()

    def request_finished(self) -> None:
        self._in_request = False

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self._in_request or self._transport is None or self._transport.is_closing():
            return
        logger.info("web: closed a connection from %s: request headers not complete within "
                    "%g s", self._address, self._guard.header_timeout_s)
        self._transport.close()


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's protocol, answering requests it could not parse in the API's JSON shape."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; refuses if already sent
        # The parser's message quotes the raw request: the client gets a fixed text instead.
        code = "unreadable_request" if status < 500 else "failed"
        response = json_response(error_body(code, "en"), status=status)
        response.force_close()
        return response


class ConnectionGuard:
    """Connections per client address, each behind a header deadline; behind a trusted
    proxy, open requests per client address instead (`enter`, `leave`)."""

    def __init__(self, *, header_timeout_s: float, max_per_address: int,
                 trusted: Callable[[str], bool] = lambda _address: False) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_per_address = max_per_address  # 0: no cap
        self.trusted = trusted  # the peer is a trusted proxy (`[web] trusted_proxies`)
        self._open: dict[str, int] = {}
        self._requests: dict[str, int] = {}  # open requests through proxies, per client
        self._protocols: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        # Addresses whose refusal was logged in the last minute (bounded, expiring: a flood
        # from many addresses neither grows it nor makes it scan).
        self._logged: TTLCache[str, bool] = TTLCache(1024, REFUSAL_LOG_EVERY_S,
                                                     timer=time.monotonic)

    def protocol(self, make_inner: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """The protocol of a new connection: `make_inner()` (aiohttp's), behind the guard."""
        return _GuardedProtocol(self, make_inner)

    def open_connections(self, address: str) -> int:
        return self._open.get(address, 0)

    def admit(self, address: str, transport: asyncio.BaseTransport,
              protocol: _GuardedProtocol, *, capped: bool = True) -> bool:
        """Count a new connection from `address`; False when it is over the cap."""
        count = self._open.get(address, 0)
        if capped and self.max_per_address and count >= self.max_per_address:
            self._log_refusal(address)
            return False
        self._open[address] = count + 1
        self._protocols[transport] = protocol
        return True

    def release(self, address: str, transport: asyncio.BaseTransport | None) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
        if transport is not None:
            self._protocols.pop(transport, None)

    def enter(self, client: str) -> bool:
        """A request through a trusted proxy from `client` (an address key) is open; False
        when the client has `max_per_address` open already (the request is refused)."""
        count = self._requests.get(client, 0)
        if self.max_per_address and count >= self.max_per_address:
            self._log_refusal(client)
            return False
        self._requests[client] = count + 1
        return True

    def leave(self, client: str) -> None:
        left = self._requests.get(client, 0) - 1
        if left > 0:
            self._requests[client] = left
        else:
            self._requests.pop(client, None)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and (protocol := self._protocols.get(transport)) is not None:
            protocol.request_started()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and (protocol := self._protocols.get(transport)) is not None:
            protocol.request_finished()

    def _log_refusal(self, address: str) -> None:
        if address in self._logged:
            return
        self._logged[address] = True
        logger.info("web: refusing connections from %s: %d open (max_connections_per_address)",
                    address, self._open.get(address, 0) or self._requests.get(address, 0))


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a `ConnectionGuard`.

    Like aiohttp's TCPSite, except for the protocol factory: aiohttp builds the listening
    server from its own factory, with no way to wrap it, so this site calls
    `loop.create_server` itself (what TCPSite.start does) with `make_handler` — a
    `JsonErrorHandler` of the runner's server — behind the guard.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 make_handler: Callable[[], asyncio.Protocol]) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard
        self._make_handler = make_handler
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        guard, make_handler = self._guard, self._make_handler
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: guard.protocol(make_handler),
                                                self._host or None, self._port,
                                                reuse_address=True)
        sockets = self._server.sockets
        if sockets:
            self.bound_port = sockets[0].getsockname()[1]


class RequestLineFilter(logging.Filter):
    """aiohttp's reports of requests it could not parse, without the request's bytes.

    The parser's message quotes the raw line or header it stopped at (a `?token=…`, a cookie,
    cut at any length), so no masking of known spellings can be sure to catch it: the
    record keeps only the client's address and the kind of error, at INFO — a malformed
    request is the client's mistake, not the server's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError | ConnectionError):
            remote: Any = record.args[0] if isinstance(record.args, tuple) and record.args \
                else "a client"
            record.msg = "web: malformed request from %s (%s, %s)"
            record.args = (remote, type(exc).__name__, getattr(exc, "code", "-"))
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            if record.levelno > logging.INFO:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_server_log() -> logging.Logger:
    """The logger to give aiohttp's server (`logger=`): reports without request bytes."""
    server_log = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, RequestLineFilter) for f in server_log.filters):
        server_log.addFilter(RequestLineFilter())
    return server_log
