"""Chat settings: kept with an audit row per change, within the config, stale panels refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import SettingRefused
from core.settings.service import ChatSettings
from core.storage.chat_settings import Change
from core.storage.request_log import RequestLog
from tests.conftest import make_config


async def test_changes_are_kept_audited_and_read_back_by_a_fresh_process(
        log_url: str, tmp_path: Path) -> None:
    config = make_config(tmp_path, jobs={"per_user_per_hour": 20})
    log = await RequestLog.open(log_url)
    try:
        settings = ChatSettings(config, log.chat_settings)
        await settings.start()
        assert settings.get("discord", "g1", "per_hour") is None
        scope = await settings.change("discord", "g1", [Change("per_hour", 5),
                                                        Change("watched", True, "c7")],
                                      who="discord:42", revision=0)
        assert scope.revision == 2
        assert settings.get("discord", "g1", "per_hour") == 5
        assert settings.get("discord", "g1", "watched", "c7") is True
        await settings.change("discord", "g1", [Change("per_hour", None)], who="discord:43",
                              revision=2)
        audit = await settings.audit("discord", "g1")
        assert [(a.key, a.channel_id, a.old_value, a.new_value, a.changed_by) for a in audit] == [
            ("per_hour", "", 5, None, "discord:43"),
            ("watched", "c7", None, True, "discord:42"),
            ("per_hour", "", None, 5, "discord:42")]

        other = ChatSettings(config, log.chat_settings)  # another process, started later
        await other.start()
        assert other.get("discord", "g1", "per_hour") is None
        assert other.of("discord", "g1").channels("watched") == {"c7": True}
        assert other.of("discord", "g1").revision == 3
    finally:
        await log.close()


async def test_out_of_bounds_stale_and_forbidden_changes_change_nothing(
        log_url: str, tmp_path: Path) -> None:
    config = make_config(tmp_path, jobs={"per_user_per_hour": 20},
                         generation={"max_seconds": 8.0}, telegram={"chat_settings": False})
    log = await RequestLog.open(log_url)
    try:
        settings = ChatSettings(config, log.chat_settings)
        await settings.start()
        for key, value, code in (("per_hour", 21, "setting_bounds"),
                                 ("per_hour", 0, "setting_bounds"),
                                 ("seconds", 9.0, "setting_bounds"),
                                 ("reply_style", "carrier pigeon", "setting_choice"),
                                 ("language", "xx", "setting_choice"),
                                 ("enabled", "yes", "setting_choice")):
            with pytest.raises(SettingRefused) as refused:
                await settings.change("discord", "g1", [Change("seconds", 4.0),
                                                        Change(key, value)],
                                      who="discord:1", revision=0)
            assert refused.value.code == code
        assert await settings.audit("discord", "g1") == []
        await settings.change("discord", "g1", [Change("seconds", 4.0)], who="discord:1",
                              revision=0)
        with pytest.raises(SettingRefused) as stale:  # a panel shown before that change
            await settings.change("discord", "g1", [Change("seconds", 6.0)], who="discord:2",
                                  revision=0)
        assert stale.value.code == "setting_stale"
        assert settings.get("discord", "g1", "seconds") == 4.0
        with pytest.raises(SettingRefused) as off:
            await settings.change("telegram", "-100", [Change("group_photos", True)],
                                  who="telegram:1", revision=None)
        assert off.value.code == "settings_off"
        assert len(await settings.audit("discord", "g1")) == 1
    finally:
        await log.close()


async def test_a_bound_lowered_in_the_config_applies_to_values_stored_before(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    log = await RequestLog.open(url)
    try:
        wide = ChatSettings(make_config(tmp_path, jobs={"per_user_per_hour": 50}),
                            log.chat_settings)
        await wide.start()
        await wide.change("telegram", "-5", [Change("per_hour", 40)], who="t:1", revision=0)
        narrow = ChatSettings(make_config(tmp_path, jobs={"per_user_per_hour": 10}),
                              log.chat_settings)
        await narrow.start()
        assert narrow.get("telegram", "-5", "per_hour") == 10
    finally:
        await log.close()
