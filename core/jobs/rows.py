"""Between requests and request-log rows: a row for a request, the columns of how it ended
(the same for every backend and every path: rendered, a rider, a cache hit, failed, refused,
interrupted), and a request (or its outcome) back from a row after a restart."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from core.config import Config
from core.errors import GenerationFailed, UserFacingError
from core.intake.decode import DecodedImage
from core.intake.moving import input_kind
from core.jobs.events import Done, Failed, JobResult
from core.jobs.request import VIDEO_CAP_KEY, JobRequest, video_cap
from core.jobs.spool import Spool
from core.options import GenerationOptions, check_seed
from core.records import (
    MOVING_INPUTS,
    Delivery,
    OutputKind,
    RequestRecord,
    RequestStatus,
    RowChanges,
)
from core.storage.request_log import RequestLog


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


def reply_context_of(request: JobRequest) -> dict[str, object]:
    """What the row keeps to answer `request` after a restart: the adapter's context, and
    the cap on the video it can post."""
    context: dict[str, object] = dict(request.reply_context)
    if request.video_cap_bytes is not None:
        context[VIDEO_CAP_KEY] = request.video_cap_bytes
    return context


def is_moving(record: RequestRecord) -> bool:
    """The row's request came with a video or an animation (its bytes are spooled)."""
    return record.input_kind in MOVING_INPUTS


def video_columns(request: JobRequest) -> RowChanges:
    """The row's columns a fetched picture fills in (a received row learns them late)."""
    video = request.video
    return RowChanges(input_kind=input_kind(request.image), options=request.options.to_dict(),
                      input_seconds=video.clip.timing.duration_s if video is not None else None)


def with_video_columns(request: JobRequest, changes: RowChanges) -> RowChanges:
    """`changes` and the columns a fetched picture fills in (`video_columns`)."""
    changes.update(video_columns(request))
    return changes


def record_for(request: JobRequest, request_id: str, *, status: RequestStatus, created_at: float,
               seed: int | None, cache_key: str | None = None,
               reason: str | None = None) -> RequestRecord:
    """The row of a request as it is accepted (or refused: `reason`)."""
    refused = status == RequestStatus.REJECTED
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
        delivery=Delivery.OWED if request.answer_owed and not refused else None,
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
                     score=record.score, output_kind=record.output_kind or OutputKind.AUDIO,
                     sound_fit=record.sound_fit, input_seconds=record.input_seconds,
                     video_cap_bytes=video_cap(record))


def failure_from_record(record: RequestRecord) -> UserFacingError:
    """Why a failed, refused or interrupted row got no clip, as the user is told."""
    code = record.reason or "failed"
    return GenerationFailed(f"request {record.status}", code=code)


def done_row(*, created_at: float, started_at: float | None, finished_at: float, caption: str,
             prompt: str, seed: int, duration_s: float, files: Mapping[str, Path | str],
             cache_hit: bool, batch_size: int, score: float | None = None,
             stages: Mapping[str, float] | None = None) -> RowChanges:
    """The columns of a request answered with a clip.

    Rendered (`stages`: the model's caption and sound seconds and the encoding's), riding an
    identical job (`cache_hit`, no stages of its own: it cost no model call) or served from
    the cache (`cache_hit`, `batch_size` 0, started as it finished). A request's render
    never starts before it was made: one that joined a running job waited 0 s.
    """
    started = max(created_at, started_at if started_at is not None else finished_at)
    stages = stages or {}
    return RowChanges(
        status=RequestStatus.DONE, caption=caption, prompt=prompt, seed=seed,
        cache_hit=cache_hit,
        batch_size=batch_size, duration_s=duration_s, score=score,
        files={fmt: Path(name).name for fmt, name in files.items()},
        started_at=started, finished_at=finished_at, queue_wait_s=started - created_at,
        caption_s=float(stages.get("caption_s", 0.0)), sound_s=float(stages.get("sound_s", 0.0)),
        encode_s=float(stages.get("encode_s", 0.0)),
        total_s=max(0.0, finished_at - created_at))


def timings_of(changes: RowChanges) -> dict[str, float]:
    """A done row's timings, as `JobResult.timings` carries them."""
    return {"queue_wait_s": changes.get("queue_wait_s") or 0.0,
            "caption_s": changes.get("caption_s") or 0.0,
            "sound_s": changes.get("sound_s") or 0.0,
            "encode_s": changes.get("encode_s") or 0.0,
            "total_s": changes.get("total_s") or 0.0}


def ended_row(status: RequestStatus, reason: str, *, created_at: float, finished_at: float
              ) -> RowChanges:
    """The columns of a request that ended without a clip: failed, refused, interrupted."""
    return RowChanges(status=status, reason=reason, finished_at=finished_at,
                      total_s=max(0.0, finished_at - created_at))


async def seed_of(request_log: RequestLog, record: RequestRecord) -> int:
    """The row's seed; a row without one (written by an older version) is given one here,
    drawn at random like any request's and kept in the row, so that every later try of it
    renders the same — on either backend, by whichever process takes it up."""
    if record.seed is not None:
        return record.seed
    seed = check_seed(None)
    await request_log.update(record.id, seed=seed)
    return seed


def outcome_of(record: RequestRecord, files: dict[str, Path] | None) -> Done | Failed:
    """How a finished row ended, as its handle tells it (`files`: its clip on this machine)."""
    if record.status != RequestStatus.DONE:
        return Failed(failure_from_record(record))
    if files is None:
        return Failed(GenerationFailed("the clip is gone", code="failed"))
    return Done(result_from_record(record, files))
