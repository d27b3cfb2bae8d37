"""The Discord adapter: discord.py's client wired to the shared job engine.

It understands images posted in watched channels (or anywhere the bot is mentioned,
or in DMs) (`messages`), `/sonify`, the "Sonify this image" message command, the
buttons under an answer and `/stats` (`interactions`). Shared resources are built once
in `setup_hook` (RoboDanny-style) and every error of an interaction ends in one place,
`InteractionHandlers.report`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import discord
from discord import app_commands

from bot.discord.catch_up import CatchUp
from bot.discord.commands import (
    CatalogueTranslator,
    build_commands,
    guard_token_logs,
    patch_endpoints,
    quiet_voice_warnings,
    sync_tree,
)
from bot.discord.interactions import InteractionHandlers
from bot.discord.messages import MessageHandlers
from bot.discord.requests import PLATFORM, DiscordRequests
from bot.discord.views import ButtonActions, ResultButton
from core.errors import ConfigError
from core.services import Services

logger = logging.getLogger(__name__)


class SonifyTree(app_commands.CommandTree):
    """The command tree; every command's error goes to the handlers' one error path."""

    def __init__(self, client: discord.Client, handlers: InteractionHandlers) -> None:
        super().__init__(client)
        self.handlers = handlers

    async def on_error(self, interaction: discord.Interaction,
                       error: app_commands.AppCommandError) -> None:
        await self.handlers.report(interaction, error)


class SonifyClient(discord.Client):
    """discord.py's client, routing events to Sonify's handlers."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        quiet_voice_warnings()
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: needed to see attachments of messages
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.adapter = adapter
        # The persistent buttons find their handlers here (see bot.discord.views).
        self.button_actions: ButtonActions = adapter.interactions
        self.tree = SonifyTree(self, adapter.interactions)

    async def setup_hook(self) -> None:
        await self.adapter.setup(self)

    async def on_ready(self) -> None:
        """A fresh gateway session (start-up, or a reconnect that could not resume)."""
        logger.info("connected to Discord as %s (id %s) in %d server(s)", self.user,
                    self.user.id if self.user else "?", len(self.guilds))
        self.adapter.catch_up_soon(self)

    async def on_disconnect(self) -> None:
        self.adapter.requests.reading_back = True  # a new session may follow: see on_ready

    async def on_resumed(self) -> None:
        """The session survived: Discord replays what was missed, nothing to read back."""
        self.adapter.requests.reading_back = False

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.messages.on_message(self, message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await self.adapter.interactions.on_modal(interaction)
        elif interaction.type is discord.InteractionType.component:
            await self.adapter.interactions.panel.on_component(interaction)


class DiscordAdapter:
    """`DiscordAdapter(services)`: start() logs in and connects; stop() disconnects."""

    name = PLATFORM

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        self.requests = DiscordRequests(services)
        self.messages = MessageHandlers(self.requests)
        self.interactions = InteractionHandlers(self.requests)
        self.catch_up = CatchUp(self.requests, self.messages)
        self.caught_up = asyncio.Event()  # this session has read back what it missed
        self.client: SonifyClient | None = None
        self._connection: asyncio.Task[None] | None = None
        self._restore: Callable[[], None] | None = None

    async def start(self) -> None:
        settings, source = self.config.discord, self.config.source
        if not settings.token:
            raise ConfigError(f"{source}: [discord] token is not set")
        guard_token_logs()
        self._restore = patch_endpoints(settings.api_base_url, settings.gateway_url)
        self.client = SonifyClient(self)
        self.requests.client = self.client
        self.services.engine.on_recovered(PLATFORM, self.requests.on_recovered)
        self.services.engine.on_received(PLATFORM, self.requests.on_received)
        try:
            await self.client.login(settings.token)
        except discord.LoginFailure:
            await self.stop()
            raise ConfigError(f"{source}: [discord] token was refused by Discord") from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise ConfigError(f"{source}: [discord] cannot reach {settings.api_base_url} "
                              f"({type(exc).__name__})") from None
        self._connection = asyncio.create_task(self._connect(), name="discord-gateway")

    async def _connect(self) -> None:
        assert self.client is not None
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            logger.error("Discord refused the connection: enable the Message Content intent "
                         "for this bot (Developer Portal > your application > Bot)")
        except Exception:
            logger.exception("the Discord connection ended")

    async def setup(self, client: SonifyClient) -> None:
        """Shared resources, built once per login: commands, translator, persistent buttons."""
        settings = self.config.discord
        await client.tree.set_translator(CatalogueTranslator())
        build_commands(client.tree, self.config, self.interactions)
        client.add_dynamic_items(ResultButton)
        if settings.sync_commands:
            try:
                count = await sync_tree(client.tree, settings.guilds)
                logger.info("registered %d Discord commands", count)
            except discord.HTTPException as exc:
                logger.warning("could not register Discord commands: %s %s", exc.status,
                               exc.text)

    async def stop(self) -> None:
        """Let answers already computed go out (bounded), then disconnect."""
        await self.requests.tasks.drain()
        if self.client is not None:
            await self.client.close()
        if self._connection is not None:
            await asyncio.gather(self._connection, return_exceptions=True)
            self._connection = None
        if self._restore is not None:
            self._restore()
            self._restore = None

    async def ready(self) -> str | None:
        """For /readyz: None while the gateway session is open (not while reconnecting)."""
        client = self.client
        if client is None or client.is_closed() or not client.is_ready():
            return "not connected"
        if not client.ws.open:
            return "reconnecting"
        return None

    def catch_up_soon(self, client: SonifyClient) -> None:
        """Read back what was posted while away, beside the live events (not blocking them)."""
        self.requests.reading_back = True  # at once: before any live event moves a cursor
        self.caught_up.clear()
        self.requests.tasks.spawn(self._catch_up(client), waiting=True)

    async def _catch_up(self, client: SonifyClient) -> None:
        try:
            await self.catch_up.run(client)
        except Exception:  # live messages are still answered; the next session tries again
            logger.exception("reading back Discord channels failed")
        finally:
            self.requests.reading_back = False
            self.caught_up.set()
