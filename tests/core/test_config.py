"""Configuration validation: every error names the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from core.config import SECTIONS, Config, load_config, parse_config, secret_values
from core.errors import ConfigError
from core.secrecy import web_cookie_value

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.models.caption_model == "coca_ViT-L-14"
    assert cfg.models.caption_pretrained == "mscoco_finetuned_laion2b_s13b_b90k"
    assert cfg.web_enabled  # no bot token: the web page is the default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[jobs]\nmax_batchh = 4\n", "[jobs] max_batchh: unknown key"),
        ("[jobs]\nmax_batch = 'four'\n", "[jobs] max_batch: expected an integer, got 'four'"),
        ("[jobs]\nmax_batch = 0\n", "[jobs] max_batch: 0 is out of range; allowed 1 to 64"),
        ("[models]\ndevice = 'tpu'\n", "[models] device: 'tpu' is not allowed"),
        ("[images]\nallow_private_networks = 1\n",
         "[images] allow_private_networks: expected true or false, got 1"),
        ("[telegram]\nadmins = [1, 'x']\n", "[telegram] admins: expected an integer, got 'x'"),
        ("[telegram]\nadmins = 5\n", "[telegram] admins: expected a list of integers"),
        ("[nope]\na = 1\n", "unknown section [nope]"),
        ("[generation]\nseconds = 20.0\nmax_seconds = 10.0\n", "[generation] seconds"),
        ("[telegram]\nmode = 'webhook'\n", "[telegram] webhook_url: required"),
        ("jobs = 3\n", "[jobs] must be a table"),
        ("[jobs\n", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_a_folder_in_place_of_the_file_says_what_happened(tmp_path: Path) -> None:
    """What `docker run -v` leaves for a config.toml missing on the host: one line naming it."""
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "config.toml", environ={})
    assert str(err.value) == (
        f"{tmp_path / 'config.toml'} is a folder, not a configuration file (under Docker: the "
        "config.toml mounted did not exist on the host); create the file from "
        "config.example.toml and remove the folder")


def test_int_accepted_for_float_and_values_applied(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[generation]\nseconds = 3\n[jobs]\nmax_batch = 8\n"),
                      environ={})
    assert cfg.generation.seconds == 3.0 and isinstance(cfg.generation.seconds, float)
    assert cfg.jobs.max_batch == 8


def test_secrets_from_environment_and_preset(tmp_path: Path) -> None:
    database = "postgresql+asyncpg://sonify:db%40pw@db.example/sonify"
    env = {"SONIFY_TELEGRAM_TOKEN": "123:abc", "SONIFY_DISCORD_TOKEN": "disc.tok",
           "SONIFY_WEB_TOKEN": "webtok", "SONIFY_DATABASE_URL": database, "SONIFY_MODELS": "tiny"}
    cfg = parse_config({"storage": {"database_url": "sqlite+aiosqlite:///in-the-file.db"}},
                       environ=env)
    assert cfg.telegram.token == "123:abc"
    assert cfg.discord.token == "disc.tok"
    assert cfg.database_url == database  # the environment wins over the file
    assert cfg.models.preset == "tiny"
    assert not cfg.web_enabled  # a bot token turns the automatic web page off
    # The URL's password as written and decoded; the cookie that stands in for the web token.
    assert set(secret_values(cfg)) == {"123:abc", "disc.tok", "webtok", "db%40pw", "db@pw",
                                       web_cookie_value("webtok")}
    with pytest.raises(ConfigError, match="SONIFY_MODELS"):
        parse_config({}, environ={"SONIFY_MODELS": "huge"})


def test_database_url_default_lives_in_data_dir() -> None:
    cfg = parse_config({"storage": {"data_dir": "/srv/sonify"}}, environ={})
    assert cfg.database_url == "sqlite+aiosqlite:////srv/sonify/sonify.db"


def test_example_config_documents_every_key_and_loads() -> None:
    example = ROOT / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    lines = text.splitlines()
    for name, cls in SECTIONS.items():
        assert name in data, f"[{name}] missing from config.example.toml"
        for f in fields(cls):
            assert f.name in data[name], f"[{name}] {f.name} missing from config.example.toml"
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name} ="))
            assert lines[index - 1].startswith("#"), f"[{name}] {f.name} has no comment"
    assert load_config(example, environ={}).jobs.max_batch >= 1


def test_every_mistake_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    """A file with several mistakes gets one line per mistake, in file order, in one error."""
    path = write(tmp_path, "[jobs]\nmax_batch = 0\nmax_waitt = 5\n[models]\ndevice = 'tpu'\n"
                           "[nope]\na = 1\n[telegram]\nadmins = [1, 'x']\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"SONIFY_MODELS": "huge"})
    lines = str(err.value).splitlines()
    # Prefixes only where the rest lists keys or sections, which other changes add to.
    expected = [
        f"{path}: [jobs] max_batch: 0 is out of range; allowed 1 to 64",
        f"{path}: [jobs] max_waitt: unknown key; known keys are max_batch, max_wait_ms, ",
        f"{path}: [models] device: 'tpu' is not allowed; use one of 'auto', 'cpu', 'cuda'",
        f"{path}: unknown section [nope]; known sections are [models], [generation], ",
        f"{path}: [telegram] admins: expected an integer, got 'x'",
        "environment variable SONIFY_MODELS: 'huge' is not allowed; use one of 'default', "
        "'tiny'",
    ]
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), line


def test_a_rule_across_keys_is_not_reported_against_a_rejected_value(tmp_path: Path) -> None:
    """`max_seconds = 'x'` is the mistake; `seconds = 12` is not also "above" the default 10."""
    path = write(tmp_path, "[generation]\nseconds = 12.0\nmax_seconds = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).splitlines() == [
        f"{path}: [generation] max_seconds: expected a number, got 'x'"]


def test_operating_keys_are_checked_each_wrong_entry_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\ntrusted_proxies = ['10.0.0.1', 'proxy.lan', '10.0.0.1/8', "
                           "'fd00::/8', 7]\nproxy_header = 'x-real-ip'\n"
                           "[metrics]\nlisten = '::1:9100'\n[logging]\nformat = 'xml'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    lines = str(err.value).splitlines()
    assert lines == [
        f"{path}: [web] trusted_proxies: expected a string, got 7",
        f"{path}: [web] proxy_header: 'x-real-ip' is not allowed; use one of "
        "'x-forwarded-for', 'forwarded'",
        f"{path}: [metrics] listen: '::1:9100': write an IPv6 address in brackets, e.g. "
        "'[::1]:9100'",
        f"{path}: [logging] format: 'xml' is not allowed; use one of 'text', 'json'",
    ]
    path = write(tmp_path, "[web]\ntrusted_proxies = ['10.0.0.1', 'proxy.lan', '10.0.0.1/8']\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value) == (f"{path}: [web] trusted_proxies: 'proxy.lan' is not an IP address "
                              "or network; '10.0.0.1/8' has host bits set (the network is "
                              "'10.0.0.0/8')")
    good = load_config(write(tmp_path, "[web]\ntrusted_proxies = ['127.0.0.1', 'fd00::/8']\n"
                                       "proxy_header = 'forwarded'\n[metrics]\n"
                                       "listen = '[::1]:9100'\n[logging]\nformat = 'json'\n"),
                       environ={})
    assert good.web.trusted_proxies == ["127.0.0.1", "fd00::/8"]
    assert (good.metrics.listen, good.logging.format) == ("[::1]:9100", "json")
