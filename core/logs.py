"""Logging set-up that keeps secrets out of every log line.

Bot tokens travel inside URLs (Telegram puts the token in the path of every API
call, and HTTP client libraries log those URLs), so masking has to happen on
the final formatted text, for every logger, not only ours.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
_HANDLER_NAME = "sonify"


def _spellings(secret: str) -> set[str]:
    """A secret as it may appear in a log line: as is, percent-encoded in a URL, and (for
    Telegram's `<bot id>:<key>` tokens) its key alone, since the bot id is public."""
    found = {secret, quote(secret, safe=""), quote(secret)}
    if ":" in secret:
        key = secret.rsplit(":", 1)[1]
        if len(key) >= 8:
            found.add(key)
    return found


class SecretMaskingFilter(logging.Filter):
    """Replace every known secret in a record's final message with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({v for s in secrets if len(s) >= 4 for v in _spellings(s)},
                              key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = self.mask(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        return True


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Log to stderr with secrets masked; quieten chatty HTTP client loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(secrets))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: a host program's (or pytest's) handlers stay.
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Pillow warns about damaged EXIF/TIFF data from strangers' files: log it, don't print it.
    logging.captureWarnings(True)
    # httpx logs every request URL at INFO; with Telegram those URLs carry the token.
    # alembic announces its context on every start, even with nothing to migrate.
    for name in ("httpx", "httpcore", "discord.http", "discord.gateway", "aiohttp.access",
                 "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
