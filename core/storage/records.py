"""One row of the request log, as the rest of the program sees it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from core.options import GenerationOptions
from core.storage.tables import UNFINISHED
from core.user_text import storable

logger = logging.getLogger(__name__)


@dataclass
class RequestRecord:
    """One row of the request log."""

    id: str
    platform: str
    user_id: str
    chat_id: str
    source_kind: str
    status: str
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
    delivery: str | None = None
    score: float | None = None
    worker: str | None = None
    attempts: int = 0
    user_name: str | None = None
    fair_round: int | None = None
    rider_of: str | None = None
    times: int = 1  # a refusal row stands for this many refusals (see `record_refusal`)
    input_kind: str | None = None  # photo | animation | video (None: text, or an old row)
    output_kind: str | None = None  # audio | video | audio_only
    input_seconds: float | None = None  # a moving picture's length
    sound_fit: str | None = None  # whole | looped

    @property
    def generation_options(self) -> GenerationOptions | None:
        return GenerationOptions.from_dict(self.options) if self.options else None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    @classmethod
    def from_row(cls, row: Any) -> RequestRecord:
        data = dict(row._mapping)
        data["reply_context"] = data.get("reply_context") or {}
        data["attempts"] = data.get("attempts") or 0
        data["times"] = data.get("times") or 1
        return cls(**data)


RECORD_FIELDS = {f.name for f in fields(RequestRecord)}
_SECRET_WORDS = ("token", "secret", "password", "authorization")
_USER_TEXT = ("caption", "prompt", "user_name")


def without_secrets(context: dict[str, Any]) -> dict[str, Any]:
    """A reply context minus credential-like keys: rows outlive tokens and get copied."""
    kept = {}
    for name, value in context.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            logger.warning("reply_context key %r looks like a credential; not stored", name)
        else:
            kept[name] = value
    return kept


def row_values(record: RequestRecord) -> dict[str, Any]:
    """The columns of `record`'s new row (its reply context without credentials)."""
    values = {f: getattr(record, f) for f in RECORD_FIELDS}
    values["reply_context"] = without_secrets(record.reply_context or {})
    # Text from users: words refused as invalid are still logged, and a platform's user name
    # is not checked at all; neither database can store a lone surrogate (nor PostgreSQL a NUL).
    for name in _USER_TEXT:
        values[name] = storable(values[name])
    return values
