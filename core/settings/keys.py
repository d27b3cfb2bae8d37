"""The chat settings' keys: their types and their bounds, which come from the config file.

Chat settings only narrow what the operator allows: a clip length up to `[generation]
max_seconds`, an hourly limit up to `[jobs] per_user_per_hour`. A value stored under an
older, wider config is clamped when read, so lowering a bound takes effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import MIN_SECONDS, Config
from core.errors import SettingRefused
from core.i18n import CATALOGUE

DISCORD, TELEGRAM = "discord", "telegram"
# How an answer's clip is sent, per platform (the config's default: see `default_reply_style`).
REPLY_STYLES: dict[str, tuple[str, ...]] = {DISCORD: ("voice", "file"),
                                            TELEGRAM: ("voice", "audio", "both")}


@dataclass(frozen=True)
class Key:
    """One setting: its value type and, for numbers, whether bounds apply."""

    name: str
    kind: type
    per_channel: bool = False


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("enabled", bool),  # off: only admins' commands are answered
    Key("seconds", float),  # the default clip length
    Key("per_hour", int),  # each member's requests per hour
    Key("language", str),  # replies' language where the user's is unknown
    Key("reply_style", str),
    Key("group_photos", bool),  # Telegram: answer every photo in the group
    Key("watched", bool, per_channel=True),  # Discord: pictures here are answered
)}


def check(config: Config, platform: str, key: str, value: Any) -> Any:
    """`value` as `key` stores it; SettingRefused saying why it cannot be (None: default)."""
    spec = KEYS.get(key)
    if spec is None:
        raise SettingRefused(f"unknown setting {key!r}", code="setting_choice")
    if value is None:
        return None
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (spec.kind is not bool and isinstance(value, bool)):
        raise SettingRefused(f"{key} must be {spec.kind.__name__}", code="setting_choice")
    number = float(value) if isinstance(value, int | float) else 0.0
    if key == "seconds":
        hi = config.generation.max_seconds
        if not MIN_SECONDS <= number <= hi:
            raise SettingRefused(f"{value} s is outside {MIN_SECONDS}-{hi}",
                                 code="setting_bounds", lo=MIN_SECONDS, hi=hi)
    elif key == "per_hour":
        hi = config.jobs.per_user_per_hour
        if not 1 <= number <= hi:
            raise SettingRefused(f"{value} per hour is outside 1-{hi}", code="setting_bounds",
                                 lo=1, hi=hi)
    elif key == "language" and value not in CATALOGUE:
        raise SettingRefused(f"no language {value!r}", code="setting_choice")
    elif key == "reply_style" and value not in REPLY_STYLES.get(platform, ()):
        raise SettingRefused(f"no reply style {value!r}", code="setting_choice")
    return value


def clamp(config: Config, key: str, value: Any) -> Any:
    """A stored value within the config's current bounds (the operator may have lowered them)."""
    if key == "seconds":
        return min(max(float(value), MIN_SECONDS), config.generation.max_seconds)
    if key == "per_hour":
        return min(max(int(value), 1), config.jobs.per_user_per_hour)
    return value


def chat_settings_allowed(config: Config, platform: str) -> bool:
    """`[discord] chat_settings` / `[telegram] chat_settings`: the operator allows them."""
    section = getattr(config, platform, None)
    return bool(getattr(section, "chat_settings", False))
