"""The JSON API of the web page: submit a picture, follow its job, fetch its audio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from bot.common.following import resumes
from bot.common.options import requested_options
from bot.common.requests import Requester, refuse
from bot.web.jobs import (
    AUDIO_TYPES,
    JobRegistry,
    WebError,
    WebJob,
    event_data,
    event_name,
    job_view,
    json_response,
    preview_of,
    record_view,
)
from bot.web.texts import request_language
from core.config import MAX_SEED
from core.errors import BadRequest, ImageRejected, UserFacingError
from core.intake.decode import DecodedImage, decode_image_async
from core.jobs.events import Done, Failed
from core.services import Services
from core.storage.request_log import RequestRecord

logger = logging.getLogger(__name__)

PLATFORM = "web"
SERVICES = web.AppKey("services", Services)
JOBS = web.AppKey("jobs", JobRegistry)
STOPPING = web.AppKey("stopping", asyncio.Event)
USER_ID = web.RequestKey("user_id", str)  # set by the guard middleware

FIELD_LIMIT = 4096  # bytes of a text form field (url, seconds, seed)
CHUNK = 64 * 1024
SSE_PING_S = 15.0


@dataclass
class Intake:
    """What one POST /api/jobs carried, before the image is decoded."""

    data: bytes | None = None
    url: str | None = None
    seconds: str | float | int | None = None
    seed: str | int | float | None = None

    @property
    def source_kind(self) -> str:
        return "upload" if self.data is not None else "url"


def _too_large(limit: int) -> ImageRejected:
    return ImageRejected(f"upload larger than {limit} bytes", code="too_large", max_bytes=limit)


async def _read_limited(part: BodyPartReader, limit: int, error: UserFacingError) -> bytes:
    """Read one multipart part, stopping as soon as it exceeds `limit` bytes."""
    buf = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise error
    return bytes(buf)


async def read_intake(request: web.Request, max_upload: int) -> Intake:
    """Parse multipart (`image`, `url`, `seconds`, `seed`) or JSON into an `Intake`."""
    if request.content_length is not None and request.content_length > max_upload + CHUNK:
        raise _too_large(max_upload)
    ctype = request.content_type
    try:
        return await _read_intake(request, ctype, max_upload)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_upload) from None
    except ValueError:
        # aiohttp's multipart reader: no boundary, a missing boundary, a body cut short.
        if ctype != "multipart/form-data":
            raise
        raise BadRequest("malformed multipart body", code="bad_form") from None


async def _read_intake(request: web.Request, ctype: str, max_upload: int) -> Intake:
    intake = Intake()
    if ctype == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "image":
                data = await _read_limited(part, max_upload, _too_large(max_upload))
                if data:  # an empty file field means "no file chosen"
                    intake.data = data
            elif part.name in ("url", "seconds", "seed"):
                bad = BadRequest(f"field {part.name} is too long", code="bad_option")
                value = (await _read_limited(part, FIELD_LIMIT, bad)).decode("utf-8", "replace")
                setattr(intake, part.name, value)
            else:
                await part.release()
    elif ctype in ("application/json", ""):
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body is not JSON", code="bad_json") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object", code="bad_json")
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise ImageRejected("url must be a string", code="bad_url")
        intake.url, intake.seconds, intake.seed = url, body.get("seconds"), body.get("seed")
    elif ctype == "application/x-www-form-urlencoded":
        form = await request.post()
        intake.url = _text(form.get("url"))
        intake.seconds, intake.seed = _text(form.get("seconds")), _text(form.get("seed"))
    else:
        raise BadRequest(f"unsupported content type {ctype}", code="bad_content_type")
    if isinstance(intake.url, str):
        intake.url = intake.url.strip() or None
    return intake


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def load_image(services: Services, intake: Intake) -> DecodedImage:
    """Decode the upload, or fetch the link through the SSRF-safe fetcher."""
    if intake.data is not None:
        return await decode_image_async(intake.data, services.config.images)
    if intake.url:
        return await services.fetcher.fetch_image(intake.url)
    raise BadRequest("no image or url given", code="no_image")


async def submit_job(request: web.Request) -> web.Response:
    """POST /api/jobs: the cheap checks, then the picture, then the job; 202 with its id.

    The request is recorded (and the per-user and queue limits checked) before the upload
    is decoded or the link fetched, so a refused request costs no decoding; the 202 comes
    only once the job's row exists.
    """
    services = request.app[SERVICES]
    user_id: str = request[USER_ID]
    intake = Intake()
    requester = Requester(PLATFORM, user_id=user_id, chat_id=user_id)
    try:
        intake = await read_intake(request, services.config.web.max_upload_bytes)
        asked = requested_options(services.config.generation, seconds=intake.seconds,
                                  seed=intake.seed)
        if intake.data is None and not intake.url:
            raise BadRequest("no image or url given", code="no_image")
    except (ImageRejected, BadRequest) as error:
        # Logged like every refused request, so the stats see intake failures too.
        kind = intake.source_kind
        if request.content_type == "multipart/form-data" and intake.url is None:
            kind = "upload"  # the upload itself was refused before it was read whole
        await refuse(services.engine, requester, kind, error)
        raise
    source = {"kind": "upload"} if intake.data is not None else {"kind": "url",
                                                                 "url": intake.url}
    job_request = requester.job(source_kind=intake.source_kind, options=asked.options,
                                seed=asked.seed, source=source)
    receipt = await services.engine.receive(job_request)  # refusals: logged and raised
    try:
        image = await load_image(services, intake)
    except UserFacingError as error:
        await services.engine.refuse(receipt, error)
        raise
    handle = await services.engine.submit(job_request.with_image(image), receipt=receipt)
    job = request.app[JOBS].add(handle, await preview_of(image.image))
    view = job_view(job, request_language(request))
    return json_response({"id": handle.id, "status": view["status"],
                          "position": view["position"]}, status=202,
                         headers={"Location": f"/api/jobs/{handle.id}"})


def _job(request: web.Request) -> WebJob | None:
    """The live job named in the path, if this browser (or API client) submitted it."""
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None or job.handle.request.user_id != request[USER_ID]:
        return None
    return job


async def _record(request: web.Request, job_id: str) -> RequestRecord | None:
    """The request-log row of a web job this browser submitted (after a restart), or None."""
    record = await request.app[SERVICES].engine.get_request(job_id)
    if record is None or record.platform != PLATFORM or record.user_id != request[USER_ID]:
        return None  # someone else's job looks exactly like an unknown one
    return record


def _unknown_job() -> WebError:
    return WebError(404, "unknown_job")


async def get_job(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}: status, position, progress, caption, prompt, audio URLs, error."""
    job = _job(request)
    if job is not None:
        return json_response(job_view(job, request_language(request)))
    record = await _record(request, request.match_info["id"])
    if record is None:
        raise _unknown_job()
    return json_response(record_view(record, request_language(request)))


