"""Configuration: one TOML file, validated at start-up.

Each section is a frozen dataclass whose fields carry their own rule (type, range
or choices) in `field(metadata=...)`. `load_config` checks the file against those
rules and raises `ConfigError` listing every mistake in the file, one line each naming
the file, the key and what is allowed, so a typo never surfaces later as a confusing crash.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from core.addresses import check_listen, check_networks
from core.errors import ConfigError
from core.secrecy import url_passwords, web_cookie_value
from core.sound_backends import DEFAULT_SOUND_BACKEND, SOUND_BACKENDS

DEFAULT_PATH = Path("config.toml")

# Secrets may come from the environment instead of the file (the environment wins).
ENV_SECRETS: dict[tuple[str, str], str] = {
    ("telegram", "token"): "SONIFY_TELEGRAM_TOKEN",
    ("discord", "token"): "SONIFY_DISCORD_TOKEN",
    ("web", "token"): "SONIFY_WEB_TOKEN",
    ("storage", "database_url"): "SONIFY_DATABASE_URL",
    ("jobs", "redis_url"): "SONIFY_REDIS_URL",
}
ENV_PRESET = "SONIFY_MODELS"

# Bounds shared by the configuration and every request (adapters, engine, commands).
MIN_SECONDS = 0.5
MAX_SECONDS = 30.0
MAX_STEPS = 500
MAX_CANDIDATES = 8
MAX_SEED = 2**31 - 1
# The statistics read their last 14 days (chart, week, top users, latency) from the rows.
MIN_KEEP_DAYS = 14


def _opt(default: Any, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[Any, ...] | None = None, secret: bool = False,
         check: Callable[[Any], None] | None = None) -> Any:
    """A key's default and its rule; `check` raises ValueError saying what is wrong."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "secret": secret, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelsConfig:
    preset: str = _opt("default", choices=("default", "tiny"))
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"))
    dtype: str = _opt("auto", choices=("auto", "fp32", "bf16", "fp16"))
    cache_dir: str = _opt("")
    caption_model: str = _opt("coca_ViT-L-14")
    caption_pretrained: str = _opt("mscoco_finetuned_laion2b_s13b_b90k")
    caption_path: str = _opt("")
    sound_backend: str = _opt(DEFAULT_SOUND_BACKEND, choices=tuple(SOUND_BACKENDS))
    sound_model: str = _opt("")
    clap_model: str = _opt("")


@dataclass(frozen=True)
class GenerationConfig:
    seconds: float = _opt(5.0, lo=MIN_SECONDS, hi=MAX_SECONDS)
    max_seconds: float = _opt(10.0, lo=MIN_SECONDS, hi=MAX_SECONDS)
    steps: int = _opt(20, lo=1, hi=MAX_STEPS)
    guidance_scale: float = _opt(2.5, lo=0.0, hi=20.0)
    negative_prompt: str = _opt("low quality, average quality, noise, distortion")
    scheduler: str = _opt("dpm", choices=("ddim", "dpm"))
    candidates: int = _opt(0, lo=0, hi=MAX_CANDIDATES)  # 0: auto (device-dependent)
    prompt_template: str = _opt("The sound of {caption}, as heard in real life")
    caption_beams: int = _opt(6, lo=1, hi=16)
    caption_max_tokens: int = _opt(30, lo=4, hi=76)


@dataclass(frozen=True)
class ImagesConfig:
    max_bytes: int = _opt(20_000_000, lo=1_000, hi=200_000_000)
    max_pixels: int = _opt(50_000_000, lo=10_000, hi=500_000_000)
    max_side: int = _opt(16_384, lo=64, hi=65_535)
    allow_private_networks: bool = _opt(False)
    connect_timeout_s: float = _opt(5.0, lo=0.1, hi=120.0)
    download_timeout_s: float = _opt(20.0, lo=0.1, hi=600.0)
    max_redirects: int = _opt(3, lo=0, hi=10)


@dataclass(frozen=True)
class VideoConfig:
    """Moving pictures (videos, animated GIF/WebP/PNG): bounds checked before any frame decodes."""

    max_bytes: int = _opt(20_000_000, lo=1_000, hi=2_000_000_000)
    max_seconds: float = _opt(20.0, lo=0.5, hi=600.0)
    max_pixels: int = _opt(8_294_400, lo=4_096, hi=67_108_864)  # one frame; 3840×2160
    max_side: int = _opt(4_096, lo=64, hi=16_384)
    max_frames: int = _opt(1_200, lo=2, hi=100_000)
    caption_frames: int = _opt(3, lo=1, hi=16)


