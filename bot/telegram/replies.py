"""Everything the Telegram adapter sends: retries, the live status message, results, errors."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.common.answers import VIDEO_FILE, video_notes, video_of
from bot.common.following import SlowDown
from core.config import TelegramConfig
from core.i18n import describe_error, t
from core.jobs.events import JobEvent, JobResult, Progress, Started

logger = logging.getLogger(__name__)

T = TypeVar("T")

SEND_ATTEMPTS = 5
MAX_RETRY_WAIT_S = 60.0
CAPTION_LIMIT = 1024  # Telegram's limit for media captions
ACTION_RENEW_S = 4.5  # a chat action shows for about 5 s


@dataclass
class ReplyAddress:
    """Where the answer to one request goes; stored as `JobRequest.reply_context`."""

    chat_id: int
    user_id: int
    message_id: int | None = None  # the user's message the answer replies to
    lang: str = "en"
    status_message_id: int | None = None
    thread_id: int | None = None

    def to_context(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_context(cls, data: dict[str, Any]) -> ReplyAddress | None:
        known = {k: data[k] for k in cls.__dataclass_fields__ if data.get(k) is not None}
        try:
            return cls(**known)
        except TypeError:  # no chat or user: nowhere to answer
            return None

    @property
    def reply(self) -> ReplyParameters | None:
        if self.message_id is None:
            return None
        # The user may have deleted their message meanwhile: answer anyway.
        return ReplyParameters(message_id=self.message_id, allow_sending_without_reply=True)


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the int form will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def with_retry(call: Callable[[], Awaitable[T]], *, what: str,
                     attempts: int = SEND_ATTEMPTS) -> T:
    """Run one Bot API call, retrying on 429 (after retry_after) and on network errors."""
    delay = 0.5
    for attempt in range(1, attempts):
        try:
            return await call()
        except RetryAfter as exc:
            wait = retry_after_seconds(exc)
            reason = f"flood control ({wait:g} s)"
        except BadRequest:
            raise  # our request is wrong: repeating it cannot help
        except NetworkError as exc:
            wait, delay = delay, delay * 2
            reason = f"network error ({type(exc).__name__})"
        logger.warning("telegram %s: %s; retry %d/%d in %.1f s", what, reason, attempt,
                    attempts - 1, wait)
        await asyncio.sleep(min(wait, MAX_RETRY_WAIT_S))
    return await call()  # last attempt: let its error propagate


class StatusLine:
    """The "Queued / Rendering…" message of one request: edited, then removed or replaced."""

    def __init__(self, bot: Bot, target: ReplyAddress) -> None:
        self.bot, self.target = bot, target

    async def show(self, text: str) -> None:
        """Show `text` in it (ThrottledStatus paces the changes); a 429 asks it to slow down."""
        if self.target.status_message_id is None:
            return
        try:
            await self.bot.edit_message_text(text, chat_id=self.target.chat_id,
                                             message_id=self.target.status_message_id)
        except RetryAfter as exc:
            # Progress is best-effort: wait it out instead of queueing more calls.
            raise SlowDown(retry_after_seconds(exc)) from None

    async def finish(self, final_text: str) -> None:
        """Remove the status message; if that is refused, turn it into `final_text`."""
        mid = self.target.status_message_id
        if mid is None:
            return
        try:
            await with_retry(lambda: self.bot.delete_message(self.target.chat_id, mid),
                             what="deleteMessage", attempts=2)
        except TelegramError:
            await self.replace(final_text)

    async def replace(self, text: str) -> bool:
        """Turn the status message into a final text; False if it cannot be edited."""
        mid = self.target.status_message_id
        if mid is None:
            return False
        try:
            await with_retry(lambda: self.bot.edit_message_text(
                text, chat_id=self.target.chat_id, message_id=mid), what="editMessageText")
        except BadRequest as exc:
            return "not modified" in str(exc).lower()
        except TelegramError:
            return False
        return True


def answer_keyboard(request_id: str, lang: str) -> InlineKeyboardMarkup:
    """ "Another take" and "Use my words"; callback data carries only the request id."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(t("another_take", lang), callback_data=f"again:{request_id}"),
        InlineKeyboardButton(t("use_my_words", lang), callback_data=f"words:{request_id}"),
    ]])


