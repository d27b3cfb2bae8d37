"""`/settings` on Telegram: a group's admins change how Sonify works in their group; in a
private chat, a user sets their own defaults.

Group admins are asked of Telegram (`getChatMember`) and remembered briefly; the config's
`admins` may always. The panel is an inline keyboard whose every button carries the chat's
settings revision when it was drawn (`set:<field>:<revision>`): a button of an older panel
changes nothing. Refusals are alerts on the button, or a reply to the command.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.telegram.replies import ReplyAddress, with_retry
from bot.telegram.requests import PLATFORM, TelegramRequests
from core.config import MIN_SECONDS
from core.errors import SettingRefused, StorageUnavailable, UserFacingError
from core.i18n import CATALOGUE, describe_error, t
from core.settings.keys import REPLY_STYLES
from core.settings.service import Change

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
ADMIN_CACHE_S = 60.0  # a group admin's status is asked of Telegram at most once a minute
LENGTHS = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0)
PER_HOUR = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
ADMIN_STATUSES = (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
# What a private chat's panel offers: the user's own defaults, nothing about other members.
PRIVATE_FIELDS = ("sec", "style", "lang")


def _step(choices: list[Any], current: Any, up: bool) -> Any:
    """The next choice above (or below) `current`; `current` itself at either end."""
    if up:
        return next((c for c in choices if c > current), current)
    return next((c for c in reversed(choices) if c < current), current)


class SettingsPanel:
    """`/settings` and its buttons for one bot."""

    def __init__(self, requests: TelegramRequests) -> None:
        self.requests = requests
        self.config = requests.config
        self.settings = requests.settings
        self._admins: dict[tuple[int, int], tuple[bool, float]] = {}

    async def may_change(self, chat_id: int, chat_type: str, user_id: int) -> bool:
        """The config's admins; in a private chat its user; in a group, its admins."""
        if user_id in self.config.telegram.admins:
            return True
        if chat_type == ChatType.PRIVATE:
            return chat_id == user_id
        known = self._admins.get((chat_id, user_id))
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            member = await with_retry(lambda: self.requests.reply.bot.get_chat_member(
                chat_id, user_id), what="getChatMember")
        except TelegramError as exc:
            logger.warning("telegram: could not check an admin of chat %s: %s", chat_id, exc)
            return False
        is_admin = member.status in ADMIN_STATUSES
        self._admins[(chat_id, user_id)] = (is_admin, time.monotonic() + ADMIN_CACHE_S)
        return is_admin

    async def _check(self, chat_id: int, chat_type: str, user_id: int) -> None:
        if not self.settings.allowed(PLATFORM):
            raise SettingRefused("chat settings are off", code="settings_off")
        if not await self.may_change(chat_id, chat_type, user_id):
            raise SettingRefused("not a group admin", code="setting_denied_group")

    # ----- the panel ---------------------------------------------------------------------
    def _state(self, chat_id: int) -> dict[str, Any]:
        get = self.settings.get
        return {"seconds": self.requests.default_seconds(chat_id)
                or self.config.generation.seconds,
                "per_hour": int(get(PLATFORM, chat_id, "per_hour")
                                or self.config.jobs.per_user_per_hour),
                "style": get(PLATFORM, chat_id, "reply_style") or self.config.telegram.send_as,
                "language": get(PLATFORM, chat_id, "language"),
                "photos": self.requests.group_photos(chat_id),
                "enabled": self.requests.enabled(chat_id)}

    def render(self, chat_id: int, chat_type: str, title: str, lang: str,
               note: str = "") -> tuple[str, InlineKeyboardMarkup]:
        """The panel's text and keyboard, as they are now."""
        s = self._state(chat_id)
        private = chat_type == ChatType.PRIVATE
        rev = self.settings.of(PLATFORM, chat_id).revision
        on_off = {True: t("settings.on", lang), False: t("settings.off", lang)}
        language = t(f"language.{s['language']}", lang) if s["language"] \
            else t("settings.language_user", lang)
        lines = [t("settings.private_title", lang) if private
                 else t("settings.title", lang, place=title)]
        if not private:
            lines.append(t("settings.group_photos", lang, state=on_off[s["photos"]]))
        lines += [t("settings.seconds", lang, seconds=s["seconds"]),
                  t("settings.style", lang, style=t(f"settings.style.{s['style']}", lang)),
                  t("settings.language", lang, language=language)]
        if not private:
            lines += [t("settings.per_hour", lang, n=s["per_hour"]),
                      t("settings.state", lang, state=on_off[s["enabled"]]),
                      "", t("settings.privacy_note", lang)]
        if note:
            lines += ["", note]

        def button(label: str, field: str) -> InlineKeyboardButton:
            return InlineKeyboardButton(label, callback_data=f"set:{field}:{rev}")

        rows: list[list[InlineKeyboardButton]] = []
        if not private:
            rows.append([button(t("settings.photos_off" if s["photos"] else "settings.photos_on",
                                  lang), "photos-off" if s["photos"] else "photos-on")])
        # Each arrow shows the value it sets; none where there is no further step.
        lengths, limits = self._lengths(s["seconds"]), self._limits(s["per_hour"])
        rows.append([button(f"◀ {_step(lengths, s['seconds'], False):g} s", "sec-down"),
                     button(f"{_step(lengths, s['seconds'], True):g} s ▶", "sec-up")])
        if not private:
            rows.append([button(f"◀ {_step(limits, s['per_hour'], False)}/h", "hour-down"),
                         button(f"{_step(limits, s['per_hour'], True)}/h ▶", "hour-up")])
        rows.append([button(("• " if s["style"] == style else "")
                            + t(f"settings.style.{style}", lang), f"style-{style}")
                     for style in REPLY_STYLES[PLATFORM]])
        rows.append([button(("• " if s["language"] == code else "")
                            + t(f"language.{code}", lang), f"lang-{code}") for code in CATALOGUE]
                    + [button(("• " if not s["language"] else "")
                              + t("settings.language_user", lang), "lang-auto")])
        if not private:
            rows.append([button(t("settings.turn_off" if s["enabled"] else "settings.turn_on",
                                  lang), "enabled-off" if s["enabled"] else "enabled-on")])
        return "\n".join(lines), InlineKeyboardMarkup(rows)

    def _lengths(self, current: float) -> list[float]:
        top = self.config.generation.max_seconds
        return sorted({x for x in LENGTHS if MIN_SECONDS <= x <= top}
                      | {self.config.generation.seconds, top, current})

    def _limits(self, current: int) -> list[int]:
        top = self.config.jobs.per_user_per_hour
        return sorted({n for n in PER_HOUR if n <= top} | {top, current})

    def changes(self, chat_id: int, field: str) -> list[Change]:
        """What one button changes (checked against the config's bounds by the service)."""
        s = self._state(chat_id)
        name, _, arg = field.partition("-")
        if name == "sec":
            return [Change("seconds", _step(self._lengths(s["seconds"]), s["seconds"],
                                            arg == "up"))]
        if name == "hour":
            return [Change("per_hour", _step(self._limits(s["per_hour"]), s["per_hour"],
                                             arg == "up"))]
        if name == "photos":
            return [Change("group_photos", arg == "on")]
        if name == "style":
            return [Change("reply_style", None if arg == self.config.telegram.send_as else arg)]
        if name == "lang":
            return [Change("language", None if arg == "auto" else arg)]
        if name == "enabled":
            return [Change("enabled", None if arg == "on" else False)]
        raise SettingRefused(f"unknown panel field {field!r}", code="setting_choice")

    # ----- handlers ----------------------------------------------------------------------
    def _served(self, chat_id: int) -> bool:
        """`[telegram] allowed_chats`: elsewhere the bot stays silent, as for every update."""
        allow = self.config.telegram.allowed_chats
        return not allow or chat_id in allow

    async def command(self, update: Update, context: Context) -> None:
        """`/settings`: the panel, for the group's admins (or a user's own, in private)."""
        message, user, chat = update.effective_message, update.effective_user, \
            update.effective_chat
        if message is None or user is None or chat is None or not self._served(chat.id):
            return
        private = chat.type == ChatType.PRIVATE
        lang = self.requests.lang_for(user, chat.id, private)
        target = ReplyAddress(chat_id=chat.id, message_id=message.message_id, user_id=user.id,
                             lang=lang)
        try:
            await self._check(chat.id, chat.type, user.id)
        except SettingRefused as exc:
            await self.requests.reply.try_send_text(target, describe_error(exc, lang))
            return
        text, markup = self.render(chat.id, chat.type, chat.title or "", lang)
        await self.requests.reply.try_send_text(target, text, reply_markup=markup)

    async def on_button(self, update: Update, context: Context) -> None:
        """A button of a panel: check, change, redraw; or an alert saying why not."""
        query, user = update.callback_query, update.effective_user
        message = query.message if query is not None else None
        if query is None or user is None or message is None or not query.data:
            return
        chat = message.chat
        if not self._served(chat.id):
            await with_retry(query.answer, what="answerCallbackQuery")
            return
        private = chat.type == ChatType.PRIVATE
        lang = self.requests.lang_for(user, chat.id, private)
        try:
            _, field, rev = query.data.split(":", 2)
            if private and field.partition("-")[0] not in PRIVATE_FIELDS:
                raise SettingRefused("not a private setting", code="setting_choice")
            await self._check(chat.id, chat.type, user.id)
            changes = self.changes(chat.id, field)
            await self.settings.change(PLATFORM, chat.id, changes,
                                       who=f"{PLATFORM}:{user.id}", revision=int(rev))
        except (UserFacingError, StorageUnavailable, ValueError) as exc:
            text = describe_error(exc, lang) if not isinstance(exc, ValueError) \
                else t("error.setting_choice", lang)
            await with_retry(lambda: query.answer(text, show_alert=True),
                             what="answerCallbackQuery")
            return
        logger.info("telegram: %s changed settings of chat %s: %s", user.id, chat.id,
                    ", ".join(f"{c.key}={c.value!r}" for c in changes))
        text, markup = self.render(chat.id, chat.type, chat.title or "", lang,
                                   t("settings.saved", lang))
        await with_retry(query.answer, what="answerCallbackQuery")
        try:
            await with_retry(lambda: self.requests.reply.bot.edit_message_text(
                text, chat_id=chat.id, message_id=message.message_id, reply_markup=markup),
                what="editMessageText")
        except TelegramError as exc:  # saved all the same; the panel is just not redrawn
            logger.info("telegram: could not redraw a settings panel: %s", exc)
