"""The `/settings` panel: what a server's settings are, and the menus and buttons to change them.

Every component's custom id ends with the server's settings revision when the panel was
drawn (`sonify:set:<field>:<revision>`): a click on a panel drawn before another change
is stale and changes nothing. The panel is handled by custom id (no view kept in memory),
so a panel shown before a restart still answers after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from core.config import MIN_SECONDS, Config
from core.i18n import CATALOGUE, t
from core.settings.service import ScopeSettings

PANEL_ID = re.compile(r"sonify:set:(?P<field>[a-z_-]{1,20}):(?P<rev>\d{1,12})")
LENGTHS = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0)
PER_HOUR = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
AUTO = "auto"


@dataclass(frozen=True)
class PanelState:
    """The values in effect in a server (its settings, else the config's)."""

    seconds: float
    per_hour: int
    voice: bool
    enabled: bool


def custom_id(field: str, revision: int) -> str:
    return f"sonify:set:{field}:{revision}"


def _mention(channel_id: int) -> str:
    return f"<#{channel_id}>"


def seconds_choices(config: Config, current: float) -> list[float]:
    top = config.generation.max_seconds
    found = {s for s in LENGTHS if MIN_SECONDS <= s <= top}
    found |= {config.generation.seconds, top, current}
    return sorted(found)[:25]


def per_hour_choices(config: Config, current: int) -> list[int]:
    top = config.jobs.per_user_per_hour
    return sorted({n for n in PER_HOUR if n <= top} | {top, current})[:25]


def panel_text(config: Config, scope: ScopeSettings, guild_name: str, watched: list[int],
               lang: str, state: PanelState, note: str = "") -> str:
    """The panel's summary, one line per setting."""
    language = scope.raw("language")
    seconds, per_hour, voice, enabled = state.seconds, state.per_hour, state.voice, state.enabled
    lines = [f"**{t('settings.title', lang, place=guild_name)}**",
             t("settings.channels", lang, channels=", ".join(_mention(c) for c in watched)
               or t("settings.no_channels", lang)),
             t("settings.seconds", lang, seconds=seconds),
             t("settings.per_hour", lang, n=per_hour),
             t("settings.language", lang, language=t(f"language.{language}", lang)
               if language else t("settings.language_auto", lang)),
             t("settings.style", lang, style=t("settings.style." + ("voice" if voice
                                                                     else "file"), lang)),
             t("settings.state", lang, state=t("settings." + ("on" if enabled else "off"),
                                               lang))]
    if note:
        lines.append("")
        lines.append(note)
    return "\n".join(lines)


def panel_view(config: Config, scope: ScopeSettings, watched: list[int], lang: str,
               state: PanelState) -> discord.ui.View:
    """The menus and buttons (five rows: channels, length, limit, language, buttons)."""
    rev = scope.revision
    seconds, per_hour, voice, enabled = state.seconds, state.per_hour, state.voice, state.enabled
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.ChannelSelect(
        custom_id=custom_id("channels", rev), row=0, min_values=0, max_values=25,
        channel_types=[discord.ChannelType.text, discord.ChannelType.news],
        placeholder=t("settings.channels_placeholder", lang)[:150],
        default_values=[discord.Object(c, type=discord.abc.GuildChannel) for c in watched][:25]))
    view.add_item(discord.ui.Select(custom_id=custom_id("seconds", rev), row=1, options=[
        discord.SelectOption(label=t("settings.seconds_option", lang, seconds=s)[:100],
                             value=f"{s:g}", default=s == seconds)
        for s in seconds_choices(config, seconds)]))
    view.add_item(discord.ui.Select(custom_id=custom_id("per_hour", rev), row=2, options=[
        discord.SelectOption(label=t("settings.per_hour_option", lang, n=n)[:100],
                             value=str(n), default=n == per_hour)
        for n in per_hour_choices(config, per_hour)]))
    chosen = scope.raw("language") or AUTO
    view.add_item(discord.ui.Select(custom_id=custom_id("language", rev), row=3, options=[
        discord.SelectOption(label=(t("settings.language_option", lang,
                                      language=t(f"language.{code}", lang))
                                    if code != AUTO else t("settings.language_auto", lang))[:100],
                             value=code, default=code == chosen)
        for code in (AUTO, *CATALOGUE)]))
    for field, label, on in (("style-voice", t("settings.style.voice", lang), voice),
                             ("style-file", t("settings.style.file", lang), not voice)):
        view.add_item(discord.ui.Button(
            custom_id=custom_id(field, rev), row=4, label=label[:80], disabled=on,
            style=discord.ButtonStyle.primary if on else discord.ButtonStyle.secondary))
    toggle = "enabled-off" if enabled else "enabled-on"
    view.add_item(discord.ui.Button(
        custom_id=custom_id(toggle, rev), row=4,
        label=t("settings.turn_off" if enabled else "settings.turn_on", lang)[:80],
        style=discord.ButtonStyle.danger if enabled else discord.ButtonStyle.success))
    view.stop()  # answered by custom id (see the module's docstring), not kept in memory
    return view