class Responder:
    """Sends replies for one bot; no method here raises to its caller except `send_text`."""

    def __init__(self, bot: Bot, settings: TelegramConfig) -> None:
        self.bot, self.settings = bot, settings
        # A chat's own reply style (set with /settings), else None: the config's `send_as`.
        self.style_of: Callable[[int], str | None] = lambda chat_id: None

    async def send_text(self, target: ReplyAddress, text: str, **kwargs: Any) -> Message:
        return await with_retry(lambda: self.bot.send_message(
            target.chat_id, text, reply_parameters=target.reply,
            message_thread_id=target.thread_id, **kwargs), what="sendMessage")

    async def try_send_text(self, target: ReplyAddress, text: str, **kwargs: Any) -> Message | None:
        try:
            return await self.send_text(target, text, **kwargs)
        except TelegramError as exc:
            logger.warning("telegram: could not send a reply to chat %s: %s", target.chat_id, exc)
            return None

    async def action(self, chat_id: int, action: str) -> None:
        """Show "recording voice…"; purely cosmetic, so one try only."""
        try:
            await self.bot.send_chat_action(chat_id, action)
        except TelegramError as exc:
            logger.debug("telegram: chat action failed: %s", exc)

    async def reply_error(self, target: ReplyAddress, error: BaseException) -> None:
        """THE place where a failure becomes words: the status message, else a new reply."""
        text = describe_error(error, target.lang)
        if not await StatusLine(self.bot, target).replace(text):
            await self.try_send_text(target, text)

    async def deliver(self, result: JobResult, target: ReplyAddress) -> None:
        """The clip as a voice note (and/or MP3), captioned, with the two buttons."""
        lang = target.lang
        caption = t("caption", lang, caption=result.caption or result.prompt)
        if result.cache_hit:
            caption = f"{caption} {t('cached', lang)}"
        caption = "\n".join([caption, *video_notes(result, lang)])[:CAPTION_LIMIT]
        markup: InlineKeyboardMarkup | None = answer_keyboard(result.request_id, lang)
        duration = max(1, round(result.duration_s))
        if video_of(result):
            # sendVideo, not sendAnimation: Telegram plays animations without their sound.
            mp4 = result.files[VIDEO_FILE].read_bytes()
            await self.action(target.chat_id, ChatAction.UPLOAD_VIDEO)
            await with_retry(lambda: self.bot.send_video(
                target.chat_id, InputFile(mp4, filename="sonify.mp4"), caption=caption,
                duration=max(1, round(result.input_seconds or result.duration_s)),
                supports_streaming=True, reply_parameters=target.reply, reply_markup=markup,
                message_thread_id=target.thread_id), what="sendVideo")
            return
        await self.action(target.chat_id, ChatAction.UPLOAD_VOICE)
        send_as = self.style_of(target.chat_id) or self.settings.send_as
        if send_as in ("voice", "both"):
            # Voice notes are mono: a stereo clip comes with a mono OGG/Opus of its own.
            ogg = result.files.get("voice", result.audio_path("ogg")).read_bytes()
            try:
                await with_retry(lambda: self.bot.send_voice(
                    target.chat_id, InputFile(ogg, filename="sonify.ogg"), duration=duration,
                    caption=caption, reply_parameters=target.reply, reply_markup=markup,
                    message_thread_id=target.thread_id), what="sendVoice")
                markup = None
            except (BadRequest, Forbidden) as exc:
                # Users can refuse voice notes (privacy setting): fall back to an audio file.
                if "voice" not in str(exc).lower():
                    raise
                logger.info("telegram: voice notes refused in chat %s; sending audio",
                         target.chat_id)
                send_as = "audio"
        if send_as in ("audio", "both"):
            mp3 = result.audio_path("mp3").read_bytes()
            await with_retry(lambda: self.bot.send_audio(
                target.chat_id, InputFile(mp3, filename="sonify.mp3"), duration=duration,
                caption=caption, title=(result.caption or result.prompt)[:64],
                performer="Sonify", reply_parameters=target.reply, reply_markup=markup,
                message_thread_id=target.thread_id), what="sendAudio")


class TelegramAnswerTarget:
    """One request's status line and answer in a Telegram chat (a `bot.common` AnswerTarget).

    Telegram shows "recording voice…" for about 5 s: it is renewed while the job renders.
    """

    def __init__(self, responder: Responder, target: ReplyAddress) -> None:
        self.responder, self.target, self.lang = responder, target, target.lang
        self.status = StatusLine(responder.bot, target)
        self.last_action = time.monotonic()

    async def announce(self, text: str) -> dict[str, Any]:
        if self.target.status_message_id is not None:  # shown before a restart: reuse it
            await self.status.replace(text)
            return {}
        await self.responder.action(self.target.chat_id, ChatAction.RECORD_VOICE)
        self.last_action = time.monotonic()
        message = await self.responder.try_send_text(self.target, text)
        if message is None:
            return {}
        self.target.status_message_id = message.message_id
        return {"status_message_id": message.message_id}

    async def on_event(self, event: JobEvent) -> None:
        if isinstance(event, Started | Progress) and \
                time.monotonic() - self.last_action >= ACTION_RENEW_S:
            self.last_action = time.monotonic()
            await self.responder.action(self.target.chat_id, ChatAction.RECORD_VOICE)

    async def show(self, text: str) -> None:
        await self.status.show(text)

    async def deliver(self, result: JobResult) -> None:
        await self.responder.deliver(result, self.target)
        await self.status.finish(t("done", self.lang, caption=result.caption))

    async def apologise(self, error: BaseException) -> None:
        await self.responder.reply_error(self.target, error)

    def gave_up(self, error: BaseException) -> bool:
        return False  # reply_error tries the status message, then a new message
