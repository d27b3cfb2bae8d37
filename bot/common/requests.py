"""Who is asking, and the one rule for refusing a request.

Every request — accepted or refused — is a row in the request log. The engine writes
the row for every refusal it raises itself (bad options, limits, a full queue, a
stop); `refuse` writes it for the refusals an adapter makes before there is a job (a
picture that cannot be read, a command without a picture). Either way the adapter
then shows the catalogue's text for the error, in the user's language.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.errors import DuplicateRequest, StorageUnavailable, UserFacingError
from core.intake.decode import DecodedImage
from core.jobs.contract import JobEngine
from core.jobs.request import JobRequest
from core.options import GenerationOptions
from core.records import Platform, SourceKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """One user of one platform, in one chat, in one language.

    `pushes_answers`: the platform posts answers (a chat), so each request's row tracks
    its answer until it is sent; the web page's answers are fetched instead.
    """

    platform: Platform
    user_id: str
    chat_id: str
    lang: str = "en"
    is_admin: bool = False
    pushes_answers: bool = False
    user_name: str | None = None
    video_cap_bytes: int | None = None  # the largest MP4 this platform takes back
    per_hour: int | None = None  # the chat's own hourly limit (core/settings), if narrower

    def job(self, *, source_kind: SourceKind, options: GenerationOptions,
            image: DecodedImage | None = None, caption: str | None = None,
            prompt: str | None = None, seed: int | None = None,
            source: dict[str, Any] | None = None, dedupe_key: str | None = None,
            reply_context: dict[str, Any] | None = None) -> JobRequest:
        """A `JobRequest` from this user: one of image, caption, prompt, or a source."""
        return JobRequest(platform=self.platform, user_id=self.user_id, chat_id=self.chat_id,
                          source_kind=source_kind, options=options, image=image,
                          caption=caption, prompt=prompt, seed=seed, is_admin=self.is_admin,
                          lang=self.lang, reply_context=dict(reply_context or {}),
                          source=source, dedupe_key=dedupe_key,
                          answer_owed=self.pushes_answers, user_name=self.user_name,
                          video_cap_bytes=self.video_cap_bytes,
                          per_hour=self.per_hour)


async def refuse(engine: JobEngine, requester: Requester, source_kind: SourceKind,
                 error: UserFacingError, *, dedupe_key: str | None = None) -> bool:
    """Log a request the adapter refused before anything was recorded (never raises).

    False when `dedupe_key` was refused before: the user was told then, so stay silent.
    """
    try:
        await engine.reject(platform=requester.platform, user_id=requester.user_id,
                            chat_id=requester.chat_id, source_kind=source_kind, error=error,
                            lang=requester.lang, dedupe_key=dedupe_key)
    except DuplicateRequest:
        return False
    except StorageUnavailable as exc:  # the request log is away (said once): still tell them
        logger.info("%s: a refused request was not logged (%s)", requester.platform, exc)
    except Exception:  # the refusal itself must still reach the user
        logger.exception("%s: could not log a refused request", requester.platform)
    return True
