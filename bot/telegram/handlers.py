"""What the Telegram bot does with each update: read it, take the request, buttons, commands.

Every request is recorded before anything is shown (see `TelegramRequests.take`); the
handlers return as soon as it is, so the update can be confirmed to Telegram.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from typing import Any

from telegram import Chat, ForceReply, InputFile, Message, Update, User
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.common.answers import video_to_retake
from bot.common.options import options_from_words, options_of, retakes_words
from bot.telegram.parse import (
    WORDS_REF,
    ImageRef,
    check_file,
    command_words,
    find_image,
    mentions,
    words_ref,
)
from bot.telegram.replies import ReplyAddress, with_retry
from bot.telegram.requests import PLATFORM, TelegramRequests, source_of, update_key
from bot.telegram.settings import SettingsPanel
from core.errors import GenerationFailed, StorageUnavailable, UserFacingError
from core.i18n import describe_error, pick_language, t
from core.records import RequestRecord, SourceKind
from core.user_text import WORDS_MAX_CHARS

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
TOLD_KEPT = 1000  # updates remembered as told "later" (each is told once, not per delivery)


class Handlers:
    """Update handlers for one bot; every request goes through `TelegramRequests`."""

    def __init__(self, requests: TelegramRequests) -> None:
        self.requests = requests
        self.services = requests.services
        self.engine = requests.engine
        self.config = requests.config
        self.reply = requests.reply
        self.panel = SettingsPanel(requests)
        self.bot_id = 0
        self.username = ""
        # Updates whose request could not be recorded: the poller must not confirm them.
        self.unrecorded: set[int] = set()
        self._told_later: OrderedDict[int, None] = OrderedDict()

    async def process(self, app: Application[Any, Any, Any, Any, Any, Any],
                      update: Update) -> bool:
        """Have `app` handle `update`; False when its request could not be recorded, so
        Telegram must not be told it was handled (it sends it again)."""
        await app.process_update(update)
        if update.update_id in self.unrecorded:
            self.unrecorded.discard(update.update_id)
            return False
        return True

    # -- helpers ---------------------------------------------------------------------
    def allowed(self, chat: Chat | None) -> bool:
        allow = self.config.telegram.allowed_chats
        return chat is not None and (not allow or chat.id in allow)

    @staticmethod
    def target_for(message: Message, user: User, lang: str) -> ReplyAddress:
        thread = message.message_thread_id if message.is_topic_message else None
        return ReplyAddress(chat_id=message.chat_id, message_id=message.message_id,
                           user_id=user.id, lang=lang, thread_id=thread)

    def replies_to_bot(self, message: Message) -> bool:
        reply = message.reply_to_message
        return bool(reply and reply.from_user and reply.from_user.id == self.bot_id)

    # -- messages --------------------------------------------------------------------
    async def on_message(self, update: Update, context: Context) -> None:
        """Photos, image files and links; in groups only when the bot is addressed."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        private = message.chat.type == ChatType.PRIVATE
        lang = self.requests.lang_for(user, message.chat_id, private)
        asked = message.reply_to_message
        if message.text and asked is not None and self.replies_to_bot(message):
            ref = words_ref(asked.text)
            if ref is not None:
                await self.on_words(update, message, user, lang, ref)
                return
        cmd, at, words = command_words(message.caption)
        caption_cmd = cmd == "sonify" and (at is None or at.lower() == self.username.lower())
        mentioned = mentions(message, self.username, self.bot_id)
        addressed = private or caption_cmd or mentioned or self.replies_to_bot(message)
        image = find_image(message)
        if not addressed:
            answers_all = self.requests.group_photos(message.chat_id)
            if not (answers_all and image is not None and image.kind != "url"):
                return  # a busy group: only answer when asked
        if not await self.switched_on(message, user):
            return
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
        await self.take_picture(update, message, user, image, words, lang, strict=caption_cmd)

    async def on_sonify(self, update: Update, context: Context) -> None:
        """`/sonify [options] [link]`, alone or as a reply to a message with a picture."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = self.requests.lang_for(user, message.chat_id,
                                      message.chat.type == ChatType.PRIVATE)
        if not await self.switched_on(message, user):
            await self.reply.try_send_text(self.target_for(message, user, lang),
                                           t("error.sonify_off", lang))
            return
        image = find_image(message) or find_image(message.reply_to_message)
        if image is None:
            await self.reply.try_send_text(self.target_for(message, user, lang),
                                           t("no_image_in_reply", lang))
            return
        await self.take_picture(update, message, user, image, list(context.args or []), lang,
                          strict=True)

    async def take_picture(self, update: Update, message: Message, user: User, image: ImageRef,
                     words: list[str], lang: str, *, strict: bool) -> None:
        """Options and the cheap checks, then the request is recorded and taken."""
        target = self.target_for(message, user, lang)
        key = update_key(update.update_id)
        try:
            asked = options_from_words(words, self.config.generation, strict=strict,
                                       default_seconds=self.requests.default_seconds(
                                           message.chat_id))
            if image.kind != "url":
                check_file(image, self.requests.limit_for(image))  # refused before any download
        except UserFacingError as exc:
            await self.requests.refuse(target, user, image.kind, exc, key)
            return
        await self.requests.take(self.requests.requester(target, user).job(
            source_kind=image.kind, options=asked.options, seed=asked.seed,
            source=source_of(image), dedupe_key=key,
            reply_context={**target.to_context(), "mode": "caption"}), target)

    async def switched_on(self, message: Message, user: User) -> bool:
        """Sonify answers here: on in this group, or the one asking is an admin."""
        if message.chat.type == ChatType.PRIVATE or self.requests.enabled(message.chat_id):
            return True
        return await self.panel.may_change(message.chat_id, message.chat.type, user.id)

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
        chat_id = query.message.chat.id if query.message else int(record.chat_id)
        original = record.reply_context.get("message_id")
        if original is None and query.message is not None:
            original = query.message.message_id
        thread = record.reply_context.get("thread_id")
        target = ReplyAddress(chat_id=chat_id, message_id=original, user_id=user.id, lang=lang,
                             thread_id=thread)
        if action == "words":
            await with_retry(query.answer, what="answerCallbackQuery")
            # The question carries the request id, so the answer needs no server-side state.
            text = f"{t('ask_words', lang)}\n\n{WORDS_REF} {request_id}"
            placeholder = t("words_placeholder", lang)[:64]
            await self.reply.try_send_text(target, text, reply_markup=ForceReply(
                selective=True, input_field_placeholder=placeholder))
            return
        options = options_of(record, self.config.generation)
        words = retakes_words(record)
        video = await video_to_retake(self.engine, record, self.config)
        await self.requests.take(self.requests.requester(target, user).job(
            source_kind=SourceKind.RETAKE, options=options, dedupe_key=update_key(update.update_id),
            image=video,
            caption=None if words else record.caption, prompt=record.prompt if words else None,
            reply_context={**target.to_context(), "mode": "prompt" if words else "caption"}),
            target)
        await with_retry(query.answer, what="answerCallbackQuery")  # after the record: see take

    async def on_words(self, update: Update, message: Message, user: User, lang: str,
                       request_id: str) -> None:
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
        options = options_of(record, self.config.generation)
        video = await video_to_retake(self.engine, record, self.config)
        await self.requests.take(self.requests.requester(target, user).job(
            source_kind=SourceKind.TEXT, options=options, prompt=prompt, image=video,
            dedupe_key=update_key(update.update_id),
            reply_context={**target.to_context(), "mode": "prompt"}), target)

    # -- commands --------------------------------------------------------------------
    async def on_help(self, update: Update, context: Context) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        lang = pick_language(user.language_code)
        text = t("help", lang, max_seconds=self.config.generation.max_seconds,
                 max_mb=self.requests.download_limit / 1_000_000,
                 per_hour=self.config.jobs.per_user_per_hour)
        await self.reply.try_send_text(self.target_for(message, user, lang), text)

    async def on_stats(self, update: Update, context: Context) -> None:
        """The config's admins get everything's stats text and chart, a group's admins that
        group's; anyone else a refusal that reveals nothing."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not self.allowed(update.effective_chat):
            return
        chat = message.chat
        lang = self.requests.lang_for(user, chat.id, chat.type == ChatType.PRIVATE)
        target = self.target_for(message, user, lang)
        if user.id in self.config.telegram.admins:
            text, png = await self.services.stats_report(lang)
        elif chat.type != ChatType.PRIVATE and await self.panel.may_change(chat.id, chat.type,
                                                                           user.id):
            text, png = await self.services.stats_report(
                lang, chats=(PLATFORM, [str(chat.id)]), place=chat.title or str(chat.id))
        else:
            await self.reply.try_send_text(target, t("stats_denied", lang))
            return
        await self.reply.send_text(target, text)
        await with_retry(lambda: self.reply.bot.send_photo(
            target.chat_id, InputFile(png, filename="stats.png"), reply_parameters=target.reply,
            message_thread_id=target.thread_id), what="sendPhoto")

    async def tell_later(self, update: Update) -> None:
        """"Not now, soon": once per update, for a request the request log could not take."""
        if update.update_id in self._told_later or update.effective_user is None:
            return
        self._told_later[update.update_id] = None
        while len(self._told_later) > TOLD_KEPT:
            self._told_later.popitem(last=False)
        lang = pick_language(update.effective_user.language_code)
        text = t("unavailable_later", lang)
        if update.callback_query is not None:
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer(text)
        elif update.effective_message is not None:
            await self.reply.try_send_text(
                self.target_for(update.effective_message, update.effective_user, lang), text)

    async def on_error(self, update: object, context: Context) -> None:
        """PTB's error handler: log it, and tell the user in plain words (never a traceback)."""
        if isinstance(context.error, StorageUnavailable):
            # Not recorded, so not taken: Telegram sends the update again (see UpdatePoller),
            # and it is answered then. The user hears so once, not at every delivery.
            if isinstance(update, Update):
                self.unrecorded.add(update.update_id)
                await self.tell_later(update)
            logger.warning("telegram: an update could not be recorded (%s); it will be read "
                           "again", context.error)
            return
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
