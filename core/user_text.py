"""Text that strangers typed: checked once before it is used, escaped wherever it is shown.

A user's words become a sound prompt, a row in the request log, a console line and a stats
reply. Two kinds of character break those places:

- a lone surrogate (`"\\ud800"`, which JSON and platform payloads can carry) cannot be
  encoded as UTF-8, so neither SQLite nor PostgreSQL can store it, and NUL cannot be stored
  in PostgreSQL's text at all — so words holding either are refused (`check_words`, code
  ``words_invalid``), and the row of that refusal keeps the words made storable
  (`storable`);
- control characters (ESC and OSC sequences, NUL, C1 controls) and the bidirectional
  overrides drive the operator's terminal or disguise a line — so every text shown to the
  operator is escaped (`escape_controls`): `\\x1b`, `\\x00`, `\\u202e`, as Python writes them.
"""

from __future__ import annotations

import re
import unicodedata

from core.errors import BadRequest

# "Use my words": the longest description a user may give, on every platform (Telegram cuts
# a longer text, Discord's form stops at it, the web page says so); the engine refuses a
# longer prompt from anywhere (`words_too_long`).
WORDS_MAX_CHARS = 300

# Whitespace that words may hold (adapters fold it to single spaces before this check).
_ALLOWED_CONTROLS = frozenset("\t\n\r")
# Characters that reorder a line's display: a log line could show something it does not say.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
# C0 and C1 controls, DEL, surrogates and the bidirectional controls.
_SHOWN_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff"
                            + "".join(sorted(_BIDI_CONTROLS)) + "]")


def invalid_characters(text: str) -> list[str]:
    """The characters of `text` that words may not hold, each once, in order."""
    found: dict[str, None] = {}
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cs" or (category == "Cc" and ch not in _ALLOWED_CONTROLS):
            found.setdefault(ch)
    return list(found)


def check_words(text: str) -> None:
    """Raise BadRequest(``words_invalid``) for words no database or terminal can take as
    they are: lone surrogates, NUL and the other control characters."""
    bad = invalid_characters(text)
    if bad:
        shown = ", ".join(_escape(ch) for ch in bad[:5])
        raise BadRequest(f"the words hold characters that are not text ({shown})",
                         code="words_invalid")


def storable(text: str | None) -> str | None:
    """`text` with every character `check_words` refuses replaced by U+FFFD: what a row
    may keep of words that were refused."""
    if text is None:
        return None
    refused = frozenset(invalid_characters(text))
    return "".join("\ufffd" if ch in refused else ch for ch in text) if refused else text


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with control characters, surrogates and bidirectional controls written as
    escapes (`\\x1b`, `\\ud800`, `\\u202e`), except those in `keep` (e.g. the newlines of
    a traceback)."""
    if not _SHOWN_ESCAPED.search(text):
        return text
    return _SHOWN_ESCAPED.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()),
                              text)
