"""Starting and stopping: bad settings fail at start-up with one line, without the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.telegram.adapter import TelegramAdapter
from core.errors import ConfigError
from core.services import Services
from tests.bot.telegram.conftest import TOKEN, bot_config
from tests.bot.telegram.fake_bot_api import FakeBotAPI


@pytest.fixture
async def services_for(tmp_path: Path, fake: FakeBotAPI) -> AsyncIterator:
    made: list[Services] = []

    async def make(**telegram: object) -> Services:
        for earlier in made:  # one process at a time on a request log
            await earlier.close()
        services = await Services.create(bot_config(tmp_path, fake, telegram=telegram))
        made.append(services)
        return services

    yield make
    for services in made:
        await services.close()


async def test_refused_token_is_a_config_error(services_for, fake: FakeBotAPI) -> None:
    wrong = "987654321:WrongTokenWrongTokenWrong"
    adapter = TelegramAdapter(await services_for(token=wrong))
    with pytest.raises(ConfigError) as info:
        await adapter.start()
    assert "[telegram] token" in str(info.value) and wrong not in str(info.value)
    await adapter.stop()  # never started: nothing to do


async def test_missing_token_and_bad_secret(services_for) -> None:
    with pytest.raises(ConfigError, match=r"\[telegram\] token is not set"):
        TelegramAdapter(await services_for(token=""))
    with pytest.raises(ConfigError, match="webhook_secret"):
        TelegramAdapter(await services_for(webhook_secret="has spaces!"))


async def test_failed_start_releases_the_webhook_port(services_for, fake: FakeBotAPI,
                                                      unused_tcp_port: int) -> None:
    settings = {"mode": "webhook", "webhook_url": f"http://127.0.0.1:{unused_tcp_port}/hook",
                "webhook_listen": "127.0.0.1", "webhook_port": unused_tcp_port}
    fake.fail_next("setWebhook", status=400, retry_after=None,
                   description="Bad Request: bad webhook")
    adapter = TelegramAdapter(await services_for(**settings))
    with pytest.raises(Exception, match=r"(?i)bad webhook"):
        await adapter.start()
    # The port is free again: a second bot can take it.
    again = TelegramAdapter(await services_for(**settings))
    await again.start()
    assert fake.webhook is not None and fake.webhook["url"].endswith("/hook")
    await again.stop()


async def test_start_survives_a_dropped_connection(services_for, fake: FakeBotAPI) -> None:
    fake.drop_next("getMe")
    adapter = TelegramAdapter(await services_for())
    await adapter.start()
    assert fake.calls_of("getMe")[0].result == {"error_code": 0}
    assert len(fake.calls_of("getMe")) == 2
    assert fake.calls_of("setMyCommands")  # and it went on to start
    await adapter.stop()


async def test_unreachable_bot_api_is_one_line(services_for, unused_tcp_port: int) -> None:
    nowhere = f"http://127.0.0.1:{unused_tcp_port}"
    adapter = TelegramAdapter(await services_for(api_base_url=f"{nowhere}/bot"))
    with pytest.raises(ConfigError) as info:
        await adapter.start()
    message = str(info.value)
    # Without a network the fault is the network, not a setting.
    assert f"cannot reach Telegram at 127.0.0.1:{unused_tcp_port} (" in message
    assert "check this machine's network connection" in message
    assert "api_base_url" not in message
    assert "\n" not in message and TOKEN.split(":")[1] not in message
