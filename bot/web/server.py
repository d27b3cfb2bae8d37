"""The local web page: one form, live progress over server-sent events, and a JSON API.

It uses the same job engine as the bots. It binds to localhost by default, sends
no CORS headers, refuses cross-origin writes, answers every /api and /audio
failure with a JSON error (never an HTML traceback), and can require a token.
A job (its status, preview and audio) is visible only to the browser that made it
(its id cookie; API clients without one: their address); to others it is unknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.web.api import JOBS, PLATFORM, SERVICES, STOPPING, USER_ID, add_api_routes
from bot.web.jobs import (
    JobRegistry,
    WebError,
    error_body,
    error_response,
    json_response,
)
from bot.web.texts import STATIC_DIR, render_page, request_language, web_message
from core.errors import ImageRejected, UserFacingError
from core.jobs.events import JobHandle
from core.services import Services

logger = logging.getLogger(__name__)

STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css",
                "favicon.svg": "image/svg+xml"}
UID_COOKIE = "sonify_uid"
UID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
TOKEN_COOKIE = "sonify_token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self'; media-src 'self'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HTTP_CODES = {401: "unauthorized", 403: "cross_origin", 404: "not_found",
              405: "method_not_allowed"}
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_json_path(path: str) -> bool:
    return path.startswith(("/api/", "/audio/")) or path == "/api"


def _token_cookie_value(token: str) -> str:
    """What the page's cookie holds: derived from the token, so the cookie is not the token."""
    return hmac.new(token.encode(), b"sonify-web-cookie", hashlib.sha256).hexdigest()


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure on /api and /audio into a JSON error; never show a traceback."""
    json_path = _is_json_path(request.path)
    lang = request_language(request)
    try:
        return await handler(request)
    except UserFacingError as error:
        if json_path:
            return error_response(error, lang)
        return web.Response(status=400, text=web_message("bad_request", lang))
    except WebError as error:
        if json_path:
            return json_response(error_body(error.code, lang), status=error.status,
                                 headers=error.headers)
        return web.Response(status=error.status, text=web_message(error.code, lang),
                            headers=error.headers)
    except web.HTTPException as exc:
        # aiohttp's own refusals: unknown route, wrong method, body over client_max_size.
        if not json_path or exc.status < 400:
            raise
        if exc.status == 413:
            limit = request.app[SERVICES].config.web.max_upload_bytes
            return error_response(ImageRejected("upload too large", code="too_large",
                                                max_bytes=limit), lang)
        code = HTTP_CODES.get(exc.status, "bad_request")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_response(error_body(code, lang), status=exc.status, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        logger.exception("web request %s %s failed", request.method, request.path)
        if json_path:
            return json_response(error_body("failed", lang), status=500)
        return web.Response(status=500, text=web_message("failed", lang))


def guard_middleware(config_host: str, token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Host check (DNS rebinding), same-origin writes, the optional token, and the user id."""
    loopback_only = _is_loopback(config_host)
    cookie_value = _token_cookie_value(token) if token else ""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.url.host or "").lower()
        if loopback_only and not _is_loopback(host):
            raise WebError(403, "bad_host")
        if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_origin(request):
            raise WebError(403, "cross_origin")
        set_cookie = False
        if token:
            given = request.query.get("token")
            if request.path == "/" and given is not None:
                if not hmac.compare_digest(given.encode(), token.encode()):
                    raise WebError(401, "unauthorized", UNAUTHORIZED)
                set_cookie = True
            elif not _authorized(request, token, cookie_value):
                raise WebError(401, "unauthorized", UNAUTHORIZED)
        request[USER_ID] = _user_id(request)
        if set_cookie:
            # Drop the token from the address bar; the cookie carries the access from now on.
            response = web.HTTPSeeOther("/")
            response.set_cookie(TOKEN_COOKIE, cookie_value, httponly=True, samesite="Strict",
                                secure=request.secure, path="/")
            raise response
        return await handler(request)

    return guard


