"""Text from users: words no database can store are refused (`words_invalid`), and control
characters never reach the operator's terminal raw, whoever logs them."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import BadRequest
from core.i18n import describe_error
from core.jobs.journal import Journal
from core.logs import setup_logging
from core.records import RequestRecord, RequestStatus
from core.stats.collect import collect_stats
from core.stats.render import render_stats_text
from core.storage.request_log import RequestLog
from core.user_text import check_words, escape_controls, storable
from tests.conftest import make_config
from tests.core.jobs.engine_support import running_engine, text_request

pytestmark = pytest.mark.timeout(120)

LONE_SURROGATE = "\ud800 x"
WITH_NUL = "x\u0000y"
# A terminal title (OSC 0), a colour (CSI), a bell, a C1 CSI and a bidi override.
TERMINAL_TRICKS = "\x1b]0;owned\x07\x1b[31mred\x9b2J\u202eevil"


@pytest.mark.parametrize("words", [LONE_SURROGATE, WITH_NUL, "a\x1b[2Jb", "x\x7fy",
                                   "\udfff", "ok \x9b"])
def test_words_no_database_or_terminal_can_take_are_refused(words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_words(words)
    assert refused.value.code == "words_invalid"
    assert describe_error(refused.value, "en").startswith("Your description")
    assert describe_error(refused.value, "es").startswith("Tu descripción")


@pytest.mark.parametrize("words", ["rain on a tin roof", "lluvia en el tejado, ¡fuerte!",
                                   "猫の鳴き声 🐈‍⬛", "tab\there", "two\nlines", "bidi \u202b ok"])
def test_ordinary_words_pass(words: str) -> None:
    check_words(words)
    assert storable(words) == words


def test_refused_words_are_kept_storable() -> None:
    assert storable(LONE_SURROGATE) == "\ufffd x"
    assert storable(WITH_NUL) == "x\ufffdy"
    assert storable(None) is None
    assert storable(LONE_SURROGATE).encode("utf-8")  # type: ignore[union-attr]


def test_escapes_are_written_as_python_writes_them() -> None:
    assert escape_controls(TERMINAL_TRICKS) == (
        "\\x1b]0;owned\\x07\\x1b[31mred\\x9b2J\\u202eevil")
    assert escape_controls("a\nb\tc", keep="\n") == "a\nb\\x09c"
    assert escape_controls(LONE_SURROGATE) == "\\ud800 x"
    plain = "nothing to escape: ñ 🐈"
    assert escape_controls(plain) is plain


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_the_engine_refuses_them_on_both_databases_and_logs_a_row(
        database: str, tmp_path: Path, request: pytest.FixtureRequest,
        tiny_pipeline: object, capsys: pytest.CaptureFixture[str]) -> None:
    storage = {}
    if database == "postgresql":
        storage = {"database_url": request.getfixturevalue("postgres_url")}
    config = make_config(tmp_path, storage=storage)
    setup_logging()
    async with running_engine(config, tiny_pipeline) as engine:
        for n, words in enumerate((LONE_SURROGATE, WITH_NUL, TERMINAL_TRICKS)):
            with pytest.raises(BadRequest) as refused:
                await engine.submit(text_request(config, f"u{n}", words))
            assert refused.value.code == "words_invalid"
        rows = await engine.request_log.rows_since(0)
        assert sorted((r.user_id, r.status, r.reason, r.prompt) for r in rows) == [
            ("u0", "rejected", "words_invalid", "\ufffd x"),
            ("u1", "rejected", "words_invalid", "x\ufffdy"),
            ("u2", "rejected", "words_invalid", storable(TERMINAL_TRICKS))]
        # The service goes on: ordinary words from the same user are rendered.
        handle = await engine.submit(text_request(config, "u1", "rain on a tin roof"))
        assert (await handle.result()).prompt == "rain on a tin roof"
    err = capsys.readouterr().err
    assert "→ rejected (words_invalid)" in err and "\\ud800 x" in err and "x\\x00y" in err
    assert "\x1b" not in err and "\x00" not in err and "\x9b" not in err


def test_every_log_line_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(["s3cret-token-value"])
    Journal().outcome("abc", "web:ip:127.0.0.1", "text", RequestStatus.DONE, text=TERMINAL_TRICKS)
    library = logging.getLogger("some.library")
    library.warning("fetched %r and %s", TERMINAL_TRICKS, "line\nforged INFO root: ok\x00")
    try:
        raise ValueError(f"bad words {TERMINAL_TRICKS} s3cret-token-value")
    except ValueError:
        library.exception("failed on %s", LONE_SURROGATE)
    err = capsys.readouterr().err
    for raw in ("\x1b", "\x07", "\x00", "\x9b", "\u202e", "\ud800"):
        assert raw not in err, repr(raw)
    assert "\\x1b]0;owned\\x07\\x1b[31mred" in err and "line\\x0aforged" in err
    assert "s3cret-token-value" not in err and "failed on \\ud800 x" in err
    assert "Traceback (most recent call last):\n" in err  # tracebacks keep their lines


async def test_stats_text_escapes_what_users_named_themselves(tmp_path: Path) -> None:
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        await request_log.insert(RequestRecord(
            id="r1", platform="telegram", user_id="42", chat_id="42", source_kind="text",
            status="done", created_at=time.time(), user_name="Eve\x1b]0;pwn\x07\x00"))
        stats = await collect_stats(request_log)
    finally:
        await request_log.close()
    # The row keeps the name without its controls (PostgreSQL cannot store the NUL).
    assert stats.top_users[0].name == "Eve\ufffd]0;pwn\ufffd\ufffd"
    # A name that reached the stats some other way is escaped where it is shown.
    stats = replace(stats, top_users=[replace(stats.top_users[0], name="Eve\x1b]0;pwn\x07")])
    text = render_stats_text(stats)
    assert "Eve\\x1b]0;pwn\\x07" in text and "\x1b" not in text
