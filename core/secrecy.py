"""Secrets in every spelling: what log lines and error messages must never show.

A secret rarely reaches a message exactly as configured. URL libraries percent-encode it (in
upper or lower case, or only some of its characters), a database driver decodes the password
of its URL, `repr` and JSON escape quotes and non-ASCII characters, and a message may cut a
long value short. Listing spellings cannot keep up with that (a password with k special
characters has 3^k partly encoded forms), so `SecretMasker` matches each character of a
secret in any of its forms, and a secret's first `MIN_PREFIX` characters on their own.

Secrets come from the configuration (`core.config.secret_values`): the tokens, the password
inside any URL (`url_passwords`), and what is derived from a token and travels instead of it
(`web_cookie_value`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "***"
# Shorter values are not treated as secrets: masking them would blank ordinary words.
MIN_SECRET = 4
# A secret cut short is masked once this many of its characters show: fewer are too common
# to mask everywhere, and leave too little of a random token to guess the rest from.
MIN_PREFIX = 8

# What a password in a URL's query is called by the drivers (asyncpg, psycopg, redis-py).
_QUERY_PASSWORD = re.compile(r"[?&](?:password|passwd|pwd|pass)=([^&#]*)", re.IGNORECASE)
# SQLAlchemy's reading of `scheme://user:password@host`: the password ends at the first "@"
# (urllib's ends at the last one); a URL with a raw "@" in it is read both ways.
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:([^@/?#]*)@")


def url_passwords(value: str) -> list[str]:
    """The passwords in a URL (`scheme://user:password@host`, `?password=`), as written and
    decoded; none for a value that is not a URL or has no password."""
    if "://" not in value:
        return []
    found: set[str] = set()
    try:
        password = urlsplit(value).password
    except ValueError:  # e.g. an unclosed IPv6 bracket: not a URL we can read
        password = None
    if password:
        found.add(password)
    if match := _USERINFO.match(value):
        found.add(match.group(1))
    for raw in _QUERY_PASSWORD.findall(value):
        found |= {raw, unquote_plus(raw)}
    return sorted({form for p in found for form in (p, unquote(p))} - {""})


def web_cookie_value(token: str) -> str:
    """What the web page's cookie holds: derived from the token, so the cookie is not the
    token; as secret as the token (it opens the page), so it is masked like one."""
    return hmac.new(token.encode(), b"sonify-web-cookie", hashlib.sha256).hexdigest()


def _hex(byte: int) -> str:
    """A byte's %XX escape, either case of the hex digits."""
    return "%" + "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{byte:02X}")


def _char_forms(ch: str) -> list[str]:
    """Regexes for the forms one character of a secret may take in a message."""
    encoded = ch.encode()
    forms = ["".join(_hex(b) for b in encoded)]  # percent-encoded (UTF-8)
    code = ord(ch)
    if 127 < code < 256:
        forms.append(_hex(code))  # percent-encoded (Latin-1)
    if code > 127:  # escaped by repr() or JSON
        forms += [re.escape(f"\\u{code:04x}"), re.escape(f"\\U{code:08x}")]
        if code < 256:
            forms.append(re.escape(f"\\x{code:02x}"))
    if ch in "\\'\"/":
        forms.append(re.escape("\\" + ch))  # repr's and JSON's escapes
    if ch == " ":
        forms.append(r"\+")  # form encoding
    return [*forms, re.escape(ch)]


class _Matcher:
    """Finds one secret: its first `required` characters, then as many more as follow.

    A character may be spelled several ways, and one spelling may be the start of another
    (the "%" of a password written `LongHead%25Tail` reads as the escape "%25" too), so the
    match follows every spelling of every character at once and keeps the longest: a greedy
    choice would stop at "LongHead%25" and leave the rest of the password showing.
    """

    def __init__(self, secret: str, required: int) -> None:
        forms = [_char_forms(ch) for ch in secret]
        self.head = re.compile("".join("(?:" + "|".join(f) + ")" for f in forms[:required]))
        self.units = [[re.compile(form) for form in unit] for unit in forms]
        self.required = required

    def _longest(self, text: str, start: int) -> int:
        """The furthest end of a match that starts at `start` (-1: none)."""
        ends, best = {start}, -1
        for index, unit in enumerate(self.units):
            ends = {found.end() for pos in ends for form in unit
                    if (found := form.match(text, pos)) is not None}
            if not ends:
                break
            if index + 1 >= self.required:
                best = max(best, *ends)
        return best

    def spans(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        pos = 0
        while (hit := self.head.search(text, pos)) is not None:
            end = self._longest(text, hit.start())
            found.append((hit.start(), max(end, hit.end())))
            pos = hit.start() + 1
        return found


class SecretMasker:
    """Replaces every spelling of the given secrets in a text with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET},
                              key=lambda s: (-len(s), s))
        matchers: list[tuple[int, _Matcher]] = []
        for secret in self.secrets:
            key = secret.rsplit(":", 1)[1] if ":" in secret else ""
            if len(key) >= MIN_PREFIX:
                # `<bot id>:<key>` (Telegram): the id is public and shows in logs on its own,
                # so the whole token is masked whole, and the key alone (or cut short) too.
                matchers.append((len(secret), _Matcher(secret, len(secret))))
                matchers.append((len(key), _Matcher(key, MIN_PREFIX)))
            else:
                matchers.append((len(secret), _Matcher(secret, min(len(secret), MIN_PREFIX))))
        matchers.sort(key=lambda m: -m[0])
        self._matchers = [m for _, m in matchers]

    def __bool__(self) -> bool:
        return bool(self._matchers)

    def mask(self, text: str) -> str:
        # Every secret's matches in the text as it is, then merged: masking one secret first
        # would cut into a longer spelling of another (a password and its decoded form).
        spans = sorted(span for matcher in self._matchers for span in matcher.spans(text))
        if not spans:
            return text
        pieces: list[str] = []
        pos = 0
        start, end = spans[0]
        for next_start, next_end in spans[1:]:
            if next_start <= end:
                end = max(end, next_end)
                continue
            pieces += [text[pos:start], MASK]
            pos, (start, end) = end, (next_start, next_end)
        pieces += [text[pos:start], MASK, text[end:]]
        return "".join(pieces)
