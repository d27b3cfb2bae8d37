"""The local web page: one form, live progress over server-sent events, and a JSON API.

It uses the same job engine as the bots. It binds to localhost by default, sends
no CORS headers, refuses cross-origin writes, answers every /api and /audio
failure with a JSON error (never an HTML traceback), and can require a token.
A job (its status, preview and audio) is visible only to the browser that made it
(its signed id cookie; API clients without one: their address); to others it is unknown.
Who a client is, and the per-address limits: `bot.web.identity`; its address behind a
reverse proxy: `bot.web.proxies`; the connection limits (header deadline, idle timeout,
connections per address): `bot.web.connections`; the access log: `bot.web.access`; the
operator's routes (/metrics, /livez, /readyz, under the same rules): `bot.ops.routes`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.ops.routes import OPS_PATHS, add_ops_routes
from bot.web.access import AccessLogger, logged_path
from bot.web.api import add_api_routes
from bot.web.bodies import ClientGone
from bot.web.connections import (
    REFUSAL_RETRY_S,
    ConnectionGuard,
    GuardedSite,
    JsonErrorHandler,
    quiet_server_log,
)
from bot.web.identity import (
    KEY_BYTES,
    KEY_NAME,
    AddressLimits,
    Identities,
    same_secret,
)
from bot.web.jobs import (
    JobRegistry,
    WebError,
    error_body,
    error_response,
    json_response,
    retry_after,
)
from bot.web.proxies import TrustedProxies
from bot.web.share import is_share_path
from bot.web.state import (
    ADDRESS_LIMITS,
    CLIENT,
    CLIENT_INFO,
    DROPPED,
    GUARD,
    IDENTITIES,
    JOBS,
    PLATFORM,
    PROXIES,
    SERVICES,
    STOPPING,
    USER_ID,
)
from bot.web.texts import (
    STATIC_DIR,
    STATIC_FILES,
    render_page,
    request_language,
    web_message,
)
from core.errors import (
    DatabaseDamaged,
    ImageRejected,
    StorageUnavailable,
    UserFacingError,
    try_again_soon,
)
from core.i18n import describe_error
from core.jobs.events import JobHandle
from core.secrecy import web_cookie_value
from core.services import Services
from core.user_text import WORDS_MAX_CHARS

logger = logging.getLogger(__name__)

UID_COOKIE = "sonify_uid"
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
    return path.startswith(("/api/", "/audio/")) or path in ("/api", "/audio", *OPS_PATHS)


def _token_cookie_value(token: str) -> str:
    """What the page's token cookie holds: derived from the token, so the cookie is not the
    token. One function, shared with the log masking (`core.secrecy`), which masks it too."""
    return web_cookie_value(token)


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
    guard = request.app[GUARD]
    guard.request_started(request.transport)  # the headers are in: no header deadline now
    try:
        return await _answer(request, handler)
    finally:
        guard.request_finished(request.transport)


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who the client is: the peer, or behind a trusted proxy the client it names. Its
    requests through proxies count against `max_connections_per_address` while open (the
    proxy's connections carry many clients, so the connection cap cannot tell them apart)."""
    client = request.app[PROXIES].resolve(request.remote, request.headers, request.secure)
    request[CLIENT_INFO] = client
    request[CLIENT] = client.key
    if not client.proxied:
        return await handler(request)
    guard = request.app[GUARD]
    if not guard.enter(client.key):
        raise WebError(429, "too_many_connections", {"Retry-After": str(REFUSAL_RETRY_S)})
    try:
        return await handler(request)
    finally:
        guard.leave(client.key)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    json_path = _is_json_path(request.path)
    lang = request_language(request)
    try:
        return await handler(request)
    except ClientGone:
        # Nobody reads this answer; the access log says in one line what happened.
        request[DROPPED] = True
        return json_response(error_body("bad_request", lang), status=400)
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
    except StorageUnavailable as exc:
        # The request log is away (said once in the log when it goes): nothing was taken,
        # and the client is asked to come back in a moment — a 503, never a 500.
        if isinstance(exc, DatabaseDamaged):
            logger.error("web request %s %s: %s", request.method, logged_path(request), exc)
        later = try_again_soon()
        if json_path:
            return error_response(later, lang)
        return web.Response(status=503, text=describe_error(later, lang),
                            headers={"Retry-After": str(retry_after(later))})
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        # The route, not the path: a shared page's path holds its link's secret token.
        logger.exception("web request %s %s failed", request.method, logged_path(request))
        if json_path:
            return json_response(error_body("failed", lang), status=500)
        return web.Response(status=500, text=web_message("failed", lang))


