"""The Telegram adapter: python-telegram-bot wired to the shared job engine.

Thin by design: `handlers` reads updates, `requests` records and carries requests on,
`replies` speaks to Telegram, `parse` finds options and pictures in messages. It shares
the event loop with the other adapters, so it drives PTB's `Application` by hand, and
it fetches updates itself (`polling`, or the webhook here): an update is confirmed to
Telegram only once its request is recorded.
"""

from __future__ import annotations

import hmac
import logging
import re
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.telegram.handlers import Handlers
from bot.telegram.polling import ALLOWED_UPDATES, UpdatePoller
from bot.telegram.replies import Responder, with_retry
from bot.telegram.requests import PLATFORM, TelegramRequests
from core.errors import ConfigError
from core.i18n import CATALOGUE, DEFAULT_LANGUAGE, t
from core.logs import SecretMaskingFilter
from core.services import Services

logger = logging.getLogger(__name__)

# PTB's Application is generic in six context types; Sonify uses the defaults throughout.
TelegramApp = Application[Any, Any, Any, Any, Any, Any]

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramAdapter:
    """`await start()` to connect (polling or webhook), `await stop()` to disconnect."""

    name = PLATFORM

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        if not self.config.telegram.token:
            raise ConfigError(f"{services.config.source}: [telegram] token is not set "
                              "(or set SONIFY_TELEGRAM_TOKEN)")
        secret = self.config.telegram.webhook_secret
        if secret and not _SECRET_RE.match(secret):
            raise ConfigError(f"{services.config.source}: [telegram] webhook_secret: use 1-256 "
                              "characters from A-Z, a-z, 0-9, _ and -")
        # httpx logs every request URL at INFO, and Bot API URLs carry the token.
        if logging.getLogger("httpx").level == logging.NOTSET:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        mask_secrets(self.config.telegram.token, self.config.telegram.webhook_secret)
        self.app = self._build()
        self.responder = Responder(self.app.bot, self.config.telegram)
        self.requests = TelegramRequests(services, self.responder)
        self.handlers = Handlers(self.requests)
        self._register(self.app, self.handlers)
        self._webhook: web.AppRunner | None = None
        self._poller: UpdatePoller | None = None
        self._started = False

    def _build(self) -> TelegramApp:
        builder = (Application.builder()
                   .token(self.config.telegram.token)
                   .base_url(self.config.telegram.api_base_url)
                   .base_file_url(self.config.telegram.file_base_url)
                   # Updates are fetched by UpdatePoller (or the webhook), not PTB's updater.
                   .updater(None)
                   .media_write_timeout(60.0))
        return builder.build()

    @staticmethod
    def _register(app: TelegramApp, h: Handlers) -> None:
        new = filters.UpdateType.MESSAGE  # edits of old messages are not new requests
        app.add_handler(CommandHandler(["start", "help"], h.on_help, filters=new))
        app.add_handler(CommandHandler("stats", h.on_stats, filters=new))
        app.add_handler(CommandHandler("sonify", h.on_sonify, filters=new))
        app.add_handler(CommandHandler("settings", h.panel.command, filters=new))
        app.add_handler(CallbackQueryHandler(h.on_button, pattern=r"^(again|words):"))
        app.add_handler(CallbackQueryHandler(h.panel.on_button, pattern=r"^set:"))
        app.add_handler(MessageHandler(new & filters.COMMAND & filters.ChatType.PRIVATE,
                                       h.on_help))
        app.add_handler(MessageHandler(new & ~filters.COMMAND, h.on_message))
        app.add_error_handler(h.on_error)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        source = self.services.config.source
        try:
            # getMe checks the token; a network blip at start-up is retried, not fatal.
            await with_retry(self.app.initialize, what="getMe", attempts=3)
        except (InvalidToken, NetworkError) as exc:
            await self.app.bot.shutdown()  # its HTTP clients were opened before getMe failed
            if isinstance(exc, InvalidToken):  # PTB's own message quotes the token
                raise ConfigError(f"{source}: [telegram] token: Telegram refused it; copy it "
                                  "again from @BotFather") from None
            detail = str(exc).replace(self.config.telegram.token, "***")
            raise ConfigError(f"{source}: [telegram] api_base_url: cannot reach the Bot API "
                              f"({detail})") from None
        try:
            await self._connect()
        except BaseException:
            # Half-started: release the HTTP clients (and the webhook port) before failing.
            await self._teardown()
            raise
        self._started = True
        logger.info("telegram: @%s is listening (%s)", self.app.bot.username,
                    self.config.telegram.mode)

    async def _connect(self) -> None:
        bot = self.app.bot
        self.handlers.bot_id, self.handlers.username = bot.id, bot.username
        self.services.engine.on_recovered(PLATFORM, self.requests.on_recovered)
        self.services.engine.on_received(PLATFORM, self.requests.on_received)
        await self._register_commands()
        if self.config.telegram.mode == "webhook":
            await self._start_webhook()
        else:
            # Polling and a webhook exclude each other: drop one left from another setup.
            await with_retry(lambda: self.app.bot.delete_webhook(drop_pending_updates=False),
                             what="deleteWebhook", attempts=3)
            self._poller = UpdatePoller(self.app, timeout_s=self.config.telegram.poll_timeout_s,
                                        process=self.handlers.process,
                                        on_error=self._polling_error)
            self._poller.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._teardown()
        logger.info("telegram: stopped")

    async def _teardown(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None
        if self._webhook is not None:
            await self._webhook.cleanup()
            self._webhook = None
        # Answers being sent may finish; the rest stays in the log for the next start.
        await self.requests.tasks.drain()
        await self.app.shutdown()

    async def ready(self) -> str | None:
        """For /readyz: None while updates arrive (polling works, or the webhook listens)."""
        if not self._started:
            return "not connected"
        if self._poller is not None and (self._poller.failing or not self._poller.running):
            return "cannot reach the Bot API"
        return None

    def _polling_error(self, exc: TelegramError) -> None:
        logger.warning("telegram: polling failed (%s: %s); retrying", type(exc).__name__, exc)

    async def _register_commands(self) -> None:
        """The command menu, in every catalogue language; /stats only for admins."""
        bot = self.app.bot
        for lang in CATALOGUE:
            code = None if lang == DEFAULT_LANGUAGE else lang
            public = [BotCommand("sonify", t("telegram.cmd_sonify", lang)),
                      BotCommand("help", t("telegram.cmd_help", lang))]
            if self.config.telegram.chat_settings:
                public.append(BotCommand("settings", t("telegram.cmd_settings", lang)))
            admin = [*public, BotCommand("stats", t("telegram.cmd_stats", lang))]
            admins = self.config.telegram.admins
            menus = [(public, None), *((admin, BotCommandScopeChat(a)) for a in admins)]
            for commands, scope in menus:
                try:
                    await with_retry(partial(bot.set_my_commands, commands, scope=scope,
                                             language_code=code),
                                     what="setMyCommands", attempts=3)
                except TelegramError as exc:
                    # A menu is a convenience; an admin who never opened the chat makes it fail.
                    logger.warning("telegram: could not register a command menu (%s): %s",
                                lang, exc)

    # -- webhook mode --------------------------------------------------------------------
    async def _start_webhook(self) -> None:
        url = self.config.telegram.webhook_url
        if not self.config.telegram.webhook_secret:
            logger.warning("telegram: [telegram] webhook_secret is not set: anyone who learns the "
                        "webhook URL can send the bot fake updates")
        path = urlsplit(url).path or "/"
        server = web.Application(client_max_size=2 * 1024 * 1024)
        server.router.add_post(path, self._on_webhook)
        self._webhook = web.AppRunner(server, access_log=None)
        await self._webhook.setup()
        settings = self.config.telegram
        await web.TCPSite(self._webhook, settings.webhook_listen, settings.webhook_port).start()
        await with_retry(lambda: self.app.bot.set_webhook(
            url=url, secret_token=self.config.telegram.webhook_secret or None,
            allowed_updates=ALLOWED_UPDATES), what="setWebhook")

    async def _on_webhook(self, request: web.Request) -> web.Response:
        secret = self.config.telegram.webhook_secret
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if secret and not hmac.compare_digest(given.encode(), secret.encode()):
            return web.Response(status=403)
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise TypeError("an update is a JSON object")
            update = Update.de_json(data, self.app.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.Response(status=400)
        # Answered only once the request is recorded: Telegram sends it again otherwise.
        if not await self.handlers.process(self.app, update):
            return web.Response(status=503)
        return web.Response()


def mask_secrets(token: str, webhook_secret: str = "") -> None:
    """Mask the bot's secrets in the loggers that print them, whatever level the host set."""
    # The filter also masks the percent-encoded token of file download URLs ("123%3AABC")
    # and the key after the bot id on its own.
    masking = SecretMaskingFilter([token, webhook_secret])
    # httpx logs request URLs; PTB's bot logs call parameters (setWebhook's secret) at DEBUG.
    for name in ("httpx", "telegram.Bot", "telegram.ext.ExtBot"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretMaskingFilter) and f.secrets == masking.secrets
                   for f in logger.filters):
            logger.addFilter(masking)