@dataclass(frozen=True)
class JobsConfig:
    max_batch: int = _opt(4, lo=1, hi=64)
    max_wait_ms: int = _opt(150, lo=0, hi=10_000)
    max_queue: int = _opt(100, lo=1, hi=100_000)
    job_timeout_s: float = _opt(300.0, lo=1.0, hi=3_600.0)
    per_user_concurrent: int = _opt(2, lo=1, hi=100)
    per_user_per_hour: int = _opt(30, lo=1, hi=100_000)
    cache_max_mb: float = _opt(500.0, lo=0.0, hi=1_000_000.0)
    shutdown_timeout_s: float = _opt(60.0, lo=0.0, hi=3_600.0)
    # "local": this process renders (the embedded default). "redis": `sonify run` serves the
    # platforms, `sonify worker` processes render, queued on arq in Redis.
    backend: str = _opt("local", choices=("local", "redis"))
    redis_url: str = _opt("redis://127.0.0.1:6379/0")  # its password is masked in logs
    # A job whose worker vanished (killed, cut off) runs again on another one after this.
    redeliver_after_s: float = _opt(60.0, lo=5.0, hi=3_600.0)
    # Workers a job may take down before it fails alone with an apology.
    max_tries: int = _opt(3, lo=1, hi=20)
    # How often adapters compare open jobs with their rows (redis: positions, lost events).
    poll_interval_s: float = _opt(2.0, lo=0.1, hi=60.0)


@dataclass(frozen=True)
class StorageConfig:
    database_url: str = _opt("")  # empty: SQLite file in data_dir
    data_dir: str = _opt("data")
    # Finished requests' rows, and clips unused, for longer than this are pruned (their counts
    # kept as daily totals for the stats); 0 keeps everything forever.
    keep_days: int = _opt(30, lo=0, hi=36_500)
    # How long the paths that settle a request wait out a database outage (then the job is
    # handed back, to be answered after the next start).
    outage_grace_s: float = _opt(120.0, lo=0.0, hi=3_600.0)


@dataclass(frozen=True)
class TelegramConfig:
    token: str = _opt("", secret=True)
    api_base_url: str = _opt("https://api.telegram.org/bot")
    file_base_url: str = _opt("https://api.telegram.org/file/bot")
    mode: str = _opt("polling", choices=("polling", "webhook"))
    webhook_url: str = _opt("")
    webhook_listen: str = _opt("0.0.0.0")
    webhook_port: int = _opt(8443, lo=1, hi=65_535)
    webhook_secret: str = _opt("", secret=True)
    admins: list[int] = _opt([])
    allowed_chats: list[int] = _opt([])
    send_as: str = _opt("voice", choices=("voice", "audio", "both"))
    group_photos: bool = _opt(False)
    # Group admins may change the bot's settings for their group with /settings (and users
    # their own defaults in a private chat); false forbids it.
    chat_settings: bool = _opt(True)
    progress_interval_s: float = _opt(3.0, lo=0.0, hi=60.0)
    # Bot API getFile refuses files above 20 MB; a self-hosted Bot API server allows more.
    download_limit_mb: float = _opt(20.0, lo=1.0, hi=2_000.0)
    # Largest video the bot sends back (sendVideo): 50 MB on the public Bot API.
    upload_limit_mb: float = _opt(50.0, lo=1.0, hi=2_000.0)
    poll_timeout_s: float = _opt(10.0, lo=0.0, hi=60.0)


