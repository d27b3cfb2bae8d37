"""`sonify run` checks the Discord token before the models load: shape, then users/@me."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import serve
from core.config import Config
from core.errors import ConfigError, ModelMissingError
from tests.bot.discord.conftest import TOKEN
from tests.bot.discord.fake_discord import FakeDiscord
from tests.conftest import make_config


def real_models_config(tmp_path: Path, **discord: object) -> Config:
    """Real preset, nothing cached, offline: a token error seen instead of the missing-model
    one was found before the models load."""
    return make_config(tmp_path, models={"preset": "default",
                                         "cache_dir": str(tmp_path / "empty-cache")},
                       discord=discord, web={"enabled": "false"})


async def start_up_error(config: Config) -> Exception:
    with pytest.raises((ConfigError, ModelMissingError)) as info:
        await asyncio.wait_for(serve(config, asyncio.Event()), 120)
    return info.value


def me_calls(fake: FakeDiscord) -> int:
    return sum(1 for call in fake.calls if call.path == "/users/@me")


async def test_a_malformed_token_is_told_before_any_call(tmp_path: Path,
                                                         fake: FakeDiscord) -> None:
    for wrong, hint in (("1098765432109876543", ""),  # the application id
                        ("0123456789abcdef0123456789abcdef", ""),  # the client secret
                        (f"Bot {TOKEN}", " without the \"Bot \" prefix")):
        error = await start_up_error(real_models_config(tmp_path, token=wrong,
                                                        api_base_url=fake.api_url))
        assert isinstance(error, ConfigError)
        assert str(error) == (
            "test config: [discord] token (or SONIFY_DISCORD_TOKEN) does not look like a bot "
            "token (three parts joined by dots); copy it from the developer portal's Bot page "
            f"(Reset Token){hint}, not the application id, public key or client secret")
    assert me_calls(fake) == 0


async def test_a_token_discord_refuses_is_named(tmp_path: Path, fake: FakeDiscord) -> None:
    fake.bot_token = TOKEN
    wrong = TOKEN.replace("GfAkEt", "Wrong1")
    error = await start_up_error(real_models_config(tmp_path, token=wrong,
                                                    api_base_url=fake.api_url))
    assert isinstance(error, ConfigError)
    assert str(error) == ("test config: [discord] token (or SONIFY_DISCORD_TOKEN): Discord says "
                          "it is not valid; copy it again from the developer portal's Bot page "
                          "(Reset Token)")
    assert me_calls(fake) == 1


async def test_an_unreachable_discord_names_the_network(tmp_path: Path,
                                                        unused_tcp_port: int) -> None:
    error = await start_up_error(real_models_config(
        tmp_path, token=TOKEN, api_base_url=f"http://127.0.0.1:{unused_tcp_port}/api/v10"))
    assert isinstance(error, ConfigError)
    message = str(error)
    assert message.startswith(f"test config: cannot reach Discord at 127.0.0.1:{unused_tcp_port}"
                              " to check the token (")
    assert message.endswith("; check this machine's network connection (or proxy)")
    assert TOKEN not in message


async def test_a_good_token_goes_on_to_load_the_models(tmp_path: Path, fake: FakeDiscord) -> None:
    fake.bot_token = TOKEN
    error = await start_up_error(real_models_config(tmp_path, token=TOKEN,
                                                    api_base_url=fake.api_url))
    assert isinstance(error, ModelMissingError)  # past the token, stopped by the empty cache
    assert me_calls(fake) == 1
