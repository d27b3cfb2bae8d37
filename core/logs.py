"""Logging set-up that keeps secrets out of every log line, and terminal controls too.

Bot tokens travel inside URLs (Telegram puts the token in the path of every API
call, and HTTP client libraries log those URLs), so masking has to happen on
the final formatted text, for every logger, not only ours. Log lines also carry what
strangers typed (words, names, links, a library's error quoting them): their control
characters are escaped on the same final text, whichever logger wrote it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import sys
from collections.abc import Iterable

from core.secrecy import MASK, SecretMasker
from core.user_text import escape_controls

__all__ = ["MASK", "ControlCharacterFilter", "SecretMaskingFilter", "report_fatal_signals",
           "setup_logging"]

_HANDLER_NAME = "sonify"


class SecretMaskingFilter(logging.Filter):
    """Replace every spelling of every known secret in a record's final text with `***`
    (see `core.secrecy`: percent-encoded in any case or in part, decoded, escaped, cut short).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._masker = SecretMasker(secrets)
        self.secrets = self._masker.secrets

    def mask(self, text: str) -> str:
        return self._masker.mask(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._masker:
            return True
        message = self.mask(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class ControlCharacterFilter(logging.Filter):
    """Write control characters as escapes (`\\x1b`, `\\x00`, `\\ud800`) in a record's final
    text: an ESC or OSC sequence a user typed must not drive the operator's terminal, and a
    newline must not start a line that looks like the program's own. Tracebacks keep their
    newlines (the lines inside them are escaped all the same)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_controls(message, keep="\t")
        if escaped is not message:
            record.msg, record.args = escaped, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = escape_controls(record.exc_text, keep="\t\n")
        if record.stack_info:
            record.stack_info = escape_controls(record.stack_info, keep="\t\n")
        return True


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Log to stderr with secrets masked; quieten chatty HTTP client loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(secrets))
    handler.addFilter(ControlCharacterFilter())  # after masking: it needs the text as it was
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


def report_fatal_signals() -> None:
    """A process killed by a fatal signal (SIGSEGV, SIGBUS — e.g. SQLite's shared-memory file
    made unwritable under it —, SIGABRT, SIGFPE, SIGILL) leaves a last word on stderr, the
    log: Python's "Fatal Python error" line and where every thread was. Nothing else can run
    at that point; SIGKILL leaves nothing anywhere."""
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable(file=sys.stderr, all_threads=True)  # needs a real file descriptor