def guard_middleware(config_host: str, token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Host check (DNS rebinding), same-origin writes, the optional token, and the user id."""
    loopback_only = _is_loopback(config_host)
    cookie_value = _token_cookie_value(token) if token else ""  # as secret as the token

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.url.host or "").lower()
        # Through a trusted proxy the Host is the public name the proxy serves.
        if loopback_only and not _is_loopback(host) and not request[CLIENT_INFO].proxied:
            raise WebError(403, "bad_host")
        if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_origin(request):
            raise WebError(403, "cross_origin")
        set_cookie = False
        # A shared page and its assets open with the link alone: the link is the secret.
        if token and not (request.method in ("GET", "HEAD") and is_share_path(request.path)):
            given = request.query.get("token")
            if request.path == "/" and given is not None:
                if not same_secret(given, token):
                    raise WebError(401, "unauthorized", UNAUTHORIZED)
                set_cookie = True
            elif not _authorized(request, token, cookie_value):
                raise WebError(401, "unauthorized", UNAUTHORIZED)
        request[USER_ID] = _user_id(request)
        if set_cookie:
            # Drop the token from the address bar; the cookie carries the access from now on.
            response = web.HTTPSeeOther("/")
            response.set_cookie(TOKEN_COOKIE, cookie_value, httponly=True, samesite="Strict",
                                secure=request[CLIENT_INFO].secure, path="/")
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
        return same_secret(auth[7:].strip(), token)
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return bool(cookie) and same_secret(cookie, cookie_value)


def _user_id(request: web.Request) -> str:
    """Who asks, for per-user limits and private jobs: the browser's signed id (as a keyed
    hash: the request log never holds the cookie), else the client's address — an IPv6 one's
    /64, as the per-address limits count it: the addresses of one host are one client, and
    its refusals fold into one row (core/storage/request_log.py, `record_refusal`)."""
    cookie = request.cookies.get(UID_COOKIE, "")
    browser = request.app[IDENTITIES].user_id(cookie) if cookie else None
    return browser or f"ip:{request[CLIENT]}"


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if _is_json_path(request.path):
        response.headers.setdefault("Cache-Control", "no-store")
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the page, in the browser's language; gives a new browser its id cookie (while
    its address has not had `[web] new_browsers_per_hour` of them this hour)."""
    page = render_page(request_language(request), request.app[SERVICES].config.generation,
                       WORDS_MAX_CHARS)
    response = web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Vary": "Accept-Language"})
    if not request[USER_ID].startswith("browser:"):
        cookie = request.app[IDENTITIES].issue(request[CLIENT])
        if cookie is not None:  # else it is known by its address, like an API client
            response.set_cookie(UID_COOKIE, cookie, httponly=True, samesite="Strict",
                                secure=request[CLIENT_INFO].secure, path="/",
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
        middlewares=[errors_middleware, client_middleware,
                     guard_middleware(settings.host, token)],
        client_max_size=settings.max_upload_bytes + 64 * 1024,  # multipart framing on top
    )
    app[SERVICES] = services
    app[JOBS] = JobRegistry()
    app[STOPPING] = asyncio.Event()
    app[ADDRESS_LIMITS] = AddressLimits(settings.per_address_concurrent,
                                        settings.per_address_per_hour)
    # Used by `WebAdapter`'s site; behind a test server it sees no connections and does nothing.
    app[PROXIES] = proxies = TrustedProxies(settings.trusted_proxies, settings.proxy_header)
    app[GUARD] = ConnectionGuard(header_timeout_s=settings.header_timeout_s,
                                 max_per_address=settings.max_connections_per_address,
                                 trusted=proxies.trusts)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    add_api_routes(app)
    # /metrics here (behind the token) unless `[metrics] listen` serves it on its own.
    add_ops_routes(app, services.ops, with_metrics=not services.config.metrics.listen)
    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(_load_identities)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _load_identities(app: web.Application) -> None:
    services = app[SERVICES]
    key = await services.keys.service_key(KEY_NAME, KEY_BYTES)
    app[IDENTITIES] = Identities(key, services.config.web.new_browsers_per_hour)


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
        # What each connection's protocol is made with (the runner's server makes none: the
        # site below builds them, behind the connection guard).
        handler_args: dict[str, Any] = {
            "access_log_class": AccessLogger,
            "access_log": logging.getLogger("sonify.web.access"),
            "logger": quiet_server_log(),
            "keepalive_timeout": settings.keepalive_timeout_s,
        }
        self._runner = web.AppRunner(self.app, shutdown_timeout=5.0, **handler_args)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        site = GuardedSite(self._runner, settings.host, settings.port, self.app[GUARD],
                           lambda: JsonErrorHandler(server, loop=loop, **handler_args))
        await site.start()
        port = site.bound_port
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
        # Printed, not logged: on a terminal the log (stderr) would show it a second time.
        print(f"Sonify web page: {self.url}{note}", file=sys.stdout, flush=True)

    async def ready(self) -> str | None:
        """For /readyz: None while the page is served."""
        return None if self._runner is not None and self.url else "not serving"

    async def _recovered(self, handle: JobHandle) -> None:
        # The page polls by id; a job re-run after a restart stays reachable under its id.
        self.app[JOBS].add(handle)

    async def stop(self) -> None:
        """Close the listener; open event streams end (see `_on_shutdown`)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