@dataclass(frozen=True)
class DiscordConfig:
    token: str = _opt("", secret=True)
    api_base_url: str = _opt("https://discord.com/api/v10")
    gateway_url: str = _opt("")
    channels: list[int] = _opt([])
    guilds: list[int] = _opt([])
    admins: list[int] = _opt([])
    sync_commands: bool = _opt(True)
    audio_format: str = _opt("ogg", choices=("ogg", "mp3"))
    voice_message: bool = _opt(False)
    max_images_per_message: int = _opt(4, lo=1, hi=10)
    progress_interval_s: float = _opt(2.0, lo=0.0, hi=60.0)
    # After a restart, messages posted in tracked channels this recently are answered.
    catch_up_hours: float = _opt(6.0, lo=0.0, hi=168.0)
    catch_up_max_per_channel: int = _opt(50, lo=0, hi=1_000)
    # Server admins (Manage Server) may change the bot's settings for their server with
    # /settings; false forbids it.
    chat_settings: bool = _opt(True)


@dataclass(frozen=True)
class WebConfig:
    enabled: str = _opt("auto", choices=("auto", "true", "false"))
    host: str = _opt("127.0.0.1")
    port: int = _opt(8080, lo=0, hi=65_535)
    token: str = _opt("", secret=True)
    max_upload_bytes: int = _opt(20_000_000, lo=1_000, hi=200_000_000)
    # Slow or idle clients: how long a request's line and headers may take, and how long an
    # idle connection is kept open between requests.
    header_timeout_s: float = _opt(10.0, lo=0.5, hi=300.0)
    keepalive_timeout_s: float = _opt(15.0, lo=1.0, hi=3_600.0)
    body_timeout_s: float = _opt(30.0, lo=1.0, hi=3_600.0)  # longest pause inside a body
    # Per client address (IPv6: per /64; behind `trusted_proxies`, the forwarded one); 0 = off.
    max_connections_per_address: int = _opt(32, lo=0, hi=100_000)
    new_browsers_per_hour: int = _opt(20, lo=1, hi=100_000)
    per_address_concurrent: int = _opt(8, lo=0, hi=10_000)
    per_address_per_hour: int = _opt(120, lo=0, hi=1_000_000)
    # Reverse proxies (addresses, networks) whose forwarding header names the client.
    trusted_proxies: list[str] = _opt([], check=check_networks)
    proxy_header: str = _opt("x-forwarded-for", choices=("x-forwarded-for", "forwarded"))


@dataclass(frozen=True)
class MetricsConfig:
    # HOST:PORT of a listener for /metrics, /livez and /readyz alone ("": none; /metrics is
    # then on the web page, behind its token).
    listen: str = _opt("", check=check_listen)


