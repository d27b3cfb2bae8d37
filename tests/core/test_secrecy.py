"""Every spelling of every secret is masked: encoded in any case or in part, decoded, escaped,
cut short; URL passwords are secrets; what is not a secret stays readable."""

from __future__ import annotations

import itertools
import json
import logging
from urllib.parse import quote

import pytest

from core.config import parse_config, secret_values
from core.logs import setup_logging
from core.secrecy import MASK, SecretMasker, url_passwords, web_cookie_value

# URL-special characters: "@" and ":" end the user or the host if left raw, "%" starts an
# escape, "/" "?" "#" end the authority, "+" reads as a space in a query, plus a non-ASCII one.
PASSWORD = "p@ss:wo/rd?#+%é"


def encodings(secret: str) -> set[str]:
    """The secret with each special character raw or escaped (%XX upper or lower case)."""
    options = []
    for ch in secret:
        escaped = quote(ch, safe="")
        forms = {ch}
        if escaped != ch:
            forms |= {escaped, escaped.lower()}
        options.append(sorted(forms))
    return {"".join(p) for p in itertools.product(*options)}


def test_a_password_is_masked_in_every_mix_of_encodings() -> None:
    masker = SecretMasker([PASSWORD])
    spellings = encodings(PASSWORD)
    assert len(spellings) > 1000  # raw, fully encoded (both cases) and every partial mix
    for spelling in spellings:
        assert masker.mask(f"connect to db as sonify:{spelling}@db.example failed") == (
            f"connect to db as sonify:{MASK}@db.example failed"), spelling


@pytest.mark.parametrize("spelling", [
    repr(PASSWORD), json.dumps(PASSWORD), json.dumps(PASSWORD, ensure_ascii=False),
    quote(quote(PASSWORD, safe=""), safe=""),  # encoded twice, as when a URL is re-quoted
    PASSWORD.replace("+", "%2B").replace("é", "%E9"),  # Latin-1 escape of a non-ASCII char
])
def test_escaped_and_double_encoded_forms_are_masked(spelling: str) -> None:
    # The double-encoded form is matched by the secret as written in the URL (raw "%").
    masker = SecretMasker([PASSWORD, quote(PASSWORD, safe="")])
    masked = masker.mask(f"error: {spelling}!")
    assert "ss:wo" not in masked and "ss%3Awo" not in masked.replace("%3a", "%3A")
    assert masked.startswith("error: ") and masked.endswith("!") and MASK in masked


def test_a_secret_cut_short_is_masked_from_eight_characters() -> None:
    token = "web-token-0123456789abcdef"
    masker = SecretMasker([token])
    assert masker.mask(f"token={token[:12]}… (truncated)") == f"token={MASK}… (truncated)"
    assert masker.mask(f"token={token[:8]}") == f"token={MASK}"
    assert masker.mask(f"short {token[:7]} stays") == f"short {token[:7]} stays"


def test_a_telegram_bot_id_stays_readable_its_key_does_not() -> None:
    token = "123456789:AAFake-Key_0123456789"
    masker = SecretMasker([token])
    assert masker.mask(f"/bot{token}/getMe") == f"/bot{MASK}/getMe"
    assert masker.mask("bot 123456789 started") == "bot 123456789 started"
    assert masker.mask("key AAFake-Key_01…") == f"key {MASK}…"


def test_ordinary_text_is_left_alone() -> None:
    masker = SecretMasker(["", "ab", "p@ss:word"])
    assert masker.secrets == ["p@ss:word"]
    text = "p@ss is not the password, nor is word; 100% of p%40ss: is not enough"
    assert masker.mask(text) == text


@pytest.mark.parametrize(("url", "passwords"), [
    ("postgresql+asyncpg://user:p%40ss:word@127.0.0.1:1/db", {"p%40ss:word", "p@ss:word"}),
    ("redis://:s3cret-pw@redis.example:6379/0", {"s3cret-pw"}),
    ("postgresql://user@db.example/sonify?password=q%26pw&sslmode=require", {"q%26pw", "q&pw"}),
    ("postgresql://user:raw@at@db.example/db", {"raw", "raw@at"}),  # read as SQLAlchemy does too
    ("sqlite+aiosqlite:///data/sonify.db", set()),
    ("https://api.telegram.org/bot", set()),
    ("http://[::1", set()),  # not a URL anyone can read: nothing to find, no crash
    ("not a url: really", set()),
])
def test_url_passwords_are_found_as_written_and_decoded(url: str, passwords: set[str]) -> None:
    assert set(url_passwords(url)) == passwords


