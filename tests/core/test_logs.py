"""Secrets never reach the logs, whoever logs them."""

from __future__ import annotations

import logging

import pytest

from core.logs import SecretMaskingFilter, setup_logging


def test_tokens_masked_in_messages_args_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    token = "123456:AAH-secret-token"
    setup_logging([token])
    other = logging.getLogger("some.library")
    other.warning("POST https://example.invalid/bot%s/getUpdates", token)
    try:
        raise RuntimeError(f"failed calling /bot{token}/sendVoice")
    except RuntimeError:
        other.exception("send failed")
    err = capsys.readouterr().err
    assert token not in err
    assert "/bot***/getUpdates" in err
    assert "/bot***/sendVoice" in err


def test_short_values_are_not_treated_as_secrets() -> None:
    f = SecretMaskingFilter(["", "ab"])
    assert f.secrets == []


def test_url_encoded_and_key_only_spellings_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    token = "123456789:AAFake-Key_0123456789"
    setup_logging([token])
    logging.getLogger("httpx").warning("GET /file/bot123456789%3AAAFake-Key_0123456789/doc.png")
    logging.getLogger("x").warning("key=AAFake-Key_0123456789")
    err = capsys.readouterr().err
    assert "AAFake-Key_0123456789" not in err
    assert "/file/bot***/doc.png" in err