@dataclass(frozen=True)
class LoggingConfig:
    format: str = _opt("text", choices=("text", "json"))


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    web: WebConfig = field(default_factory=WebConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = "built-in defaults"

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the request log; by default a SQLite file in `data_dir`."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'sonify.db').as_posix()}"

    @property
    def web_enabled(self) -> bool:
        """`auto` means: serve the page when no bot token is configured."""
        if self.web.enabled == "auto":
            return not (self.telegram.token or self.discord.token)
        return self.web.enabled == "true"

    def with_section(self, name: str, **changes: Any) -> Config:
        """Return a copy with some keys of one section replaced (handy in tests)."""
        return replace(self, **{name: replace(getattr(self, name), **changes)})


SECTIONS: dict[str, type] = {name: hint for name, hint in get_type_hints(Config).items()
                             if name != "source"}


_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


def _describe(tp: Any) -> str:
    if get_origin(tp) is list:
        return f"a list of {_NAMES[get_args(tp)[0]][1]}"
    return _NAMES[tp][0]


def _check_value(where: str, tp: Any, meta: dict[str, Any], value: Any) -> Any:
    origin = get_origin(tp)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
        return [_check_value(where, item_tp, {}, v) for v in value]
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if tp is str and meta.get("choices") and isinstance(value, bool):
        value, ok = str(value).lower(), True  # `enabled = true` reads naturally in TOML
    if not ok:
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if choices and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{where}: {value!r} is not allowed; use one of {allowed}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: {value!r} is out of range; allowed {lo} to {hi}")
    return value



def _build_section(source: str, name: str, cls: type, raw: Any,
                   problems: list[str]) -> tuple[Any, set[str]]:
    """The section built from `raw`'s valid keys, and the names of its rejected keys.

    Every mistake is appended to `problems` (one line each) instead of raised, so a file
    with several mistakes is fixed in one go rather than one start-up per mistake.
    """
    if not isinstance(raw, dict):
        problems.append(f"{source}: [{name}] must be a table")
        return cls(), set()
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    rejected: set[str] = set()
    for key, value in raw.items():
        where = f"{source}: [{name}] {key}"
        if key not in known:
            problems.append(f"{where}: unknown key; known keys are {', '.join(known)}")
            rejected.add(key)
            continue
        meta = dict(known[key].metadata)
        try:
            checked = _check_value(where, hints[key], meta, value)
            if meta["check"] is not None:  # the key's own rule, after its type and range
                meta["check"](checked)
            values[key] = checked
        except (ConfigError, ValueError) as exc:
            problems.append(str(exc) if isinstance(exc, ConfigError) else f"{where}: {exc}")
            rejected.add(key)
    return cls(**values), rejected


def parse_config(data: dict[str, Any], source: str = "built-in defaults",
                 environ: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a `Config`.

    Raises one `ConfigError` listing every mistake, one line each (file, key, what is allowed).
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    rejected: set[tuple[str, str]] = set()
    sections: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in SECTIONS:
            problems.append(f"{source}: unknown section [{name}]; known sections are "
                            f"{', '.join('[' + s + ']' for s in SECTIONS)}")
            continue
        sections[name], bad_keys = _build_section(source, name, SECTIONS[name], raw, problems)
        rejected |= {(name, key) for key in bad_keys}
    config = Config(**sections, source=source)
    for (section, key), var in ENV_SECRETS.items():
        if env.get(var):
            config = config.with_section(section, **{key: env[var]})
    if env.get(ENV_PRESET):
        preset = env[ENV_PRESET]
        try:
            _check_value(f"environment variable {ENV_PRESET}", str,
                         dict(fields(ModelsConfig)[0].metadata), preset)
            config = config.with_section("models", preset=preset)
        except ConfigError as exc:
            problems.append(str(exc))
    # A backend's own defaults for the [generation] keys the file leaves unset.
    raw_generation = data.get("generation")
    given = raw_generation if isinstance(raw_generation, dict) else {}
    unset = {key: value for key, value
             in SOUND_BACKENDS[config.models.sound_backend].generation_defaults.items()
             if key not in given}
    if unset:
        config = config.with_section("generation", **unset)
    # Rules across keys, checked only between values that passed: a rejected max_seconds must
    # not also report every seconds as "above" the default it fell back to.
    if not rejected & {("generation", "seconds"), ("generation", "max_seconds")} \
            and config.generation.seconds > config.generation.max_seconds:
        problems.append(f"{source}: [generation] seconds: {config.generation.seconds} is above "
                        f"max_seconds ({config.generation.max_seconds})")
    if not rejected & {("telegram", "mode"), ("telegram", "webhook_url")} \
            and config.telegram.mode == "webhook" and not config.telegram.webhook_url:
        problems.append(f"{source}: [telegram] webhook_url: required when mode = 'webhook'")
    if ("storage", "keep_days") not in rejected and 0 < config.storage.keep_days < MIN_KEEP_DAYS:
        problems.append(f"{source}: [storage] keep_days: {config.storage.keep_days} is too short; "
                        f"use 0 (keep forever) or at least {MIN_KEEP_DAYS} (the stats read the "
                        f"last {MIN_KEEP_DAYS} days row by row)")
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load `path`, or `config.toml` if present, else the built-in defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return parse_config({}, environ=environ)
        path = DEFAULT_PATH
    path = Path(path)
    if path.is_dir():
        # What `docker run -v ./config.toml:…` leaves when the file did not exist on the host.
        raise ConfigError(f"{path} is a folder, not a configuration file (under Docker: the "
                          "config.toml mounted did not exist on the host); create the file "
                          "from config.example.toml and remove the folder")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, source=str(path), environ=environ)


def secret_values(config: Config) -> list[str]:
    """Every secret in `config`, so log filters and error messages can mask them: the secret
    keys, the password inside any URL-valued key (`[storage] database_url`, or any URL added
    later), and the web cookie derived from the web token."""
    out: list[str] = []
    for name in SECTIONS:
        section = getattr(config, name)
        for f in fields(section):
            value = getattr(section, f.name)
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, str) or not item:
                    continue
                if f.metadata.get("secret"):
                    out.append(item)
                out += url_passwords(item)
    if config.web.token:
        out.append(web_cookie_value(config.web.token))
    return out
