"""What every part of the web app shares: the application's keys, and whose a job is.

A job (its status, preview, audio, retakes and share link) belongs to the browser that made
it; to anyone else it looks exactly like a job that does not exist (404 unknown_job).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bot.web.connections import ConnectionGuard
from bot.web.identity import AddressLimits, Identities
from bot.web.jobs import JobRegistry, WebError, WebJob
from bot.web.proxies import Client, TrustedProxies
from core.records import Platform, RequestRecord
from core.services import Services

PLATFORM = Platform.WEB
SERVICES = web.AppKey("services", Services)
JOBS = web.AppKey("jobs", JobRegistry)
STOPPING = web.AppKey("stopping", asyncio.Event)
IDENTITIES = web.AppKey("identities", Identities)
ADDRESS_LIMITS = web.AppKey("address_limits", AddressLimits)
GUARD = web.AppKey("connection_guard", ConnectionGuard)
PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
USER_ID = web.RequestKey("user_id", str)  # set by the guard middleware
CLIENT_INFO = web.RequestKey("client_info", Client)  # who asks (set by `client_middleware`)
CLIENT = web.RequestKey("client", str)  # its address key (`address_key`), ditto
DROPPED = web.RequestKey("dropped", bool)  # the client went away mid-request (`ClientGone`)


def live_job(request: web.Request, job_id: str) -> WebJob | None:
    """A job this process holds, if this browser (or API client) submitted it."""
    job = request.app[JOBS].get(job_id)
    if job is None or job.handle.request.user_id != request[USER_ID]:
        return None
    return job


async def owned_record(request: web.Request, job_id: str) -> RequestRecord | None:
    """The request-log row of a web job this browser submitted (after a restart), or None."""
    record = await request.app[SERVICES].engine.get_request(job_id)
    if record is None or record.platform != PLATFORM or record.user_id != request[USER_ID]:
        return None  # someone else's job looks exactly like an unknown one
    return record


def unknown_job() -> WebError:
    return WebError(404, "unknown_job")