def test_any_url_valued_key_gives_up_its_password_and_the_web_cookie_is_a_secret() -> None:
    config = parse_config({
        "storage": {"database_url": "postgresql+asyncpg://sonify:db-pw%21@db.example/sonify"},
        "jobs": {"redis_url": "redis://:r3dis-pw@redis.example:6379/0"},
        "discord": {"api_base_url": "https://proxy-user:proxy-pw@proxy.example/api/v10"},
        "web": {"token": "web-token-123"}}, environ={})
    secrets = set(secret_values(config))
    assert {"db-pw%21", "db-pw!", "r3dis-pw", "proxy-pw", "web-token-123"} <= secrets
    assert web_cookie_value("web-token-123") in secrets
    assert not {"sonify", "proxy-user", "db.example"} & secrets  # user names and hosts show


def test_every_log_line_hides_the_database_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://user:p%40ss:word@127.0.0.1:1/db"
    config = parse_config({}, environ={"SONIFY_DATABASE_URL": url})
    setup_logging(secret_values(config))
    library = logging.getLogger("some.driver")
    library.error("cannot connect to %s", url)
    library.error("password authentication failed (password='p@ss:word')")
    try:
        raise ConnectionError("dsn=postgresql://user:p%40ss%3aword@127.0.0.1:1/db")
    except ConnectionError:
        library.exception("pool failure")
    err = capsys.readouterr().err
    for spelling in encodings("p@ss:word") | {"p%40ss%3aword", "ss:word", "p@ss:w"}:
        assert spelling not in err, spelling
    assert "user:***@127.0.0.1:1/db" in err and "password='***'" in err


# Issue 20: a password whose "%" reads as the start of an escape ("%25" is both the escape of
# "%" and "%" followed by "25") was masked only up to there: `?password=***SecretTail`.
@pytest.mark.parametrize("url", [
    "postgresql+asyncpg://sonify@db.example/sonify?password=LongHead%25SecretTail",
    "postgresql+asyncpg://sonify:LongHead%25SecretTail@db.example/sonify",
    "redis://:LongHead%25SecretTail@redis.example:6379/0",
    "redis://redis.example:6379/0?password=LongHead%25SecretTail",
    "redis://default:LongHead%25SecretTail@redis.example:6379/0?db=1",
    "rediss://redis.example:6379/0?db=2&PASSWORD=LongHead%25SecretTail",
])
def test_a_percent_encoded_password_is_masked_whole_in_every_spelling(url: str) -> None:
    decoded = "LongHead%SecretTail"
    masker = SecretMasker(url_passwords(url))
    spellings = {
        url, "LongHead%25SecretTail", decoded,  # as written, decoded
        "LongHead%2525SecretTail",  # encoded once more (a URL quoted again)
        "LongHead%25SecretT", "LongHead%25Sec",  # cut short
        "LongHead%Secre", "LongHead%2",
    }
    for spelling in spellings:
        masked = masker.mask(f"cannot connect: {spelling} (tried 3 times)")
        for piece in ("Head", "Secret", "Tail", "cretT", "%25S"):
            assert piece not in masked, (spelling, masked)
        assert masked.startswith("cannot connect: ") and masked.endswith(" (tried 3 times)")
        assert MASK in masked


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://user:pa%40ss%2Fword%3F@db.example/x", "postgresql://user:***@db.example/x"),
    ("postgresql://user:pa%40ss%2fword%3f@db.example/x", "postgresql://user:***@db.example/x"),
    ("redis://:pa%40ss%2Fword%3F@r.example:6379/0", "redis://:***@r.example:6379/0"),
])
def test_userinfo_passwords_are_masked_in_either_case_of_hex(url: str, shown: str) -> None:
    masker = SecretMasker(url_passwords(url))
    assert masker.mask(url) == shown
    for spelling in ("pa@ss/word?", "pa%40ss/word?", "pa@ss%2fword%3F", "pa@ss/wo"):
        assert masker.mask(f"[{spelling}]") == f"[{MASK}]", spelling
