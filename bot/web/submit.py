"""New jobs from the page: a picture (POST /api/jobs), another take of a result, and a
sound from the user's own words — the web's "Another take" and "Use my words".

All three pass the same door: the per-address limits first, then the engine, which records
every refusal it raises as a row; the refusals made here, before the engine sees a request,
are recorded with `refuse`. So every refusal is a JSON 4xx and a ``rejected`` row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.common.options import options_of, requested_options, retakes_words
from bot.common.requests import Requester, refuse
from bot.web.bodies import (
    ClientGone,
    PictureForm,
    load_image,
    read_json_object,
    read_picture_form,
)
from bot.web.jobs import WebError, job_view, json_response, preview_of
from bot.web.state import (
    ADDRESS_LIMITS,
    CLIENT,
    JOBS,
    PLATFORM,
    SERVICES,
    USER_ID,
    live_job,
    owned_record,
    unknown_job,
)
from bot.web.texts import request_language
from core.errors import BadRequest, ImageRejected, RateLimited, UserFacingError
from core.intake.decode import DecodedImage
from core.jobs.events import JobHandle
from core.records import RequestRecord, SourceKind
from core.services import Services
from core.user_text import WORDS_MAX_CHARS

# A JSON body of at most that many characters, each escaped as `\uXXXX\uXXXX` at worst.
WORDS_BODY_BYTES = 12 * WORDS_MAX_CHARS + 1024

Take = Callable[[Requester], Awaitable[tuple[JobHandle, bytes | None]]]


async def _admit(request: web.Request, kind: SourceKind, take: Take) -> web.Response:
    """Run `take` within the per-address limits; 202 with the new job's id and view."""
    services = request.app[SERVICES]
    limits = request.app[ADDRESS_LIMITS]
    address: str = request[CLIENT]
    user_id: str = request[USER_ID]
    requester = Requester(PLATFORM, user_id=user_id, chat_id=user_id)
    try:
        limits.reserve(address)
    except RateLimited as error:
        await refuse(services.engine, requester, kind, error)
        raise
    try:
        handle, preview = await take(requester)
        limits.accept(address, handle)
    finally:
        limits.release(address)
    job = request.app[JOBS].add(handle, preview)
    view = job_view(job, request_language(request))
    return json_response({"id": handle.id, "status": view["status"],
                          "position": view["position"], "image": view["image"]}, status=202,
                         headers={"Location": f"/api/jobs/{handle.id}"})


async def submit_job(request: web.Request) -> web.Response:
    """POST /api/jobs: the cheap checks, then the picture, then the job; 202 with its id.

    The per-address limits are checked before the body is read; the request is recorded
    (and the per-user and queue limits checked) before the upload is decoded or the link
    fetched, so a refused request costs no decoding; the 202 comes only once the job's row
    exists.
    """
    services = request.app[SERVICES]

    async def take(requester: Requester) -> tuple[JobHandle, bytes | None]:
        handle, image = await _take_picture(request, services, requester)
        return handle, await preview_of(image.image)

    kind = (SourceKind.UPLOAD if request.content_type == "multipart/form-data"
            else SourceKind.URL)
    return await _admit(request, kind, take)


async def _take_picture(request: web.Request, services: Services, requester: Requester
                        ) -> tuple[JobHandle, DecodedImage]:
    """Read, record, decode and submit one POST /api/jobs; refusals are logged and raised."""
    posted = PictureForm()
    try:
        settings = services.config.web
        posted = await read_picture_form(request, settings.max_upload_bytes,
                                         settings.body_timeout_s)
        asked = requested_options(services.config.generation, seconds=posted.seconds,
                                  seed=posted.seed)
        if posted.data is None and not posted.url:
            raise BadRequest("no image or url given", code="no_image")
    except (ImageRejected, BadRequest, ClientGone) as exc:
        # Logged like every refused request, so the stats see intake failures too.
        kind = posted.source_kind
        if request.content_type == "multipart/form-data" and posted.url is None:
            kind = SourceKind.UPLOAD  # the upload itself was refused before it was read whole
        await refuse(services.engine, requester, kind, _as_refusal(exc))
        raise
    source = {"kind": "upload"} if posted.data is not None else {"kind": "url",
                                                                 "url": posted.url}
    job_request = requester.job(source_kind=posted.source_kind, options=asked.options,
                                seed=asked.seed, source=source)
    receipt = await services.engine.receive(job_request)  # refusals: logged and raised
    try:
        image = await load_image(services, posted)
    except UserFacingError as error:
        await services.engine.refuse(receipt, error)
        raise
    handle = await services.engine.submit(job_request.with_image(image), receipt=receipt)
    return handle, image


