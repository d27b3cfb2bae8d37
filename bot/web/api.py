"""The JSON API of the web page: submit a picture, follow its job, fetch its audio."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bot.common.following import resumes
from bot.common.options import requested_options
from bot.common.requests import Requester, refuse
from bot.web.connections import ConnectionGuard
from bot.web.identity import AddressLimits, Identities
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
from core.errors import BadRequest, ImageRejected, RateLimited, UserFacingError
from core.intake.decode import DecodedImage, decode_image_async
from core.jobs.events import Done, Failed, JobHandle
from core.services import Services
from core.storage.request_log import RequestRecord

logger = logging.getLogger(__name__)

PLATFORM = "web"
SERVICES = web.AppKey("services", Services)
JOBS = web.AppKey("jobs", JobRegistry)
STOPPING = web.AppKey("stopping", asyncio.Event)
IDENTITIES = web.AppKey("identities", Identities)
ADDRESS_LIMITS = web.AppKey("address_limits", AddressLimits)
GUARD = web.AppKey("connection_guard", ConnectionGuard)
USER_ID = web.RequestKey("user_id", str)  # set by the guard middleware
CLIENT = web.RequestKey("client", str)  # the client's address key (`address_key`), ditto
DROPPED = web.RequestKey("dropped", bool)  # the client went away mid-request (`ClientGone`)

T = TypeVar("T")

FIELD_LIMIT = 4096  # bytes of a text form field (url, seconds, seed)
FORM_FIELDS = 64  # fields of a urlencoded form (ours has three)
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


class ClientGone(Exception):
    """The client closed the connection before its request body was read whole."""


def _too_large(limit: int) -> ImageRejected:
    return ImageRejected(f"upload larger than {limit} bytes", code="too_large", max_bytes=limit)


@dataclass(frozen=True)
class _Body:
    """How a request body is read: its size limit, and how long it may pause."""

    max_upload: int
    idle_s: float

    async def step(self, pending: Awaitable[T]) -> T:
        """One read of the body, refused (408) when no bytes come for `idle_s`.

        Besides slow clients, this ends a read aiohttp would never finish: a body whose
        decoding fails only at its end (`Content-Encoding: deflate`), arriving after the
        headers, is answered by aiohttp's parser while the handler's read waits on.
        """
        try:
            async with asyncio.timeout(self.idle_s):
                return await pending
        except TimeoutError:
            raise BadRequest("the request body stopped arriving",
                             code="request_timeout") from None

    async def part(self, part: BodyPartReader, limit: int, error: UserFacingError) -> bytes:
        """Read one multipart part, stopping as soon as it exceeds `limit` bytes."""
        buf = bytearray()
        while chunk := await self.step(part.read_chunk(CHUNK)):
            buf += chunk
            if len(buf) > limit:
                raise error
        return bytes(buf)

    async def whole(self, request: web.Request) -> bytes:
        """A JSON or form body (bounded like aiohttp's `client_max_size`)."""
        buf = bytearray()
        while chunk := await self.step(request.content.readany()):
            buf += chunk
            if len(buf) > self.max_upload + CHUNK:
                raise _too_large(self.max_upload)
        return bytes(buf)


async def read_intake(request: web.Request, max_upload: int, idle_s: float) -> Intake:
    """Parse multipart (`image`, `url`, `seconds`, `seed`) or JSON into an `Intake`."""
    if request.content_length is not None and request.content_length > max_upload + CHUNK:
        raise _too_large(max_upload)
    ctype = request.content_type
    try:
        return await _read_intake(request, ctype, _Body(max_upload, idle_s))
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_upload) from None
    except (ConnectionError, HttpProcessingError, web.RequestPayloadError) as exc:
        # The body stopped: the client hung up, or sent a broken framing or encoding
        # (aiohttp's parser errors, e.g. a multipart header line over 8 KB, bad gzip).
        transport = request.transport
        if isinstance(exc, ConnectionError) or transport is None or transport.is_closing():
            raise ClientGone() from None
        code = "bad_form" if ctype == "multipart/form-data" else "bad_request"
        raise BadRequest(f"unreadable body ({type(exc).__name__})", code=code) from None
    except ValueError:
        # aiohttp's multipart reader: no boundary, a missing boundary, a body cut short.
        if ctype != "multipart/form-data":
            raise
        raise BadRequest("malformed multipart body", code="bad_form") from None


async def _body_text(request: web.Request, body: _Body, unreadable: BadRequest) -> str:
    """The body decoded with its declared charset (UTF-8 if none); a charset Python does
    not know as a text encoding is refused as such, undecodable bytes as `unreadable`."""
    charset = request.charset or "utf-8"
    try:
        codec = codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a name with a NUL in it
        raise BadRequest("unknown charset", code="bad_charset") from None
    raw = await body.whole(request)
    try:
        return raw.decode(codec.name)
    except LookupError:  # a codec that is not a text encoding (base64, zlib, rot13…)
        raise BadRequest("not a text charset", code="bad_charset") from None
    except ValueError:  # UnicodeDecodeError, or a codec's own refusal
        raise unreadable from None


