"""/metrics, /livez and /readyz on an address of their own.

`sonify run` serves them there when `[metrics] listen` is set (then /metrics is not on the
web page), `sonify worker` when given `--metrics-port`. No token: bind it to an address
only the operator's network reaches (a Prometheus, a container's health check).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.ops.routes import add_ops_routes
from core.ops.wiring import Operations

logger = logging.getLogger(__name__)

HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown path or method answers in JSON, like the web page's API."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        body = {"error": {"code": code, "message": "This address serves GET /metrics, "
                                                   "/livez and /readyz only."}}
        headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
        return web.Response(text=json.dumps(body), status=exc.status, headers=headers,
                            content_type="application/json", charset="utf-8")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


class OpsServer:
    """The three routes alone on `host`:`port` (port 0: the system picks one)."""

    def __init__(self, ops: Operations, host: str, port: int) -> None:
        self.ops, self.host, self.port = ops, host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(middlewares=[_json_errors])
        add_ops_routes(app, self.ops)
        app.on_response_prepare.append(_headers)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host or None, self.port).start()
        bound = self._runner.addresses[0]
        self.port = int(bound[1])
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        self.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}"
        # Printed, not logged, like the web page's address: a terminal shows it once.
        print(f"Sonify metrics and health checks: {self.url}/metrics, /livez, /readyz",
              file=sys.stdout, flush=True)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