def _as_refusal(exc: Exception) -> UserFacingError:
    if isinstance(exc, UserFacingError):
        return exc
    return BadRequest("the client went away mid-request", code="dropped")


async def _source(request: web.Request, requester: Requester, kind: SourceKind
                  ) -> RequestRecord:
    """The result a retake or the user's words start from: this browser's, or refused as
    unknown (a row too, like every refusal) — a stranger's job looks like no job at all."""
    record = await owned_record(request, request.match_info["id"])
    if record is None:
        await refuse(request.app[SERVICES].engine, requester, kind,
                     BadRequest("no such job of this browser", code="unknown_job"))
        raise unknown_job()
    return record


async def retake_job(request: web.Request) -> web.Response:
    """POST /api/jobs/{id}/retake: the same caption (or words), a fresh seed — a new job."""
    services = request.app[SERVICES]

    async def take(requester: Requester) -> tuple[JobHandle, bytes | None]:
        record = await _source(request, requester, SourceKind.RETAKE)
        if not (record.caption or record.prompt):
            await refuse(services.engine, requester, SourceKind.RETAKE,
                         BadRequest("the job has no caption yet", code="not_finished"))
            raise WebError(409, "not_finished")
        # A result of the user's words is retaken from those words, as the bots do.
        words = retakes_words(record)
        handle = await services.engine.submit(requester.job(
            source_kind=SourceKind.RETAKE, options=options_of(record, services.config.generation),
            caption=None if words else record.caption,
            prompt=record.prompt if words else None,
            reply_context={"mode": "prompt" if words else "caption", "of": record.id}))
        original = live_job(request, record.id)
        return handle, (original.preview if original is not None and not words else None)

    return await _admit(request, SourceKind.RETAKE, take)


async def words_job(request: web.Request) -> web.Response:
    """POST /api/jobs/{id}/words with `{"words": "..."}`: a new job that renders the user's
    own description (as the sound prompt, verbatim) with the options of job {id}."""
    services = request.app[SERVICES]

    async def take(requester: Requester) -> tuple[JobHandle, bytes | None]:
        record = await _source(request, requester, SourceKind.TEXT)
        too_long = BadRequest("words too long", code="words_too_long",
                              max_chars=WORDS_MAX_CHARS)
        try:
            body = await read_json_object(request, WORDS_BODY_BYTES,
                                          services.config.web.body_timeout_s, too_long)
            words = body.get("words")
            words = " ".join(words.split()) if isinstance(words, str) else ""
            if not words:
                raise BadRequest("no words given", code="no_words")
            if len(words) > WORDS_MAX_CHARS:
                raise too_long
        except (BadRequest, ClientGone) as exc:
            await refuse(services.engine, requester, SourceKind.TEXT, _as_refusal(exc))
            raise
        handle = await services.engine.submit(requester.job(
            source_kind=SourceKind.TEXT, options=options_of(record, services.config.generation),
            prompt=words,
            reply_context={"mode": "prompt", "of": record.id}))
        return handle, None

    return await _admit(request, SourceKind.TEXT, take)


def add_submit_routes(app: web.Application) -> None:
    """The three doors a new job comes in by."""
    app.router.add_post("/api/jobs", submit_job)
    app.router.add_post("/api/jobs/{id}/retake", retake_job)
    app.router.add_post("/api/jobs/{id}/words", words_job)
