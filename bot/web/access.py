"""The web server's access log: one line per request, never the raw request line.

Each line has the method, the route (with only the path parameters known to be harmless),
the status, the time and the client's address — behind a trusted proxy, the address the
proxy names (bot/web/proxies.py). The same facts are the line's fields in JSON logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.web.jobs import AUDIO_TYPES
from bot.web.share import SHARE_ASSETS
from bot.web.state import CLIENT_INFO, DROPPED
from bot.web.texts import STATIC_FILES
from core.logs import FIELDS

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{12}")  # the shape of `new_request_id`
# Path parameters that may be logged as they are: each one is a known shape or name.
_LOGGED_PARTS: dict[str, Callable[[str], bool]] = {
    "id": lambda value: _JOB_ID.fullmatch(value) is not None,
    "fmt": lambda value: value in AUDIO_TYPES,
    "name": lambda value: value in STATIC_FILES,
    "asset": lambda value: value in SHARE_ASSETS,
}


def logged_path(request: web.BaseRequest) -> str:
    """The route a request took, with only the parameters known to be harmless.

    Never the raw path or query: a client can put anything there (a `?token=`, a mistyped
    secret), and the log must not hold it in any spelling. Unrouted requests show as "-".
    """
    match_info = getattr(request, "match_info", None)
    resource = getattr(getattr(match_info, "route", None), "resource", None)
    if match_info is None or resource is None:
        return "-"
    path: str = resource.canonical
    for name, value in match_info.items():
        check = _LOGGED_PARTS.get(name)
        if check is not None and check(value):
            path = path.replace("{" + name + "}", value, 1)
    return path


def client_address(request: web.BaseRequest) -> str:
    """The client's address as resolved for this request (before that: the peer's)."""
    client = request.get(CLIENT_INFO)
    return client.address if client is not None else (request.remote or "unknown")


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, route, status, time and client address."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = client_address(request)
        # aiohttp's stand-in for a request it could not parse has no route at all.
        malformed = request.method == "UNKNOWN"
        fields = {"method": request.method, "route": "-" if malformed else logged_path(request),
                  "status": response.status, "seconds": time, "client": client}
        extra = {FIELDS: fields}
        if malformed:
            self.logger.info("web (malformed request) %s %.3fs from %s", response.status,
                             time, client, extra=extra)
        elif request.get(DROPPED):
            self.logger.info("web %s %s: the client went away before its request was read "
                             "(%.3fs, from %s)", request.method, fields["route"], time, client,
                             extra=extra)
        else:
            self.logger.info("web %s %s %s %.3fs from %s", request.method, fields["route"],
                             response.status, time, client, extra=extra)
