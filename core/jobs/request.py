"""What an adapter hands to the job engine: one user's request, and the receipt for it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.intake.decode import DecodedImage
from core.options import GenerationOptions
from core.records import Platform, RequestRecord, SourceKind


@dataclass
class JobRequest:
    """One request from one user: what to render, or where the picture still is.

    Exactly one of `image`, `caption` or `prompt` is set — or none of them and a `source`,
    for a picture that is fetched after the request is recorded (see `JobEngine.receive`):

    - `image`: caption it, then turn the caption into a prompt with the template.
    - `caption`: skip captioning ("Another take" reuses the stored caption).
    - `prompt`: use as the sound prompt verbatim ("Use my words").
    - `source`: JSON-safe directions to the picture (a platform file id, a link), stored
      with the row so that the picture can be fetched again after a restart.
    """

    platform: Platform
    user_id: str
    chat_id: str
    source_kind: SourceKind
    options: GenerationOptions
    image: DecodedImage | None = None
    caption: str | None = None
    prompt: str | None = None
    seed: int | None = None  # None: the engine draws one (and logs it)
    is_admin: bool = False
    lang: str = "en"
    # JSON-safe data the adapter needs to answer this job after a restart
    # (chat/message ids). Stored with the request row; never credentials.
    reply_context: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    # The platform's id of what asked (an update, a message's n-th picture): the same
    # key arriving again is the same request, answered once.
    dedupe_key: str | None = None
    # The adapter pushes the answer (a chat message) rather than having it fetched (the
    # web page), so the row tracks it: owed, sending, sent.
    answer_owed: bool = False
    user_name: str | None = None  # shown to admins in the statistics, where known
    # The second (third…) picture of one message: the message counts once against the
    # per-user limit of jobs at once, so its pictures are not refused as "in progress".
    extra_picture: bool = False
    # The chat's own hourly limit per member, set by its admins (core/settings): it only
    # narrows `[jobs] per_user_per_hour`, never widens it. None: the config's applies.
    per_hour: int | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.image, self.caption, self.prompt))
        if given > 1 or (given == 0 and self.source is None):
            raise ValueError("JobRequest needs exactly one of image, caption or prompt, "
                             "or a source to fetch the picture from")

    @property
    def content_at_hand(self) -> bool:
        """True when nothing needs fetching before the job can be queued."""
        return any(x is not None for x in (self.image, self.caption, self.prompt))

    def with_image(self, image: DecodedImage) -> JobRequest:
        """This request once its picture has been fetched and decoded."""
        return dataclasses.replace(self, image=image)


@dataclass(frozen=True)
class Receipt:
    """A recorded request: its row exists, so it will be answered even after a crash.

    `duplicate` means the platform delivered the same update again: the first delivery's
    row (`id`) is answered already, or will be after a restart; do nothing more.
    """

    id: str
    created_at: float
    seed: int  # drawn at receipt when the user gave none, so a retry renders the same
    duplicate: bool = False


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
                      user_name=record.user_name)
