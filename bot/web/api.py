"""The JSON API of the web page: follow a job, fetch its audio; the routes of the rest.

New jobs (a picture, another take, the user's words): `bot.web.submit`; share links and the
shared page: `bot.web.share`; whose a job is: `bot.web.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.common.following import resumes
from bot.web.jobs import (
    MEDIA_TYPES,
    WebError,
    WebJob,
    clip_response,
    event_data,
    event_name,
    job_view,
    json_response,
    record_view,
)
from bot.web.share import add_share_routes
from bot.web.state import (
    SERVICES,
    STOPPING,
    live_job,
    owned_record,
    unknown_job,
)
from bot.web.submit import add_submit_routes
from bot.web.texts import request_language
from core.config import MAX_SEED
from core.jobs.events import Done, Failed
from core.records import RequestStatus
from core.user_text import WORDS_MAX_CHARS

logger = logging.getLogger(__name__)

SSE_PING_S = 15.0


def _job(request: web.Request) -> WebJob | None:
    """The live job named in the path, if this browser (or API client) submitted it."""
    return live_job(request, request.match_info["id"])


async def _followed(request: web.Request) -> WebJob | None:
    """A job of this browser that another web process took (the redis backend: several
    behind one address), followed live from here."""
    job_id = request.match_info["id"]
    if await owned_record(request, job_id) is None:
        return None
    handle = await request.app[SERVICES].engine.follow(job_id)
    return WebJob(handle) if handle is not None else None


async def get_job(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}: status, position, progress, caption, prompt, audio URLs, error."""
    services = request.app[SERVICES]
    job = _job(request)
    if job is not None:
        view = job_view(job, request_language(request))
    else:
        record = await owned_record(request, request.match_info["id"])
        if record is None:
            raise unknown_job()
        done = record.status == RequestStatus.DONE
        clip = await services.engine.clip_files(record) if done else None
        view = record_view(record, request_language(request), clip)
    # Whether a share link is live: the owner's page shows "Stop sharing" even where this
    # browser no longer remembers the link itself.
    view["shared"] = view["status"] == "done" and \
        await services.share_links.is_shared(view["id"])
    return json_response(view)


async def job_image(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}/image: the preview of the decoded picture."""
    job = _job(request)
    if job is None or job.preview is None:
        raise unknown_job()
    return web.Response(body=job.preview, content_type="image/jpeg")


async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events: server-sent events from the first, ending after done/failed."""
    job = _job(request) or await _followed(request)
    if job is None:
        raise unknown_job()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    stopping = request.app[STOPPING]
    lang = request_language(request)
    events = job.handle.events()
    stop_wait = asyncio.ensure_future(stopping.wait())
    next_event: asyncio.Future[Any] | None = None
    try:
        while True:
            next_event = asyncio.ensure_future(anext(events))
            done: set[asyncio.Future[Any]] = set()
            while not done:
                done, _ = await asyncio.wait({next_event, stop_wait}, timeout=SSE_PING_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    await response.write(b": ping\n\n")  # keeps proxies from closing it
            if stop_wait in done:
                break
            try:
                event = next_event.result()
            except StopAsyncIteration:
                break
            next_event = None
            if resumes(event):
                # The job stays queued for the next start: let the browser reconnect then.
                await response.write(b"retry: 3000\n\n")
                break
            payload = json.dumps(event_data(job, event, lang))
            await response.write(f"event: {event_name(event)}\ndata: {payload}\n\n".encode())
            if isinstance(event, Done | Failed):
                break
    except ConnectionResetError:
        pass  # the browser went away; the job goes on
    except Exception:
        # The headers are sent: no JSON error can follow. End the stream (the page
        # reconnects and replays the job from its first event) instead of hanging.
        logger.exception("event stream of %s failed", job.handle.id)
    finally:
        stop_wait.cancel()
        if next_event is not None:
            next_event.cancel()
            await asyncio.wait({next_event})  # let it unwind before the generator is closed
        with contextlib.suppress(Exception):
            await events.aclose()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _audio_path(request: web.Request, job_id: str, fmt: str) -> Path | None:
    """The clip's file: from the live job, else from the request log (after a restart)."""
    job = _job(request)
    if job is not None:
        event = job.handle.last_event
        if not isinstance(event, Done):
            return None
        path = event.result.files.get(fmt)
        return Path(path) if path is not None else None
    record = await owned_record(request, job_id)
    if record is None or record.status != RequestStatus.DONE:
        return None
    clip = await request.app[SERVICES].engine.clip_files(record)
    if clip is None:
        raise WebError(404, "audio_gone")
    return clip.get(fmt)


async def get_audio(request: web.Request) -> web.StreamResponse:
    """GET /audio/{id}.{ogg|mp3|mp4}: the clip file (a moving picture's answer: the MP4)
    with its proper Content-Type; byte ranges are served, which players need to seek."""
    job_id, fmt = request.match_info["id"], request.match_info["fmt"]
    if fmt not in MEDIA_TYPES:
        raise WebError(404, "not_found")
    path = await _audio_path(request, job_id, fmt)
    if path is None:
        raise unknown_job()
    return clip_response(path, job_id, fmt, {"Cache-Control": "no-cache"})


async def page_config(request: web.Request) -> web.Response:
    """GET /api/config: the limits the form shows (length bounds, upload size)."""
    services = request.app[SERVICES]
    config = services.config
    return json_response({"seconds": config.generation.seconds,
                          "max_seconds": config.generation.max_seconds,
                          "max_upload_bytes": config.web.max_upload_bytes,
                          "max_seed": MAX_SEED, "words_max_chars": WORDS_MAX_CHARS})


def add_api_routes(app: web.Application) -> None:
    """Register the JSON API, the audio route and the shared pages."""
    app.router.add_get("/api/config", page_config)
    add_submit_routes(app)
    app.router.add_get("/api/jobs/{id}", get_job)
    app.router.add_get("/api/jobs/{id}/image", job_image)
    app.router.add_get("/api/jobs/{id}/events", job_events)
    app.router.add_get(r"/audio/{id:[A-Za-z0-9_-]+}.{fmt:[A-Za-z0-9]+}", get_audio)
    add_share_routes(app)


