"""The Telegram token checked before the models load: its shape, then one `getMe`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bot.common.token_check import PlatformUnreachable, ask
from core.config import Config
from core.errors import ConfigError

# "<bot id>:<secret>" as @BotFather gives it: digits, a colon, then letters, digits, - and _.
TOKEN_SHAPE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{20,}")


async def check_telegram_token(config: Config) -> str:
    """The bot's @username; ConfigError naming the token, or the network, in one line."""
    settings, source = config.telegram, config.source
    token = settings.token
    if not TOKEN_SHAPE.fullmatch(token):
        raise ConfigError(f"{source}: [telegram] token (or SONIFY_TELEGRAM_TOKEN) does not look "
                          "like a bot token (digits, a colon, then about 35 letters and "
                          "digits); copy it again from @BotFather")
    try:
        answer = await ask(f"{settings.api_base_url}{token}/getMe")
    except PlatformUnreachable as exc:
        where = urlsplit(settings.api_base_url).netloc
        raise ConfigError(f"{source}: cannot reach Telegram at {where} to check the token "
                          f"({exc}); check this machine's network connection (or proxy)"
                          ) from None
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status in (401, 404) or body.get("error_code") in (401, 404):
        raise ConfigError(f"{source}: [telegram] token (or SONIFY_TELEGRAM_TOKEN): Telegram "
                          "says it is not valid; copy it again from @BotFather (a token "
                          "revoked there stops working)")
    result = body.get("result")
    if answer.status != 200 or not body.get("ok") or not isinstance(result, dict):
        # An outage or a rate limit is not a wrong token: the adapter retries at start.
        return ""
    return str(result.get("username") or "")
