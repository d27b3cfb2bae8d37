"""What the Telegram bot does with each update: intake, submit, buttons, commands."""

from __future__ import annotations

import contextlib
import logging

from telegram import Chat, ForceReply, InputFile, Message, Update, User
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest as TgBadRequest
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.common.options import options_from_words
from bot.common.requests import Requester, refuse
from bot.common.tasks import BackgroundTasks
from bot.telegram.parse import (
    WORDS_REF,
    ImageRef,
    check_file,
    command_words,
    find_image,
    mentions,
    words_ref,
)
from bot.telegram.replies import ReplyTarget, Responder, with_retry
from core.errors import GenerationFailed, ImageRejected, UserFacingError
from core.i18n import describe_error, pick_language, t
from core.intake.decode import DecodedImage, decode_image_async
from core.jobs.events import JobHandle
from core.jobs.request import JobRequest
from core.options import GenerationOptions
from core.services import Services
from core.storage.request_log import RequestRecord

logger = logging.getLogger(__name__)

PLATFORM = "telegram"
Context = ContextTypes.DEFAULT_TYPE
WORDS_MAX_CHARS = 300


class Handlers:
    """Update handlers for one bot; every job goes through `services.engine`."""

    def __init__(self, services: Services, responder: Responder) -> None:
        self.services = services
        self.engine = services.engine
        self.config = services.config
        self.reply = responder
        self.bot_id = 0
        self.username = ""
        self.tasks = BackgroundTasks(PLATFORM)

    # -- helpers ---------------------------------------------------------------------
    @property
    def download_limit(self) -> int:
        telegram_limit = int(self.config.telegram.download_limit_mb * 1_000_000)
        return min(telegram_limit, self.config.images.max_bytes)

    def allowed(self, chat: Chat | None) -> bool:
        allow = self.config.telegram.allowed_chats
        return chat is not None and (not allow or chat.id in allow)

    @staticmethod
    def target_for(message: Message, user: User, lang: str) -> ReplyTarget:
        thread = message.message_thread_id if message.is_topic_message else None
        return ReplyTarget(chat_id=message.chat_id, message_id=message.message_id,
                           user_id=user.id, lang=lang, thread_id=thread)

    def replies_to_bot(self, message: Message) -> bool:
        reply = message.reply_to_message
        return bool(reply and reply.from_user and reply.from_user.id == self.bot_id)

    def requester(self, target: ReplyTarget) -> Requester:
        return Requester(PLATFORM, user_id=str(target.user_id), chat_id=str(target.chat_id),
                         lang=target.lang, is_admin=target.user_id in self.config.telegram.admins)

    async def reject(self, target: ReplyTarget, source_kind: str, error: UserFacingError) -> None:
        """Log a refused request, then tell the user why."""
        await refuse(self.engine, self.requester(target), source_kind, error)
        await self.reply.reply_error(target, error)

    # -- messages --------------------------------------------------------------------
    async def on_message(self, update: Update, context: Context) -> None:
        """Photos, image files and links; in groups only when the bot is addressed."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = pick_language(user.language_code)
        asked = message.reply_to_message
        if message.text and asked is not None and self.replies_to_bot(message):
            ref = words_ref(asked.text)
            if ref is not None:
                await self.on_words(message, user, lang, ref)
                return
        private = message.chat.type == ChatType.PRIVATE
        cmd, at, words = command_words(message.caption)
        caption_cmd = cmd == "sonify" and (at is None or at.lower() == self.username.lower())
        mentioned = mentions(message, self.username, self.bot_id)
        addressed = private or caption_cmd or mentioned or self.replies_to_bot(message)
        image = find_image(message)
        if not addressed:
            answers_all = self.config.telegram.group_photos
            if not (answers_all and image is not None and image.kind != "url"):
                return  # a busy group: only answer when asked
        if image is None and not self.replies_to_bot(message):
            image = find_image(message.reply_to_message)  # "@bot 8s" as a reply to a picture
        target = self.target_for(message, user, lang)
        if image is None:
            if not (private or caption_cmd or mentioned):
                return  # a group reply to the bot without a picture ("thanks!") is chat
            key = "error.no_image" if private else "no_image_in_reply"
            await self.reply.try_send_text(target, t(key, lang))
            return
        if not caption_cmd:
            words = (message.caption or message.text or "").split()
        await self.intake(message, user, image, words, lang, strict=caption_cmd)

    async def on_sonify(self, update: Update, context: Context) -> None:
        """`/sonify [options] [link]`, alone or as a reply to a message with a picture."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = pick_language(user.language_code)
        image = find_image(message) or find_image(message.reply_to_message)
        if image is None:
            await self.reply.try_send_text(self.target_for(message, user, lang),
                                           t("no_image_in_reply", lang))
            return
        await self.intake(message, user, image, list(context.args or []), lang, strict=True)

    async def intake(self, message: Message, user: User, image: ImageRef, words: list[str],
                     lang: str, *, strict: bool) -> None:
        """Options, download, decode, submit; every refusal is logged and explained."""
        target = self.target_for(message, user, lang)
        await self.reply.action(target.chat_id, ChatAction.RECORD_VOICE)
        try:
            asked = options_from_words(words, self.config.generation, strict=strict)
            decoded = await self.load(image)
        except UserFacingError as exc:
            await self.reject(target, image.kind, exc)
            return
        await self.submit(target, self.requester(target).job(
            source_kind=image.kind, options=asked.options, image=decoded, seed=asked.seed))

    async def load(self, image: ImageRef) -> DecodedImage:
        """Fetch a link through the SSRF-safe fetcher, or download a Telegram file."""
        if image.kind == "url":
            return await self.services.fetcher.fetch_image(image.url)
        limit = self.download_limit
        check_file(image, limit)
        try:
            file = await with_retry(lambda: self.reply.bot.get_file(image.file_id),
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
        return await decode_image_async(bytes(data), self.config.images)

    async def submit(self, target: ReplyTarget, request: JobRequest) -> None:
        """Show the status reply, submit the job (its row holds where to answer), follow it."""
        shown = t("queued", target.lang, position=self.engine.queue_length() + 1)
        status = await self.reply.try_send_text(target, shown)
        if status is not None:
            target.status_message_id = status.message_id
        # "mode" tells "Another take" whether to reuse the caption or the user's own words.
        mode = "prompt" if request.prompt is not None else "caption"
        request.reply_context = {**target.to_context(), "mode": mode}
        try:
            handle = await self.engine.submit(request)
        except UserFacingError as exc:
            await self.reply.reply_error(target, exc)  # the engine has logged the refusal
            return
        self.tasks.spawn(self.reply.follow(handle, target, shown), handle)

    async def on_recovered(self, handle: JobHandle) -> None:
        """A job re-run after a restart: answer it where the first process would have."""
        target = ReplyTarget.from_context(handle.request.reply_context)
        if target is None or not target.chat_id:
            logger.warning("telegram: recovered request %s has no reply context", handle.id)
            return
        self.tasks.spawn(self.reply.follow(handle, target), handle)

    # -- buttons and "Use my words" --------------------------------------------------
    async def owned_record(self, request_id: str, user_id: int) -> tuple[RequestRecord | None,
                                                                        str | None]:
        """The stored request behind a button, or the i18n key explaining why not."""
        record = await self.engine.get_request(request_id)
        if record is None or record.platform != PLATFORM or not (record.caption or
                                                                 record.prompt):
            return None, "expired"
        if str(record.user_id) != str(user_id):
            return None, "not_yours"
        return record, None

    async def on_button(self, update: Update, context: Context) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None or not query.data:
            return
        if not self.allowed(update.effective_chat):
            # An answer from before the allow-list narrowed: stop the spinner, do nothing.
            await with_retry(query.answer, what="answerCallbackQuery")
            return
        lang = pick_language(user.language_code)
        action, _, request_id = query.data.partition(":")
        record, problem = await self.owned_record(request_id, user.id)
        if record is None:
            await with_retry(lambda: query.answer(t(problem or "expired", lang),
                                                  show_alert=True), what="answerCallbackQuery")
            return
        await with_retry(query.answer, what="answerCallbackQuery")
        chat_id = query.message.chat.id if query.message else int(record.chat_id)
        original = record.reply_context.get("message_id")
        if original is None and query.message is not None:
            original = query.message.message_id
        thread = record.reply_context.get("thread_id")
        target = ReplyTarget(chat_id=chat_id, message_id=original, user_id=user.id, lang=lang,
                             thread_id=thread)
        if action == "words":
            # The question carries the request id, so the answer needs no server-side state.
            text = f"{t('ask_words', lang)}\n\n{WORDS_REF} {request_id}"
            placeholder = t("words_placeholder", lang)[:64]
            await self.reply.try_send_text(target, text, reply_markup=ForceReply(
                selective=True, input_field_placeholder=placeholder))
            return
        options = record.generation_options or GenerationOptions.from_config(
            self.config.generation)
        words = record.reply_context.get("mode") == "prompt" or not record.caption
        await self.reply.action(chat_id, ChatAction.RECORD_VOICE)
        await self.submit(target, self.requester(target).job(
            source_kind="retake", options=options,
            caption=None if words else record.caption, prompt=record.prompt if words else None))

    async def on_words(self, message: Message, user: User, lang: str, request_id: str) -> None:
        """The user's own description, sent as a reply to the "Use my words" question."""
        target = self.target_for(message, user, lang)
        record, problem = await self.owned_record(request_id, user.id)
        if record is None:
            await self.reply.try_send_text(target, t(problem or "expired", lang))
            return
        prompt = " ".join((message.text or "").split())[:WORDS_MAX_CHARS]
        if not prompt:
            await self.reply.try_send_text(target, t("ask_words", lang))
            return
        options = record.generation_options or GenerationOptions.from_config(
            self.config.generation)
        await self.reply.action(target.chat_id, ChatAction.RECORD_VOICE)
        await self.submit(target, self.requester(target).job(
            source_kind="text", options=options, prompt=prompt))

    # -- commands --------------------------------------------------------------------
    async def on_help(self, update: Update, context: Context) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = pick_language(user.language_code)
        text = t("help", lang, max_seconds=self.config.generation.max_seconds,
                 max_mb=self.download_limit / 1_000_000,
                 per_hour=self.config.jobs.per_user_per_hour)
        await self.reply.try_send_text(self.target_for(message, user, lang), text)

    async def on_stats(self, update: Update, context: Context) -> None:
        """Admins get the stats text and chart; anyone else a refusal that reveals nothing."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = pick_language(user.language_code)
        target = self.target_for(message, user, lang)
        if user.id not in self.config.telegram.admins:
            await self.reply.try_send_text(target, t("stats_denied", lang))
            return
        text, png = await self.services.stats_report(lang)
        await self.reply.send_text(target, text)
        await with_retry(lambda: self.reply.bot.send_photo(
            target.chat_id, InputFile(png, filename="stats.png"), reply_parameters=target.reply,
            message_thread_id=target.thread_id), what="sendPhoto")

    async def on_error(self, update: object, context: Context) -> None:
        """PTB's error handler: log it, and tell the user in plain words (never a traceback)."""
        logger.error("telegram: handling an update failed", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_user is None:
            return
        lang = pick_language(update.effective_user.language_code)
        error = context.error or GenerationFailed("unknown")
        if update.callback_query is not None:
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer(describe_error(error, lang), show_alert=True)
            return
        message = update.effective_message
        if message is not None:
            await self.reply.reply_error(self.target_for(message, update.effective_user, lang),
                                         error)
