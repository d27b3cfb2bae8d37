"""`sonify run` checks the Telegram token before the models load: shape, then one getMe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import serve
from core.config import Config
from core.errors import ConfigError, ModelMissingError
from tests.bot.telegram.conftest import TOKEN
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.conftest import make_config


def real_models_config(tmp_path: Path, **telegram: object) -> Config:
    """Real preset, nothing cached, offline: loading the models would stop with its own line,
    so a token error seen instead was found before the models load."""
    return make_config(tmp_path, models={"preset": "default",
                                         "cache_dir": str(tmp_path / "empty-cache")},
                       telegram=telegram, web={"enabled": "false"})


async def start_up_error(config: Config) -> Exception:
    with pytest.raises((ConfigError, ModelMissingError)) as info:
        await asyncio.wait_for(serve(config, asyncio.Event()), 120)
    return info.value


async def test_a_malformed_token_is_told_before_any_call(tmp_path: Path,
                                                         fake: FakeBotAPI) -> None:
    for wrong in ("123456789", "bot123456789:AAFake-Token_for-tests-only-xyz",
                  f"{TOKEN} ", "123456789:short"):
        error = await start_up_error(real_models_config(tmp_path, token=wrong,
                                                        api_base_url=fake.api_base))
        assert isinstance(error, ConfigError)
        assert str(error) == ("test config: [telegram] token (or SONIFY_TELEGRAM_TOKEN) does "
                              "not look like a bot token (digits, a colon, then about 35 "
                              "letters and digits); copy it again from @BotFather")
    assert fake.calls_of("getMe") == []


async def test_a_token_telegram_refuses_is_named(tmp_path: Path, fake: FakeBotAPI) -> None:
    wrong = "987654321:WrongTokenWrongTokenWrong"
    error = await start_up_error(real_models_config(tmp_path, token=wrong,
                                                    api_base_url=fake.api_base))
    assert isinstance(error, ConfigError)
    assert str(error).startswith("test config: [telegram] token (or SONIFY_TELEGRAM_TOKEN): "
                                 "Telegram says it is not valid; copy it again from @BotFather")
    assert wrong.split(":")[1] not in str(error)


async def test_an_unreachable_telegram_names_the_network(tmp_path: Path,
                                                         unused_tcp_port: int) -> None:
    error = await start_up_error(real_models_config(
        tmp_path, token=TOKEN, api_base_url=f"http://127.0.0.1:{unused_tcp_port}/bot"))
    assert isinstance(error, ConfigError)
    message = str(error)
    assert message.startswith(f"test config: cannot reach Telegram at 127.0.0.1:{unused_tcp_port}"
                              " to check the token (")
    assert message.endswith("; check this machine's network connection (or proxy)")
    assert "api_base_url" not in message and TOKEN.split(":")[1] not in message


async def test_a_good_token_goes_on_to_load_the_models(tmp_path: Path, fake: FakeBotAPI) -> None:
    error = await start_up_error(real_models_config(tmp_path, token=TOKEN,
                                                    api_base_url=fake.api_base))
    assert isinstance(error, ModelMissingError)  # past the token, stopped by the empty cache
    assert len(fake.calls_of("getMe")) == 1
