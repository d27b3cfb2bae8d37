"""`/settings`: a server's admins change how Sonify works in their server.

Usable by members with Manage Server in their server and by `[discord] admins`; the
permission is checked again at every click, so a member who lost it changes nothing. Every
refusal (the operator forbids chat settings, no permission, a stale panel, a channel the
bot cannot read or post in, a value out of bounds) is an ephemeral answer and changes
nothing; a change redraws the panel.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.discord.requests import PLATFORM, DiscordRequests
from bot.discord.settings_panel import AUTO, PANEL_ID, PanelState, panel_text, panel_view
from core.errors import SettingRefused, StorageUnavailable, UserFacingError
from core.i18n import describe_error, pick_language, t
from core.settings.service import Change

logger = logging.getLogger(__name__)

# What the bot needs in a channel it watches: see it, read what was posted, answer with files.
NEEDED = discord.Permissions(view_channel=True, read_message_history=True, send_messages=True,
                             attach_files=True)


class SettingsHandlers:
    """The `/settings` command and its panel's menus and buttons."""

    def __init__(self, requests: DiscordRequests) -> None:
        self.requests = requests
        self.config = requests.config
        self.settings = requests.settings

    def _check(self, interaction: discord.Interaction) -> discord.Guild:
        """The server, if this member may change its settings; else SettingRefused."""
        if not self.settings.allowed(PLATFORM):
            raise SettingRefused("chat settings are off", code="settings_off")
        guild = interaction.guild
        perms = interaction.permissions if interaction.guild_id else None
        if guild is None or not self.requests.is_admin(interaction.user, perms):
            raise SettingRefused("no Manage Server", code="setting_denied")
        return guild

    def _watched(self, guild: discord.Guild) -> list[int]:
        return [c.id for c in sorted(guild.channels, key=lambda c: c.position)
                if isinstance(c, discord.TextChannel) and self.requests.watched(c)]

    def _panel(self, guild: discord.Guild, lang: str, note: str = "") -> dict[str, Any]:
        scope = self.settings.of(PLATFORM, guild.id)
        style = scope.raw("reply_style")
        state = PanelState(
            seconds=self.requests.options(guild.id).seconds,
            per_hour=int(self.settings.get(PLATFORM, guild.id, "per_hour")
                         or self.config.jobs.per_user_per_hour),
            voice=self.config.discord.voice_message if style is None else style == "voice",
            enabled=self.requests.enabled(guild.id))
        watched = self._watched(guild)
        return {"content": panel_text(self.config, scope, guild.name, watched, lang, state,
                                      note),
                "view": panel_view(self.config, scope, watched, lang, state)}

    async def command(self, interaction: discord.Interaction) -> None:
        """`/settings`: the panel, visible only to whoever asked."""
        lang = pick_language(interaction.locale.value)
        try:
            guild = self._check(interaction)
        except SettingRefused as exc:
            await self._refuse(interaction, exc, lang)
            return
        await interaction.response.send_message(ephemeral=True, **self._panel(guild, lang))

    async def on_component(self, interaction: discord.Interaction) -> bool:
        """A click on a panel; False when the interaction is not one of the panel's."""
        data: dict[str, Any] = dict(interaction.data or {})
        match = PANEL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return False
        lang = pick_language(interaction.locale.value)
        try:
            guild = self._check(interaction)
            changes = self._changes(guild, match["field"],
                                    [str(v) for v in data.get("values", [])])
            await self.settings.change(PLATFORM, guild.id, changes,
                                       who=f"{PLATFORM}:{interaction.user.id}",
                                       revision=int(match["rev"]))
        except (UserFacingError, StorageUnavailable) as exc:
            await self._refuse(interaction, exc, lang)
            return True
        logger.info("discord: %s changed settings of server %s: %s", interaction.user.id,
                    guild.id, ", ".join(f"{c.key}{'@' + c.channel_id if c.channel_id else ''}"
                                        f"={c.value!r}" for c in changes) or "nothing")
        await interaction.response.edit_message(**self._panel(guild, lang,
                                                              t("settings.saved", lang)))
        return True

    def _changes(self, guild: discord.Guild, field: str, values: list[str]) -> list[Change]:
        """The rows one click changes (checked against the config's bounds by the service)."""
        if field == "channels":
            return self._channel_changes(guild, values)
        if field in ("seconds", "per_hour"):
            try:
                number = float(values[0]) if field == "seconds" else int(values[0])
            except (IndexError, ValueError):
                raise SettingRefused("not a number", code="setting_choice") from None
            return [Change(field, number)]
        if field == "language":
            value = values[0] if values else AUTO
            return [Change("language", None if value == AUTO else value)]
        if field in ("style-voice", "style-file"):
            style = field.removeprefix("style-")
            default = "voice" if self.config.discord.voice_message else "file"
            return [Change("reply_style", None if style == default else style)]
        if field in ("enabled-on", "enabled-off"):
            return [Change("enabled", None if field == "enabled-on" else False)]
        raise SettingRefused(f"unknown panel field {field!r}", code="setting_choice")

    def _channel_changes(self, guild: discord.Guild, values: list[str]) -> list[Change]:
        """The watched channels become exactly `values`; each must be one the bot can use."""
        wanted: set[int] = set()
        for value in values:
            channel = guild.get_channel(int(value)) if value.isdigit() else None
            if not isinstance(channel, discord.TextChannel) or \
                    not channel.permissions_for(guild.me).is_superset(NEEDED):
                raise SettingRefused("the bot cannot use that channel", code="setting_channel",
                                     channel=f"<#{value}>" if value.isdigit() else value)
            wanted.add(channel.id)
        configured = set(self.config.discord.channels)
        chosen = self.settings.of(PLATFORM, guild.id).channels("watched")
        touched = wanted | set(self._watched(guild)) | {int(c) for c in chosen}
        # Stored only where it differs from the config's list: removing a channel the config
        # watches stores "no", adding one back removes the row.
        return [Change("watched", None if (cid in wanted) == (cid in configured)
                       else cid in wanted, str(cid)) for cid in sorted(touched)]

    async def _refuse(self, interaction: discord.Interaction, error: BaseException,
                      lang: str) -> None:
        try:
            await interaction.response.send_message(describe_error(error, lang),
                                                    ephemeral=True)
        except discord.HTTPException as exc:
            logger.warning("could not refuse a settings change to a Discord user: %s", exc)