async def job_image(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}/image: the preview of the decoded picture."""
    job = _job(request)
    if job is None or job.preview is None:
        raise _unknown_job()
    return web.Response(body=job.preview, content_type="image/jpeg")


async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events: server-sent events from the first, ending after done/failed."""
    job = _job(request)
    if job is None:
        raise _unknown_job()
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
    record = await _record(request, job_id)
    if record is None or record.status != "done":
        return None
    name = (record.files or {}).get(fmt)
    return Path(name) if name else None


async def get_audio(request: web.Request) -> web.StreamResponse:
    """GET /audio/{id}.{ogg|mp3}: the clip file with its proper Content-Type."""
    job_id, fmt = request.match_info["id"], request.match_info["fmt"]
    if fmt not in AUDIO_TYPES:
        raise WebError(404, "not_found")
    path = await _audio_path(request, job_id, fmt)
    if path is None:
        raise _unknown_job()
    if not path.is_file():
        raise WebError(404, "audio_gone")
    name = f"sonify-{job_id}.{fmt}"
    return web.FileResponse(path, headers={"Content-Type": AUDIO_TYPES[fmt],
                                           "Content-Disposition": f'inline; filename="{name}"',
                                           "Cache-Control": "no-cache"})


async def page_config(request: web.Request) -> web.Response:
    """GET /api/config: the limits the form shows (length bounds, upload size)."""
    services = request.app[SERVICES]
    config = services.config
    return json_response({"seconds": config.generation.seconds,
                          "max_seconds": config.generation.max_seconds,
                          "max_upload_bytes": config.web.max_upload_bytes,
                          "max_seed": MAX_SEED})


def add_api_routes(app: web.Application) -> None:
    """Register the JSON API and the audio route."""
    app.router.add_get("/api/config", page_config)
    app.router.add_post("/api/jobs", submit_job)
    app.router.add_get("/api/jobs/{id}", get_job)
    app.router.add_get("/api/jobs/{id}/image", job_image)
    app.router.add_get("/api/jobs/{id}/events", job_events)
    app.router.add_get(r"/audio/{id:[A-Za-z0-9_-]+}.{fmt:[A-Za-z0-9]+}", get_audio)


