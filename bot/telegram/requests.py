"""The Telegram request path: who asks, where the picture is, and taking a request.

Shared by the update handlers and by recovery after a restart: a request is recorded
(`RequestFlow.take`) before anything is shown, and its picture — a Telegram file id or a
link, stored with the row — is fetched afterwards, again after a restart if need be.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from telegram import User
from telegram.error import BadRequest as TgBadRequest
from telegram.error import TelegramError

from bot.common.flow import FlowSettings, RequestFlow
from bot.common.requests import Requester, refuse
from bot.common.tasks import BackgroundTasks
from bot.telegram.parse import ImageRef, check_file, is_moving
from bot.telegram.replies import ReplyAddress, Responder, TelegramAnswerTarget, with_retry
from core.errors import GenerationFailed, ImageRejected, UserFacingError
from core.i18n import pick_language
from core.intake.decode import DecodedImage
from core.intake.moving import decode_upload_async
from core.jobs.events import JobHandle
from core.jobs.request import JobRequest, Receipt, received_request
from core.records import Platform, RequestRecord, SourceKind
from core.services import Services

logger = logging.getLogger(__name__)

PLATFORM = Platform.TELEGRAM


def update_key(update_id: int) -> str:
    """The dedupe key of a Telegram update: redelivered, it finds its row."""
    return f"{PLATFORM}:update:{update_id}"


def source_of(ref: ImageRef) -> dict[str, Any]:
    """Where a message's picture is, in a form the row can keep (no URLs with the token)."""
    if ref.kind == "url":
        return {"kind": "url", "url": ref.url}
    return {"kind": "telegram_file", "file_id": ref.file_id, "file_size": ref.file_size,
            "mime_type": ref.mime_type, "file_name": ref.file_name, "ref_kind": ref.kind}


