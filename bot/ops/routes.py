"""GET /metrics, /livez and /readyz on an aiohttp app.

- `/livez`: 200 ``{"status": "ok"}`` while the process serves at all (a restart cure).
- `/readyz`: 200 when every part this process depends on works, else 503 naming the
  failing parts: ``{"status": "not ready", "failing": ["database"], "checks": {...}}``.
- `/metrics`: the process's Prometheus series (text format, or OpenMetrics on request).
"""

from __future__ import annotations

import json

from aiohttp import web

from core.ops.wiring import Operations

LIVE_PATH = "/livez"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
OPS_PATHS = (LIVE_PATH, READY_PATH, METRICS_PATH)
OPERATIONS = web.AppKey("operations", Operations)
NO_STORE = {"Cache-Control": "no-store"}


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json",
                        charset="utf-8", headers=NO_STORE)


async def livez(request: web.Request) -> web.Response:
    """GET /livez: the process answers."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when every check passes, else 503 with the failing parts named."""
    readiness = await request.app[OPERATIONS].health.readiness()
    return _json(readiness.body(), 200 if readiness.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: this process's series, as the scraper's Accept header asks."""
    body, content_type = await request.app[OPERATIONS].metrics.exposition(
        request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type, **NO_STORE})


def add_ops_routes(app: web.Application, ops: Operations, *, with_metrics: bool = True) -> None:
    """The three routes (`with_metrics` False: the first two, /metrics being elsewhere)."""
    app[OPERATIONS] = ops
    app.router.add_get(LIVE_PATH, livez)
    app.router.add_get(READY_PATH, readyz)
    if with_metrics:
        app.router.add_get(METRICS_PATH, metrics)
