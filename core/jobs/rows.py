"""Between requests and request-log rows: a row for a request, and a request (or its
outcome) back from a row after a restart."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict
from pathlib import Path

from core.config import Config
from core.errors import GenerationFailed, UserFacingError
from core.intake.decode import DecodedImage
from core.intake.moving import input_kind
from core.jobs.events import JobResult
from core.jobs.request import JobRequest
from core.jobs.spool import Spool
from core.options import GenerationOptions
from core.storage.records import RequestRecord


def new_request_id() -> str:
    """12 URL-safe characters: fits Telegram callback_data and Discord custom_ids."""
    return secrets.token_urlsafe(9)


def model_tag(config: Config) -> str:
    """What else decides a clip: the models, the device and the caption/prompt settings."""
    generation = config.generation
    parts = {"models": asdict(config.models), "template": generation.prompt_template,
             "beams": generation.caption_beams, "tokens": generation.caption_max_tokens}
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def image_sha(request: JobRequest) -> str | None:
    """The SHA-256 of the request's picture, when it has one at hand."""
    return request.image.sha256 if request.image is not None else None


# Where a request's cap on the MP4 it gets back travels in its row (read back on a restart).
VIDEO_CAP_KEY = "video_cap_bytes"


def reply_context_of(request: JobRequest) -> dict[str, object]:
    """What the row keeps to answer `request` after a restart: the adapter's context, and
    the cap on the video it can post."""
    context: dict[str, object] = dict(request.reply_context)
    if request.video_cap_bytes is not None:
        context[VIDEO_CAP_KEY] = request.video_cap_bytes
    return context


def video_cap(record: RequestRecord) -> int | None:
    cap = (record.reply_context or {}).get(VIDEO_CAP_KEY)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else None


def is_moving(record: RequestRecord) -> bool:
    """The row's request came with a video or an animation (its bytes are spooled)."""
    return record.input_kind in ("video", "animation")


def video_columns(request: JobRequest) -> dict[str, object]:
    """The row's columns a fetched picture fills in (a received row learns them late)."""
    video = request.video
    return {"input_kind": input_kind(request.image), "options": request.options.to_dict(),
            "input_seconds": video.clip.timing.duration_s if video is not None else None}


def record_for(request: JobRequest, request_id: str, *, status: str, created_at: float,
               seed: int | None, cache_key: str | None = None,
               reason: str | None = None) -> RequestRecord:
    """The row of a request as it is accepted (or refused: `reason`)."""
    refused = status == "rejected"
    video = request.video
    return RequestRecord(
        id=request_id, platform=request.platform, user_id=request.user_id,
        chat_id=request.chat_id, source_kind=request.source_kind, status=status,
        created_at=created_at, is_admin=request.is_admin,
        image_sha256=image_sha(request),
        caption=request.caption, prompt=request.prompt, options=request.options.to_dict(),
        seed=seed, lang=request.lang,
        # A refusal at the door is answered at once and never again: nothing to keep.
        reply_context={} if refused else reply_context_of(request),
        cache_key=cache_key, reason=reason, source=None if refused else request.source,
        dedupe_key=request.dedupe_key, user_name=request.user_name,
        delivery="owed" if request.answer_owed and not refused else None,
        finished_at=created_at if refused else None, total_s=0.0 if refused else None,
        input_kind=input_kind(request.image),
        input_seconds=video.clip.timing.duration_s if video is not None else None)


async def rebuild_request(record: RequestRecord, spool: Spool) -> JobRequest | None:
    """The request behind a row, to run it again; None when it cannot be (picture gone)."""
    options = record.generation_options
    if options is None:
        return None
    image: DecodedImage | None = None
    caption = prompt = None
    if record.caption:  # after a render the caption is known: no picture needed again
        caption = record.caption
    elif record.prompt:
        prompt = record.prompt
    elif not record.image_sha256:
        return None
    if (caption is None and prompt is None) or is_moving(record):
        # A video is needed again even with its caption known: the answer is made from it.
        image = await spool.read(record)
        if image is None:
            return None
    return JobRequest(platform=record.platform, user_id=record.user_id, chat_id=record.chat_id,
                      source_kind=record.source_kind, options=options, image=image,
                      caption=caption, prompt=prompt, seed=record.seed,
                      is_admin=record.is_admin, lang=record.lang,
                      reply_context=dict(record.reply_context or {}),
                      dedupe_key=record.dedupe_key, answer_owed=record.delivery is not None,
                      user_name=record.user_name, video_cap_bytes=video_cap(record))


def received_request(record: RequestRecord) -> JobRequest | None:
    """A received row's request again (its picture still to fetch), to carry it on."""
    options = record.generation_options
    if options is None or record.source is None:
        return None
    return JobRequest(platform=record.platform, user_id=record.user_id, chat_id=record.chat_id,
                      source_kind=record.source_kind, options=options, source=record.source,
                      seed=record.seed, is_admin=record.is_admin, lang=record.lang,
                      reply_context=dict(record.reply_context or {}),
                      dedupe_key=record.dedupe_key, answer_owed=record.delivery is not None,
                      user_name=record.user_name, video_cap_bytes=video_cap(record))


def placeholder_request(record: RequestRecord) -> JobRequest:
    """A row as a request for a handle that only reports its outcome (nothing to render)."""
    return JobRequest(platform=record.platform, user_id=record.user_id, chat_id=record.chat_id,
                      source_kind=record.source_kind,
                      options=record.generation_options or GenerationOptions(),
                      caption=record.caption or "", seed=record.seed, is_admin=record.is_admin,
                      lang=record.lang, reply_context=dict(record.reply_context or {}),
                      source=record.source, answer_owed=record.delivery is not None,
                      user_name=record.user_name)


def result_from_record(record: RequestRecord, files: dict[str, Path]) -> JobResult:
    """A done row's clip, with its files on this machine."""
    return JobResult(request_id=record.id, caption=record.caption or "",
                     prompt=record.prompt or "", seed=record.seed or 0,
                     duration_s=record.duration_s or 0.0, files=files,
                     cache_hit=record.cache_hit, batch_size=record.batch_size or 0,
                     score=record.score, output_kind=record.output_kind or "audio",
                     sound_fit=record.sound_fit, input_seconds=record.input_seconds,
                     video_cap_bytes=video_cap(record))


def failure_from_record(record: RequestRecord) -> UserFacingError:
    """Why a failed, refused or interrupted row got no clip, as the user is told."""
    code = record.reason or "failed"
    return GenerationFailed(f"request {record.status}", code=code)