class TelegramRequests:
    """Takes requests for one bot and carries them on to their answers."""

    def __init__(self, services: Services, responder: Responder) -> None:
        self.services = services
        self.engine = services.engine
        self.config = services.config
        self.reply = responder
        self.settings = services.chat_settings  # what chat admins set with /settings
        responder.style_of = lambda chat_id: self.settings.get(PLATFORM, chat_id, "reply_style")
        self.tasks = BackgroundTasks(PLATFORM)
        self.flow = RequestFlow(self.engine, self.tasks, FlowSettings(
            interval=self.config.telegram.progress_interval_s, fetch=self.fetch,
            delivered=partial(services.ops.metrics.observe_stage, "delivery")))

    @property
    def telegram_limit(self) -> int:
        """What getFile hands a bot."""
        return int(self.config.telegram.download_limit_mb * 1_000_000)

    @property
    def download_limit(self) -> int:
        return min(self.telegram_limit, self.config.images.max_bytes)

    def limit_for(self, ref: ImageRef) -> int:
        """The largest file of this kind the bot downloads."""
        if is_moving(ref):
            return min(self.telegram_limit, self.config.video.max_bytes)
        return self.download_limit

    def requester(self, target: ReplyAddress, user: User | None = None) -> Requester:
        name = None
        if user is not None:
            name = f"@{user.username}" if user.username else user.full_name
        return Requester(PLATFORM, user_id=str(target.user_id), chat_id=str(target.chat_id),
                         lang=target.lang, is_admin=target.user_id in self.config.telegram.admins,
                         pushes_answers=True, user_name=(name or None) and name[:64],
                         video_cap_bytes=int(self.config.telegram.upload_limit_mb * 1_000_000),
                         per_hour=self.settings.get(PLATFORM, target.chat_id, "per_hour"))

    # ----- what the chat's admins set (core/settings): memory only -----------------------
    def lang_for(self, user: User, chat_id: int, private: bool) -> str:
        """In a private chat the user's own choice wins; in a group, the group's language
        stands in where the user's is unknown."""
        chosen = self.settings.get(PLATFORM, chat_id, "language")
        if chosen and (private or not user.language_code):
            return str(chosen)
        return pick_language(user.language_code)

    def group_photos(self, chat_id: int) -> bool:
        """Every photo in the group is answered (the group's setting, else the config's)."""
        chosen = self.settings.get(PLATFORM, chat_id, "group_photos")
        return self.config.telegram.group_photos if chosen is None else bool(chosen)

    def enabled(self, chat_id: int) -> bool:
        return self.settings.get(PLATFORM, chat_id, "enabled") is not False

    def default_seconds(self, chat_id: int) -> float | None:
        value = self.settings.get(PLATFORM, chat_id, "seconds")
        return None if value is None else float(value)

    async def take(self, request: JobRequest, target: ReplyAddress) -> None:
        """Record the request (the durable point), then answer it in the background.

        A refusal is told at once (the engine logged it). StorageUnavailable propagates:
        the update was not recorded, so it must not be confirmed to Telegram.
        """
        try:
            await self.flow.take(request, TelegramAnswerTarget(self.reply, target))
        except UserFacingError as exc:
            await self.reply.reply_error(target, exc)

    async def refuse(self, target: ReplyAddress, user: User | None, source_kind: SourceKind,
                     error: UserFacingError, dedupe_key: str | None) -> None:
        """A request refused before it was recorded: logged, then told (once per update)."""
        if await refuse(self.engine, self.requester(target, user), source_kind, error,
                        dedupe_key=dedupe_key):
            await self.reply.reply_error(target, error)

    async def fetch(self, source: dict[str, Any]) -> DecodedImage:
        """A recorded request's picture: a Telegram file, or a link (SSRF-safe fetcher)."""
        metrics = self.services.ops.metrics
        with metrics.stage("fetch"):
            data = await self._download(source)
        with metrics.stage("decode"):
            return await decode_upload_async(
                data, self.config.images, self.config.video, max_bytes=self.telegram_limit,
                animation=source.get("ref_kind") == "animation")

    async def _download(self, source: dict[str, Any]) -> bytes:
        if source.get("kind") == "url":
            return await self.services.fetcher.fetch(
                str(source["url"]), max_bytes=max(self.config.images.max_bytes,
                                                  self.config.video.max_bytes))
        ref = ImageRef(SourceKind(source.get("ref_kind") or SourceKind.DOCUMENT),
                       file_id=str(source["file_id"]), file_size=source.get("file_size"),
                       mime_type=source.get("mime_type"), file_name=source.get("file_name"))
        limit = self.limit_for(ref)
        check_file(ref, limit)
        try:
            file = await with_retry(lambda: self.reply.bot.get_file(str(source["file_id"])),
                                    what="getFile")
            if file.file_size is not None and file.file_size > limit:
                raise ImageRejected("file too large", code="too_large", max_bytes=limit)
            data = await with_retry(file.download_as_bytearray, what="file download")
        except TgBadRequest as exc:
            if "too big" in str(exc).lower():
                raise ImageRejected("file too large", code="too_large", max_bytes=limit) from None
            raise GenerationFailed(f"download refused: {exc}") from None
        except TelegramError as exc:
            raise GenerationFailed(f"download failed: {exc}") from None
        if len(data) > limit:
            raise ImageRejected("file too large", code="too_large", max_bytes=limit)
        return bytes(data)

    # -- after a restart -------------------------------------------------------------
    async def on_received(self, record: RequestRecord, receipt: Receipt) -> None:
        """A request recorded before a restart whose picture was not fetched yet."""
        target = ReplyAddress.from_context(record.reply_context)
        await self.flow.resume(received_request(record), receipt,
                               TelegramAnswerTarget(self.reply, target) if target else None)

    async def on_recovered(self, handle: JobHandle) -> None:
        """A job re-run (or finished, not yet delivered) after a restart: answer it there."""
        target = ReplyAddress.from_context(handle.request.reply_context)
        if target is None or not target.chat_id:
            logger.warning("telegram: recovered request %s has no reply context", handle.id)
            return
        self.flow.answer_recovered(handle, TelegramAnswerTarget(self.reply, target))
