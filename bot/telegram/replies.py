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

from core.config import TelegramConfig
from core.i18n import describe_error, t
from core.jobs.events import Done, Failed, JobHandle, JobResult, Progress, Queued, Started

logger = logging.getLogger(__name__)

T = TypeVar("T")

SEND_ATTEMPTS = 5
MAX_RETRY_WAIT_S = 60.0
CAPTION_LIMIT = 1024  # Telegram's limit for media captions
ACTION_RENEW_S = 4.5  # a chat action shows for about 5 s


@dataclass
class ReplyTarget:
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
    def from_context(cls, data: dict[str, Any]) -> ReplyTarget | None:
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


class StatusMessage:
    """The "Queued / Rendering…" message: edited when its text changes, at most once per interval.

    A text that arrives too soon is kept and shown when the interval has passed, so the
    last state is never lost; a 429 pushes the next edit past its retry_after.
    """

    def __init__(self, bot: Bot, target: ReplyTarget, interval: float, shown: str = "") -> None:
        self.bot, self.target, self.interval = bot, target, interval
        self.shown = shown
        self.pending: str | None = None
        # The message was just sent with `shown`; an unknown text may be replaced at once.
        self.next_edit = time.monotonic() + (interval if shown else 0.0)
        self._flush: asyncio.Task[None] | None = None

    async def show(self, text: str) -> None:
        if self.target.status_message_id is None:
            return
        self.pending = None if text == self.shown else text
        if self.pending is None or (self._flush is not None and not self._flush.done()):
            return  # nothing new, or an edit is already due and will show the newest text
        if time.monotonic() >= self.next_edit:
            await self._edit()
        else:
            self._schedule()

    def _schedule(self) -> None:
        if self._flush is None or self._flush.done() or self._flush is asyncio.current_task():
            self._flush = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(max(0.0, self.next_edit - time.monotonic()))
        await self._edit()

    async def _edit(self) -> None:
        text = self.pending
        if text is None or self.target.status_message_id is None:
            return
        self.pending = None
        try:
            await self.bot.edit_message_text(text, chat_id=self.target.chat_id,
                                             message_id=self.target.status_message_id)
            self.shown = text
            self.next_edit = time.monotonic() + self.interval
        except RetryAfter as exc:
            # Progress is best-effort: wait it out instead of queueing more calls.
            self.pending = self.pending or text
            self.next_edit = time.monotonic() + retry_after_seconds(exc)
        except TelegramError as exc:
            logger.info("telegram: status edit skipped (%s)", exc)
        if self.pending is not None:  # a newer text arrived during the call
            self._schedule()

    def cancel(self) -> None:
        if self._flush is not None and self._flush is not asyncio.current_task():
            self._flush.cancel()

    async def finish(self, final_text: str) -> None:
        """Remove the status message; if that is refused, turn it into `final_text`."""
        self.cancel()
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
        self.cancel()
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
        self.shown = text
        return True


def answer_keyboard(request_id: str, lang: str) -> InlineKeyboardMarkup:
    """ "Another take" and "Use my words"; callback data carries only the request id."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(t("another_take", lang), callback_data=f"again:{request_id}"),
        InlineKeyboardButton(t("use_my_words", lang), callback_data=f"words:{request_id}"),
    ]])


class Responder:
    """Sends replies for one bot; no method here raises to its caller except `send_text`."""

    def __init__(self, bot: Bot, cfg: TelegramConfig) -> None:
        self.bot, self.cfg = bot, cfg

    async def send_text(self, target: ReplyTarget, text: str, **kwargs: Any) -> Message:
        return await with_retry(lambda: self.bot.send_message(
            target.chat_id, text, reply_parameters=target.reply,
            message_thread_id=target.thread_id, **kwargs), what="sendMessage")

    async def try_send_text(self, target: ReplyTarget, text: str, **kwargs: Any) -> Message | None:
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

    async def reply_error(self, target: ReplyTarget, error: BaseException) -> None:
        """THE place where a failure becomes words: the status message, else a new reply."""
        text = describe_error(error, target.lang)
        status = StatusMessage(self.bot, target, 0.0)
        if not await status.replace(text):
            await self.try_send_text(target, text)

    async def follow(self, handle: JobHandle, target: ReplyTarget, shown: str = "") -> None:
        """Mirror a job's events into the status message (now showing `shown`), then answer."""
        lang = target.lang
        status = StatusMessage(self.bot, target, self.cfg.progress_interval_s, shown=shown)
        last_action = time.monotonic()
        try:
            async for event in handle.events():
                if isinstance(event, Started | Progress) and \
                        time.monotonic() - last_action >= ACTION_RENEW_S:
                    # Telegram shows "recording voice…" for about 5 s: renew it while rendering.
                    last_action = time.monotonic()
                    await self.action(target.chat_id, ChatAction.RECORD_VOICE)
                if isinstance(event, Queued):
                    await status.show(t("queued", lang, position=event.position))
                elif isinstance(event, Started):
                    await status.show(t("started", lang))
                elif isinstance(event, Progress) and event.total > 0:
                    percent = int(100 * event.step / event.total)
                    await status.show(t("progress", lang, percent=percent))
                elif isinstance(event, Done):
                    status.cancel()
                    await self.deliver(event.result, target)
                    await status.finish(t("done", lang, caption=event.result.caption))
                elif isinstance(event, Failed):
                    status.cancel()
                    if event.error.params.get("resumes"):
                        # Stopping, not failing: the next start re-runs it and answers then.
                        return
                    await self.reply_error(target, event.error)
        except asyncio.CancelledError:
            status.cancel()
            raise
        except Exception as exc:
            status.cancel()
            logger.exception("telegram: answering request %s failed", handle.id)
            await self.reply_error(target, exc)

    async def deliver(self, result: JobResult, target: ReplyTarget) -> None:
        """The clip as a voice note (and/or MP3), captioned, with the two buttons."""
        lang = target.lang
        caption = t("caption", lang, caption=result.caption or result.prompt)
        if result.cache_hit:
            caption = f"{caption} {t('cached', lang)}"
        caption = caption[:CAPTION_LIMIT]
        markup = answer_keyboard(result.request_id, lang)
        duration = max(1, round(result.duration_s))
        await self.action(target.chat_id, ChatAction.UPLOAD_VOICE)
        send_as = self.cfg.send_as
        if send_as in ("voice", "both"):
            ogg = result.audio_path("ogg").read_bytes()
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