def _cross_origin(request: web.Request) -> bool:
    """A write whose Origin is another site (scheme aside: a TLS proxy may sit in front)."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's cross-site request (browsers send Origin on POST)
    netloc = origin.split("://", 1)[-1].lower()
    return netloc != request.host.lower()


def _authorized(request: web.Request, token: str, cookie_value: str) -> bool:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return hmac.compare_digest(auth[7:].strip().encode(), token.encode())
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), cookie_value.encode())


def _user_id(request: web.Request) -> str:
    """A per-browser id for per-user limits: the page's cookie, else the client address."""
    uid = request.cookies.get(UID_COOKIE, "")
    if UID_PATTERN.fullmatch(uid):
        return f"browser:{uid}"
    return f"ip:{request.remote or 'unknown'}"


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if _is_json_path(request.path):
        response.headers.setdefault("Cache-Control", "no-store")
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the page, in the browser's language; gives a new browser its id cookie."""
    page = render_page(request_language(request), request.app[SERVICES].config.generation)
    response = web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Vary": "Accept-Language"})
    if not request[USER_ID].startswith("browser:"):
        response.set_cookie(UID_COOKIE, secrets.token_urlsafe(16), httponly=True,
                            samesite="Strict", secure=request.secure, path="/",
                            max_age=365 * 24 * 3600)
    return response


async def static_file(request: web.Request) -> web.StreamResponse:
    """GET /static/{name}: one of our own assets (a fixed list, so no path tricks)."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name]})


async def _on_shutdown(app: web.Application) -> None:
    app[STOPPING].set()  # open event streams end, so shutdown does not wait on them


def create_app(services: Services) -> web.Application:
    """The aiohttp application of the web page and its API (tests use it directly)."""
    settings = services.config.web
    token = settings.token
    app = web.Application(
        middlewares=[errors_middleware, guard_middleware(settings.host, token)],
        client_max_size=settings.max_upload_bytes + 64 * 1024,  # multipart framing on top
    )
    app[SERVICES] = services
    app[JOBS] = JobRegistry()
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    add_api_routes(app)
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_on_shutdown)
    return app


class _AccessLogger(AbstractAccessLogger):
    """One line per request, without the query string (it may carry ?token=)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("web %s %s %s %.3fs", request.method, request.path, response.status,
                         time)


class WebAdapter:
    """Serves the page on `[web] host`:`port` for `sonify run`."""

    name = PLATFORM

    def __init__(self, services: Services) -> None:
        self.services = services
        self.app = create_app(services)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Bind, print the address, and take back web jobs the engine recovers."""
        settings = self.services.config.web
        self.services.engine.on_recovered(PLATFORM, self._recovered)
        self._runner = web.AppRunner(self.app, access_log_class=_AccessLogger,
                                     access_log=logging.getLogger("sonify.web.access"),
                                     shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port)
        await site.start()
        port = settings.port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]
        shown = settings.host
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"  # reachable from this machine; other hosts use its address
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{port}/"
        note = " (token required: open it once with ?token=YOUR_TOKEN)" if settings.token else ""
        if settings.host in ("0.0.0.0", "::", ""):
            note += " (listening on all interfaces)"
        if not settings.token and not _is_loopback(settings.host):
            logger.warning("the web page listens on %s without a token: anyone who can reach this "
                        "machine can use it (set [web] token or SONIFY_WEB_TOKEN)", settings.host)
        line = f"Sonify web page: {self.url}{note}"
        logger.info(line)
        print(line, file=sys.stdout, flush=True)

    async def _recovered(self, handle: JobHandle) -> None:
        # The page polls by id; a job re-run after a restart stays reachable under its id.
        self.app[JOBS].add(handle)

    async def stop(self) -> None:
        """Close the listener; open event streams end (see `_on_shutdown`)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
