"""Logging set-up that keeps secrets out of every log line, and terminal controls too.

Bot tokens travel inside URLs (Telegram puts the token in the path of every API
call, and HTTP client libraries log those URLs), so masking has to happen on
the final formatted text, for every logger, not only ours. Log lines also carry what
strangers typed (words, names, links, a library's error quoting them): their control
characters are escaped on the same final text, whichever logger wrote it.

Two formats (`[logging] format`): "text", one line for eyes, and "json", one JSON object
per line for a log pipeline (Loki, Elasticsearch, journald): time, level, logger and
message, plus the fields a line carries (`FIELDS`: a request's id, platform, outcome and
timings; the web access log's route, status and client). The same filters mask and escape
both; a field is masked and escaped as the message is.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import hashlib
import hmac
import io
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from core.secrecy import MASK, SecretMasker
from core.user_text import escape_controls

__all__ = ["FIELDS", "MASK", "ControlCharacterFilter", "JsonFormatter", "SecretMaskingFilter",
           "report_fatal_signals", "setup_logging", "use_user_key"]

_HANDLER_NAME = "sonify"
# The attribute of a record (`extra={FIELDS: {...}}`) whose items a JSON line carries.
FIELDS = "sonify_fields"
# Where a record's fields name a user (`user_id`), a JSON line shows a keyed hash of it.
USER_HASH_CHARS = 16


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the record's fields.

    Runs after the handler's filters, so the message and traceback are masked and escaped
    already; the fields are masked (with the same secrets) and escaped here. A field
    `user_id` (with `platform`) becomes `user`: a keyed hash (`use_user_key`), the same in
    every process of one service and never the id itself; without a key it is left out.
    """

    def __init__(self, masking: SecretMaskingFilter) -> None:
        super().__init__()
        self._masking = masking
        self.user_key: bytes | None = None

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {"time": when.isoformat(timespec="milliseconds"),
                                "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            fields = dict(fields)
            user = fields.pop("user_id", None)
            if user is not None and self.user_key is not None:
                fields["user"] = self.user_hash(str(fields.get("platform", "")), str(user))
            for name, value in fields.items():
                if name not in line:
                    line[name] = self._clean(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False)

    def user_hash(self, platform: str, user_id: str) -> str:
        assert self.user_key is not None
        mac = hmac.new(self.user_key, f"{platform}:{user_id}".encode("utf-8", "surrogatepass"),
                       hashlib.sha256)
        return mac.hexdigest()[:USER_HASH_CHARS]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return escape_controls(self._masking.mask(value))
        if isinstance(value, float):
            return round(value, 3)
        if value is None or isinstance(value, bool | int):
            return value
        return escape_controls(self._masking.mask(str(value)))


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO,
                  fmt: str = "text") -> None:
    """Log to stderr with secrets masked, as text lines or JSON lines (`fmt`); quieten
    chatty HTTP client loggers."""
    handler = logging.StreamHandler(sys.stderr)
    masking = SecretMaskingFilter(secrets)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(masking))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    handler.addFilter(masking)
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


def use_user_key(key: bytes) -> None:
    """The key JSON lines hash user ids with (kept in the request log's database, so every
    process of one service hashes a user alike)."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME and isinstance(handler.formatter, JsonFormatter):
            handler.formatter.user_key = key


def report_fatal_signals() -> None:
    """A process killed by a fatal signal (SIGSEGV, SIGBUS — e.g. SQLite's shared-memory file
    made unwritable under it —, SIGABRT, SIGFPE, SIGILL) leaves a last word on stderr, the
    log: Python's "Fatal Python error" line and where every thread was. Nothing else can run
    at that point; SIGKILL leaves nothing anywhere."""
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable(file=sys.stderr, all_threads=True)  # needs a real file descriptor
