"""What an adapter hands to the job engine: one user's request, and the receipt for it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from core.config import MIN_SECONDS, GenerationConfig
from core.intake.decode import DecodedImage
from core.options import GenerationOptions
from core.records import Platform, RequestRecord, SourceKind

if TYPE_CHECKING:  # PyAV is loaded where moving pictures are decoded, not by every importer
    from core.intake.moving import MovingPicture


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

    A moving picture (`image.moving`) may come with a `caption` or a `prompt` ("Another
    take", "Use my words" on a video): the text is the sound's, the video is what the sound
    is muxed into. `video_cap_bytes` is the largest MP4 the platform takes back (None: any).
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
    video_cap_bytes: int | None = None
    # The chat's own hourly limit per member, set by its admins (core/settings): it only
    # narrows `[jobs] per_user_per_hour`, never widens it. None: the config's applies.
    per_hour: int | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.image, self.caption, self.prompt))
        if self.video is not None and given == 2:
            given = 1  # a video to mux into, with the text of its sound
        if given > 1 or (given == 0 and self.source is None):
            raise ValueError("JobRequest needs exactly one of image, caption or prompt, "
                             "or a source to fetch the picture from")

    @property
    def video(self) -> MovingPicture | None:
        """The moving picture the answer is made from, if this is one."""
        # A `MovingPicture` by construction (`core.intake.moving.as_decoded_image`).
        return cast("MovingPicture | None", self.image.moving if self.image else None)

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


VIDEO_FORMAT = "mp4"  # the key of the answer MP4 among a clip's cached files


def video_seconds(clip_seconds: float, generation: GenerationConfig) -> float:
    """The sound's length for a clip this long."""
    seconds = math.ceil(clip_seconds * 10 - 1e-6) / 10
    return min(max(seconds, MIN_SECONDS), generation.max_seconds)


# Where a request's cap on the MP4 it gets back travels in its row (read back on a restart).
VIDEO_CAP_KEY = "video_cap_bytes"


def video_cap(record: RequestRecord) -> int | None:
    cap = (record.reply_context or {}).get(VIDEO_CAP_KEY)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else None


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
