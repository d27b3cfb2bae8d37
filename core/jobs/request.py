"""What an adapter hands to the job engine: one user's request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.intake.decode import DecodedImage
from core.options import GenerationOptions


@dataclass
class JobRequest:
    """One request from one user. Exactly one of `image`, `caption` or `prompt` is set.

    - `image`: caption it, then turn the caption into a prompt with the template.
    - `caption`: skip captioning ("Another take" reuses the stored caption).
    - `prompt`: use as the sound prompt verbatim ("Use my words").
    """

    platform: str  # "telegram" | "discord" | "web" | "cli"
    user_id: str
    chat_id: str
    source_kind: str  # "photo" | "document" | "url" | "attachment" | "upload" | "retake" | "text"
    options: GenerationOptions
    image: DecodedImage | None = None
    caption: str | None = None
    prompt: str | None = None
    seed: int | None = None  # None: the engine draws one (and logs it)
    is_admin: bool = False
    lang: str = "en"
    # JSON-safe data the adapter needs to answer this job after a restart
    # (chat/message ids, interaction tokens). Stored with the request row.
    reply_context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.image, self.caption, self.prompt)]
        if sum(given) != 1:
            raise ValueError("JobRequest needs exactly one of image, caption or prompt")
