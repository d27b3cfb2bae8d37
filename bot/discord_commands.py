"""The application commands: `/sonify`, the "Sonify this image" message command and `/stats`.

Descriptions come from the shared catalogue (`cmd.*` keys), so Discord shows them in
Spanish to Spanish-speaking users; the commands themselves only route to the adapter.
"""

# No `from __future__ import annotations` here: the `seconds` bound comes from the
# configuration at run time, and discord.py reads parameter annotations as objects.
from typing import Optional

import discord
from discord import app_commands

from bot.discord_views import handlers_of
from core.config import Config
from core.i18n import DEFAULT_LANGUAGE, pick_language, t
from core.options import MAX_SEED

CONTEXT_MENU_KEY = "cmd.context"


def text(key: str) -> app_commands.locale_str:
    """An English command text that the translator can localise by its catalogue key."""
    return app_commands.locale_str(t(key, DEFAULT_LANGUAGE), key=key)


class CatalogueTranslator(app_commands.Translator):
    """Localises command texts from `core.i18n` for every Discord locale we have a language for."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        key = string.extras.get("key")
        lang = pick_language(locale.value)
        if key is None or lang == DEFAULT_LANGUAGE:
            return None
        return t(key, lang)


def build_commands(tree: app_commands.CommandTree, config: Config) -> None:
    """Add Sonify's commands to `tree` (global; `sync_tree` copies them to guilds if asked)."""
    seconds_type = app_commands.Range[float, 0.5, config.generation.max_seconds]
    seed_type = app_commands.Range[int, 0, MAX_SEED]

    @tree.command(name="sonify", description=text("cmd.sonify"))
    @app_commands.describe(image=text("cmd.sonify.image"), url=text("cmd.sonify.url"),
                           seconds=text("cmd.sonify.seconds"), seed=text("cmd.sonify.seed"))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def sonify(interaction: discord.Interaction,
                     image: Optional[discord.Attachment] = None,  # noqa: UP045
                     url: Optional[str] = None,  # noqa: UP045
                     seconds: Optional[seconds_type] = None,  # type: ignore[valid-type] # noqa: UP045
                     seed: Optional[seed_type] = None,  # type: ignore[valid-type] # noqa: UP045
                     ) -> None:
        await handlers_of(interaction).sonify_command(interaction, image=image, url=url,
                                                     seconds=seconds, seed=seed)

    @tree.context_menu(name=text(CONTEXT_MENU_KEY))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def sonify_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await handlers_of(interaction).sonify_message(interaction, message)

    @tree.command(name="stats", description=text("cmd.stats"))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def stats(interaction: discord.Interaction) -> None:
        await handlers_of(interaction).stats(interaction)


async def sync_tree(tree: app_commands.CommandTree, guild_ids: list[int]) -> int:
    """Register the commands with Discord: per guild (instant) when given, else globally."""
    if not guild_ids:
        return len(await tree.sync())
    total = 0
    for gid in guild_ids:
        guild = discord.Object(gid)
        tree.copy_global_to(guild=guild)
        total += len(await tree.sync(guild=guild))
    return total
