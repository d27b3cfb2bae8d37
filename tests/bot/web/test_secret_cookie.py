"""The cookie that stands in for the web token is as secret as the token: never in a log line."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie

import pytest

from core.config import secret_values
from core.logs import setup_logging
from tests.bot.web.conftest import WebFactory

pytestmark = pytest.mark.timeout(120)


async def test_the_token_cookie_is_masked_in_logs(start_web: WebFactory,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    token = "s3cret-web-token"
    web = await start_web(web={"token": token})
    entry = await web.client.get(f"/?token={token}", allow_redirects=False)
    assert entry.status == 303
    cookies = SimpleCookie(entry.headers["Set-Cookie"])
    (value,) = [m.value for m in cookies.values()]
    assert len(value) >= 16 and token not in value

    setup_logging(secret_values(web.services.config))
    logging.getLogger("aiohttp.server").error("bad request, Cookie: sonify_token=%s", value)
    err = capsys.readouterr().err
    assert value not in err and value[:8] not in err
    assert "Cookie: sonify_token=***" in err
