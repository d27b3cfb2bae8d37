"""The Discord token checked before the models load: its shape, then one `users/@me`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bot.common.token_check import PlatformUnreachable, ask
from core.config import Config
from core.errors import ConfigError

# A bot token is three base64url parts joined by dots. The portal's other values are not:
# the application id (digits), the public key (hex), the client secret (32 characters).
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}")


async def check_discord_token(config: Config) -> str:
    """The bot's user name; ConfigError naming the token, or the network, in one line."""
    settings, source = config.discord, config.source
    token = settings.token
    if not TOKEN_SHAPE.fullmatch(token):
        hint = " without the \"Bot \" prefix" if token.lower().startswith("bot ") else ""
        raise ConfigError(f"{source}: [discord] token (or SONIFY_DISCORD_TOKEN) does not look "
                          "like a bot token (three parts joined by dots); copy it from the "
                          f"developer portal's Bot page (Reset Token){hint}, not the "
                          "application id, public key or client secret")
    try:
        answer = await ask(f"{settings.api_base_url.rstrip('/')}/users/@me",
                           headers={"Authorization": f"Bot {token}"})
    except PlatformUnreachable as exc:
        where = urlsplit(settings.api_base_url).netloc
        raise ConfigError(f"{source}: cannot reach Discord at {where} to check the token "
                          f"({exc}); check this machine's network connection (or proxy)"
                          ) from None
    if answer.status == 401:
        raise ConfigError(f"{source}: [discord] token (or SONIFY_DISCORD_TOKEN): Discord says "
                          "it is not valid; copy it again from the developer portal's Bot "
                          "page (Reset Token)")
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 200:
        return ""  # an outage or a rate limit is not a wrong token: the adapter retries
    return str(body.get("username") or "")
