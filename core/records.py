"""One request as every part of Sonify sees it: its row, and the values its fields take.

The values are `StrEnum`s: each member is its text (rows and JSON hold the text; a member
compares equal to it), and the request log's tables check every stored value against
them (core/storage/tables.py, from revision 0006 on) — a value no member names cannot be
written. A new platform or status is one member here and one migration there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypedDict

from core.options import GenerationOptions


class RequestStatus(StrEnum):
    """Where a request stands; the first three are unfinished, the rest are outcomes."""

    RECEIVED = "received"  # recorded; its picture is still to be fetched
    QUEUED = "queued"  # with the engine, waiting for a render (or riding one)
    RUNNING = "running"  # its batch is rendering
    DONE = "done"  # answered with a clip
    FAILED = "failed"  # answered with an apology: the render failed
    REJECTED = "rejected"  # refused (a limit, bad input, a picture that cannot be had)
    INTERRUPTED = "interrupted"  # could not be carried on after a restart (picture gone)


UNFINISHED = (RequestStatus.RECEIVED, RequestStatus.QUEUED, RequestStatus.RUNNING)


class Delivery(StrEnum):
    """How far an owed answer got (the row's `delivery`; None: nobody is told, e.g. a
    refusal at the door or the web page, which fetches its answers)."""

    OWED = "owed"
    SENDING = "sending"  # being posted: after a crash it is posted again
    SENT = "sent"


class Platform(StrEnum):
    """Where a request came from (one adapter each)."""

    TELEGRAM = "telegram"
    DISCORD = "discord"
    WEB = "web"


class SourceKind(StrEnum):
    """What the user gave."""

    PHOTO = "photo"  # a Telegram photo
    DOCUMENT = "document"  # a picture sent as a file (or a sticker)
    URL = "url"  # a link to a picture
    ATTACHMENT = "attachment"  # a Discord attachment
    UPLOAD = "upload"  # the web page's upload
    RETAKE = "retake"  # "Another take": the stored caption, a new seed
    TEXT = "text"  # "Use my words"
    ANIMATION = "animation"  # a Telegram animation (a GIF, sent as a silent MP4)
    VIDEO = "video"  # a Telegram video
    VIDEO_NOTE = "video_note"  # a Telegram round video message


class InputKind(StrEnum):
    """What kind of picture a request came with (None: words only, or an older row)."""

    PHOTO = "photo"  # a still picture
    ANIMATION = "animation"  # a GIF, or a clip the platform calls an animation
    VIDEO = "video"


MOVING_INPUTS = (InputKind.ANIMATION, InputKind.VIDEO)


class OutputKind(StrEnum):
    """What a request was answered with."""

    AUDIO = "audio"  # a sound for a still picture (or for words)
    VIDEO = "video"  # the moving picture with its new sound
    AUDIO_ONLY = "audio_only"  # a moving picture's sound alone (its MP4 would not fit)


class SoundFit(StrEnum):
    """How a moving picture's sound spans it."""

    WHOLE = "whole"  # as long as the clip
    LOOPED = "looped"  # the longest sound the backend makes, looped over the clip


@dataclass
class RequestRecord:
    """One row of the request log."""

    id: str
    platform: Platform
    user_id: str
    chat_id: str
    source_kind: SourceKind
    status: RequestStatus
    created_at: float
    is_admin: bool = False
    image_sha256: str | None = None
    caption: str | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None
    seed: int | None = None
    lang: str = "en"
    reply_context: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    reason: str | None = None
    queue_wait_s: float | None = None
    caption_s: float | None = None
    sound_s: float | None = None
    encode_s: float | None = None
    total_s: float | None = None
    duration_s: float | None = None
    cache_hit: bool = False
    batch_size: int | None = None
    files: dict[str, str] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    source: dict[str, Any] | None = None
    dedupe_key: str | None = None
    delivery: Delivery | None = None
    score: float | None = None
    worker: str | None = None
    attempts: int = 0
    user_name: str | None = None
    fair_round: int | None = None
    rider_of: str | None = None
    times: int = 1  # a refusal row stands for this many refusals (see `record_refusal`)
    input_kind: InputKind | None = None  # None: words only, or an older row
    output_kind: OutputKind | None = None
    input_seconds: float | None = None  # a moving picture's length
    sound_fit: SoundFit | None = None

    @property
    def generation_options(self) -> GenerationOptions | None:
        return GenerationOptions.from_dict(self.options) if self.options else None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    @classmethod
    def from_row(cls, row: Any) -> RequestRecord:
        """A row as the database returns it (its values as text), typed."""
        data = dict(row._mapping)
        data["reply_context"] = data.get("reply_context") or {}
        data["attempts"] = data.get("attempts") or 0
        data["times"] = data.get("times") or 1
        data["platform"] = Platform(data["platform"])
        data["source_kind"] = SourceKind(data["source_kind"])
        data["status"] = RequestStatus(data["status"])
        if data.get("delivery") is not None:
            data["delivery"] = Delivery(data["delivery"])
        for name, kind in (("input_kind", InputKind), ("output_kind", OutputKind),
                           ("sound_fit", SoundFit)):
            if data.get(name) is not None:
                data[name] = kind(data[name])
        return cls(**data)


RECORD_FIELDS = frozenset(f.name for f in fields(RequestRecord))


@dataclass(frozen=True)
class SharedResult:
    """What a live share link points at (the web page's "Share")."""

    request_id: str
    created_at: float
    preview: bytes | None  # the small JPEG of the picture, kept while shared


class RowChanges(TypedDict, total=False):
    """Columns of a request's row to change (`RequestLog.update`): any of them, typed."""

    status: RequestStatus
    is_admin: bool
    image_sha256: str | None
    caption: str | None
    prompt: str | None
    options: dict[str, Any] | None
    seed: int | None
    lang: str
    reply_context: dict[str, Any]
    cache_key: str | None
    reason: str | None
    queue_wait_s: float | None
    caption_s: float | None
    sound_s: float | None
    encode_s: float | None
    total_s: float | None
    duration_s: float | None
    cache_hit: bool
    batch_size: int | None
    files: dict[str, str] | None
    started_at: float | None
    finished_at: float | None
    source: dict[str, Any] | None
    delivery: Delivery | None
    score: float | None
    worker: str | None
    attempts: int
    fair_round: int | None
    rider_of: str | None
    input_kind: InputKind | None
    output_kind: OutputKind | None
    input_seconds: float | None
    sound_fit: SoundFit | None
