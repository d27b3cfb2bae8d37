"""The columns of a request's new row: what the request log keeps of a `RequestRecord`."""

from __future__ import annotations

import logging
from typing import Any

from core.records import RECORD_FIELDS, RequestRecord
from core.user_text import storable

logger = logging.getLogger(__name__)

_SECRET_WORDS = ("token", "secret", "password", "authorization")
_USER_TEXT = ("caption", "prompt", "user_name")


def without_secrets(context: dict[str, Any]) -> dict[str, Any]:
    """A reply context minus credential-like keys: rows outlive tokens and get copied."""
    kept = {}
    for name, value in context.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            logger.warning("reply_context key %r looks like a credential; not stored", name)
        else:
            kept[name] = value
    return kept


def row_values(record: RequestRecord) -> dict[str, Any]:
    """The columns of `record`'s new row (its reply context without credentials)."""
    values = {f: getattr(record, f) for f in RECORD_FIELDS}
    values["reply_context"] = without_secrets(record.reply_context or {})
    # Text from users: words refused as invalid are still logged, and a platform's user name
    # is not checked at all; neither database can store a lone surrogate (nor PostgreSQL a NUL).
    for name in _USER_TEXT:
        values[name] = storable(values[name])
    return values