async def _read_intake(request: web.Request, ctype: str, body: _Body) -> Intake:
    intake = Intake()
    if ctype == "multipart/form-data":
        reader = await request.multipart()
        while (part := await body.step(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "image":
                limit = body.max_upload
                data = await body.part(part, limit, _too_large(limit))
                if data:  # an empty file field means "no file chosen"
                    intake.data = data
            elif part.name in ("url", "seconds", "seed"):
                bad = BadRequest(f"field {part.name} is too long", code="bad_option")
                value = (await body.part(part, FIELD_LIMIT, bad)).decode("utf-8", "replace")
                setattr(intake, part.name, value)
            else:
                while await body.step(part.read_chunk(CHUNK)):
                    pass  # a field we do not use: read past it
    elif ctype in ("application/json", ""):
        not_json = BadRequest("body is not JSON", code="bad_json")
        text = await _body_text(request, body, not_json)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            raise not_json from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object", code="bad_json")
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise ImageRejected("url must be a string", code="bad_url")
        intake.url, intake.seconds, intake.seed = url, body.get("seconds"), body.get("seed")
    elif ctype == "application/x-www-form-urlencoded":
        bad_form = BadRequest("malformed form", code="bad_form")
        text = await _body_text(request, body, bad_form)
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_FIELDS,
                              encoding=codecs.lookup(request.charset or "utf-8").name,
                              errors="replace")
        except (ValueError, LookupError):  # too many fields
            raise bad_form from None
        form: dict[str, str] = {}
        for name, value in pairs:
            form.setdefault(name, value)  # the first of repeated fields, as aiohttp's post()
        intake.url = form.get("url")
        intake.seconds, intake.seed = form.get("seconds"), form.get("seed")
    else:
        raise BadRequest(f"unsupported content type {ctype}", code="bad_content_type")
    if isinstance(intake.url, str):
        intake.url = intake.url.strip() or None
    return intake


async def load_image(services: Services, intake: Intake) -> DecodedImage:
    """Decode the upload, or fetch the link through the SSRF-safe fetcher."""
    if intake.data is not None:
        return await decode_image_async(intake.data, services.config.images)
    if intake.url:
        return await services.fetcher.fetch_image(intake.url)
    raise BadRequest("no image or url given", code="no_image")


async def submit_job(request: web.Request) -> web.Response:
    """POST /api/jobs: the cheap checks, then the picture, then the job; 202 with its id.

    The per-address limits are checked before the body is read; the request is recorded
    (and the per-user and queue limits checked) before the upload is decoded or the link
    fetched, so a refused request costs no decoding; the 202 comes only once the job's row
    exists. Every refusal is a JSON 4xx and a ``rejected`` row.
    """
    services = request.app[SERVICES]
    limits = request.app[ADDRESS_LIMITS]
    address: str = request[CLIENT]
    user_id: str = request[USER_ID]
    requester = Requester(PLATFORM, user_id=user_id, chat_id=user_id)
    try:
        limits.reserve(address)
    except RateLimited as error:
        kind = "upload" if request.content_type == "multipart/form-data" else "url"
        await refuse(services.engine, requester, kind, error)
        raise
    try:
        handle, image = await _take_job(request, services, requester)
        limits.accept(address, handle)
    finally:
        limits.release(address)
    job = request.app[JOBS].add(handle, await preview_of(image.image))
    view = job_view(job, request_language(request))
    return json_response({"id": handle.id, "status": view["status"],
                          "position": view["position"]}, status=202,
                         headers={"Location": f"/api/jobs/{handle.id}"})


async def _take_job(request: web.Request, services: Services, requester: Requester
                    ) -> tuple[JobHandle, DecodedImage]:
    """Read, record, decode and submit one POST /api/jobs; refusals are logged and raised."""
    intake = Intake()
    try:
        settings = services.config.web
        intake = await read_intake(request, settings.max_upload_bytes, settings.body_timeout_s)
        asked = requested_options(services.config.generation, seconds=intake.seconds,
                                  seed=intake.seed)
        if intake.data is None and not intake.url:
            raise BadRequest("no image or url given", code="no_image")
    except (ImageRejected, BadRequest, ClientGone) as exc:
        # Logged like every refused request, so the stats see intake failures too.
        kind = intake.source_kind
        if request.content_type == "multipart/form-data" and intake.url is None:
            kind = "upload"  # the upload itself was refused before it was read whole
        error = exc if isinstance(exc, UserFacingError) else BadRequest(
            "the client went away mid-request", code="dropped")
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
    return handle, image


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


async def _followed(request: web.Request) -> WebJob | None:
    """A job of this browser that another web process took (the redis backend: several
    behind one address), followed live from here."""
    job_id = request.match_info["id"]
    if await _record(request, job_id) is None:
        return None
    handle = await request.app[SERVICES].engine.follow(job_id)
    return WebJob(handle) if handle is not None else None


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
    clip = await request.app[SERVICES].engine.clip_files(record) if record.status == "done" \
        else None
    return json_response(record_view(record, request_language(request), clip))


async def job_image(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}/image: the preview of the decoded picture."""
    job = _job(request)
    if job is None or job.preview is None:
        raise _unknown_job()
    return web.Response(body=job.preview, content_type="image/jpeg")


async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events: server-sent events from the first, ending after done/failed."""
    job = _job(request) or await _followed(request)
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
    clip = await request.app[SERVICES].engine.clip_files(record)
    if clip is None:
        raise WebError(404, "audio_gone")
    return clip.get(fmt)


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


