"""The application commands (`/sonify`, "Sonify this image", `/stats`, `/settings`) and their
registration.

Descriptions come from the shared catalogue (`cmd.*` keys), so Discord shows them in
Spanish to Spanish-speaking users; the commands themselves only route to the handlers.
The library set-up shared by the bot and `sonify sync-commands` lives here too.
"""

# No `from __future__ import annotations` here: the `seconds` bound comes from the
# configuration at run time, and discord.py reads parameter annotations as objects.
import logging
import re
from collections.abc import Callable
from typing import Optional, Protocol

import discord
import yarl
from discord import app_commands

from core.config import MAX_SEED, MIN_SECONDS, Config
from core.errors import ConfigError
from core.i18n import DEFAULT_LANGUAGE, pick_language, t

CONTEXT_MENU_KEY = "cmd.context"
# Interaction tokens sit in webhook and callback URLs, which discord.py logs (at DEBUG, and
# at WARNING on a 429). A token answers for its user for 15 minutes: keep it out of logs.
TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+")
URL_LOGGERS = ("discord.http", "discord.webhook.async_")


class InteractionTokenFilter(logging.Filter):
    """Masks interaction (webhook) tokens in a log record's final text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = TOKEN_IN_URL.sub(r"\1***", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def guard_token_logs() -> None:
    """Attach the token filter to the discord.py loggers that write request URLs (once)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, InteractionTokenFilter) for f in logger.filters):
            logger.addFilter(InteractionTokenFilter())


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


class CommandActions(Protocol):
    """What the commands do (implemented by the interaction handlers)."""

    async def sonify_command(self, interaction: discord.Interaction, *,
                             image: Optional[discord.Attachment], url: Optional[str],  # noqa: UP045
                             seconds: Optional[float], seed: Optional[int]) -> None: ...  # noqa: UP045

    async def sonify_message(self, interaction: discord.Interaction,
                             message: discord.Message) -> None: ...

    async def stats(self, interaction: discord.Interaction) -> None: ...

    async def settings(self, interaction: discord.Interaction) -> None: ...


def build_commands(tree: app_commands.CommandTree, config: Config,
                   actions: CommandActions | None) -> None:
    """Add Sonify's commands to `tree` (global; `sync_tree` copies them to guilds if asked).

    `actions` is None where the commands are only registered, never run.
    """

    def act() -> CommandActions:
        if actions is None:
            raise RuntimeError("these commands were built only to be registered")
        return actions

    seconds_type = app_commands.Range[float, MIN_SECONDS, config.generation.max_seconds]
    seed_type = app_commands.Range[int, 0, MAX_SEED]

    @tree.command(name="sonify", description=text("cmd.sonify"))
    @app_commands.describe(image=text("cmd.sonify.image"), url=text("cmd.sonify.url"),
                           seconds=text("cmd.sonify.seconds"), seed=text("cmd.sonify.seed"))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def sonify(interaction: discord.Interaction,
                     image: Optional[discord.Attachment] = None,  # noqa: UP045
                     url: Optional[str] = None,  # noqa: UP045
                     seconds: Optional[seconds_type] = None,  # noqa: UP045
                     seed: Optional[seed_type] = None,  # noqa: UP045
                     ) -> None:
        await act().sonify_command(interaction, image=image, url=url, seconds=seconds,
                                   seed=seed)

    @tree.context_menu(name=text(CONTEXT_MENU_KEY))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def sonify_message(interaction: discord.Interaction, message: discord.Message) -> None:
        await act().sonify_message(interaction, message)

    @tree.command(name="stats", description=text("cmd.stats"))
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def stats(interaction: discord.Interaction) -> None:
        await act().stats(interaction)

    if config.discord.chat_settings:
        # Shown by default only to members with Manage Server (server admins may change who
        # sees it); the handler checks again, and lets the config's admins in too.
        @tree.command(name="settings", description=text("cmd.settings"))
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.allowed_contexts(guilds=True, dms=False)
        @app_commands.allowed_installs(guilds=True)
        async def settings(interaction: discord.Interaction) -> None:
            await act().settings(interaction)


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


def patch_endpoints(api_base_url: str, gateway_url: str) -> Callable[[], None]:
    """Point discord.py at `[discord] api_base_url`/`gateway_url`; returns an undo function."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_base_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)

    def restore() -> None:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    return restore


def quiet_voice_warnings() -> None:
    """Sonify never joins voice channels: skip discord.py's warnings about voice libraries."""
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


async def sync_commands(config: Config) -> int:
    """Register the commands with Discord (per guild in `[discord] guilds`, else globally).

    Needs only the configuration and Discord's REST API: no database, no models.
    """
    settings = config.discord
    if not settings.token:
        raise ConfigError(f"{config.source}: [discord] token is not set "
                          "(or set SONIFY_DISCORD_TOKEN)")
    guard_token_logs()
    restore = patch_endpoints(settings.api_base_url, settings.gateway_url)
    quiet_voice_warnings()
    client = discord.Client(intents=discord.Intents.default())  # REST only: never connects
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    try:
        await tree.set_translator(CatalogueTranslator())
        build_commands(tree, config, None)
        try:
            await client.login(settings.token)
        except discord.LoginFailure:
            raise ConfigError(f"{config.source}: [discord] token was refused by "
                              "Discord") from None
        return await sync_tree(tree, settings.guilds)
    finally:
        await client.close()
        restore()
