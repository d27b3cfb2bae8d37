"""Secrets never reach the logs, whoever logs them."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import pytest

from core.config import Config
from core.errors import BadRequest
from core.logs import FIELDS, SecretMaskingFilter, setup_logging, use_user_key
from tests.core.jobs.engine_support import running_engine, text_request


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


def test_json_lines_mask_secrets_and_escape_controls_in_the_message_and_fields(
        capsys: pytest.CaptureFixture[str]) -> None:
    token = "123456789:AAFake-Key_0123456789"
    setup_logging([token], fmt="json")
    log = logging.getLogger("some.library")
    log.warning("calling /bot%s/getMe \x1b[31mred\x1b[0m", token, extra={FIELDS: {
        "route": f"/bot{token}/x\x1b]0;title\x07", "platform": "web", "user_id": "ip:1.2.3.4",
        "seconds": 0.123456, "status": 200}})
    try:
        raise RuntimeError(f"failed calling /bot{token}/sendVoice\x1b[2J")
    except RuntimeError:
        log.exception("send failed")
    err = capsys.readouterr().err
    assert "AAFake-Key_0123456789" not in err
    assert "\x1b" not in err and "\x07" not in err
    first, second = (json.loads(line) for line in err.splitlines())
    assert first["message"] == "calling /bot***/getMe \\x1b[31mred\\x1b[0m"
    assert (first["level"], first["logger"]) == ("WARNING", "some.library")
    assert datetime.datetime.fromisoformat(first["time"]).tzinfo is not None
    assert first["route"] == "/bot***/x\\x1b]0;title\\x07"
    assert (first["seconds"], first["status"], first["platform"]) == (0.123, 200, "web")
    assert "user_id" not in first and "user" not in first  # no key yet: no user at all
    assert second["message"] == "send failed"
    assert "/bot***/sendVoice\\x1b[2J" in second["exception"]
    assert second["exception"].startswith("Traceback")


async def test_a_json_line_per_request_carries_its_fields(
        tiny_config: Config, tiny_pipeline: Any, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(fmt="json")
    use_user_key(b"k" * 32)
    async with running_engine(tiny_config, tiny_pipeline) as engine:
        handle = await engine.submit(text_request(tiny_config, "ann", "a distant foghorn",
                                                  seed=3))
        await handle.result()
        again = await engine.submit(text_request(tiny_config, "ann", "a distant foghorn",
                                                 seed=3))
        await again.result()
        with pytest.raises(BadRequest):
            await engine.submit(text_request(tiny_config, "bob", "   "))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    done, hit, refused = [line for line in lines if line["logger"] == "sonify.requests"]
    assert {key: done[key] for key in ("request_id", "platform", "kind", "outcome", "code",
                                       "batch_size", "level")} == {
        "request_id": handle.id, "platform": "telegram", "kind": "text", "outcome": "done",
        "code": None, "batch_size": 1, "level": "INFO"}
    assert done["seconds"] > 0
    assert done["message"].startswith(f"request {handle.id} telegram:ann text → done")
    assert (hit["request_id"], hit["outcome"]) == (again.id, "cache_hit")
    assert (refused["outcome"], refused["code"]) == ("refused", "bad_option")
    # The user as a keyed hash: the same for one user, different for another, not the id.
    assert done["user"] == hit["user"] != refused["user"]
    assert len(done["user"]) == 16 and "ann" not in done["user"]
    assert "user_id" not in done
