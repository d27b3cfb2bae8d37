"""Shared fixtures: offline environment, a tiny-model configuration, one pipeline per session."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator

# Before any Hugging Face import: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tiny models on a 2-core machine run 10x faster single-threaded (thread contention
# dominates); set before torch is imported so subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost,::1")

from pathlib import Path

import pytest

from core.config import Config, parse_config

TINY_CACHE = Path(os.environ.get("SONIFY_TEST_CACHE", Path.home() / ".cache" / "sonify-tests"))


def tiny_sections(data_dir: Path, **sections: dict) -> dict[str, dict]:
    """Config sections for fast tiny-model renders with data under `data_dir`."""
    data: dict[str, dict] = {
        "models": {"preset": "tiny", "device": "cpu", "cache_dir": str(TINY_CACHE)},
        "generation": {"seconds": 1.0, "steps": 2, "caption_beams": 2, "caption_max_tokens": 8},
        "images": {"allow_private_networks": True},
        "jobs": {"max_wait_ms": 20},
        "storage": {"data_dir": str(data_dir)},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def make_config(tmp_path: Path, **sections: dict) -> Config:
    """A tiny-model config whose data lives under `tmp_path`; `sections` override keys."""
    return parse_config(tiny_sections(tmp_path / "data", **sections), source="test config",
                        environ={})


def tiny_toml(data_dir: Path, **sections: dict) -> str:
    """The same configuration as TOML, for `sonify` subprocesses."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items())
                   for name, keys in tiny_sections(data_dir, **sections).items())


def _utf8_safe(text: str) -> str:
    """`text` with lone surrogates written as escapes: UTF-8 that can cross a pipe."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Reports travel from pytest-xdist's workers as UTF-8: tests that feed lone surrogates
    ("\\ud800 x") to the bot capture log lines holding them, which would stop the worker
    ("surrogates not allowed"). Escape them in what the report shows; the test decides."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8_safe(text)) for title, text in report.sections]
    if report.longrepr is not None:
        shown = str(report.longrepr)
        if _utf8_safe(shown) != shown:
            report.longrepr = _utf8_safe(shown)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The tiny CoCa + AudioLDM pipeline, built (or loaded from disk) once per session."""
    from core.models.loading import ModelLoader

    cfg = make_config(tmp_path_factory.mktemp("pipeline"))
    return ModelLoader(cfg).pipeline()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Logging set-up (ours, the libraries') never leaks from one test into the next.

    `setup_logging` adds a handler on the root logger bound to that test's stderr; adapters
    add masking filters and levels. Left in place, the next test logs to a closed stream.
    """
    manager = logging.Logger.manager
    root = logging.getLogger()
    root_state = (list(root.handlers), root.level, list(root.filters))
    named = {name: (lg.level, list(lg.filters), list(lg.handlers), lg.propagate)
             for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    handlers, level, filters = root_state
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    root.filters[:] = filters
    for name, (lvl, flt, hnd, prop) in named.items():  # loggers made meanwhile stay as made
        lg = logging.getLogger(name)
        lg.setLevel(lvl)
        lg.filters[:] = flt
        lg.handlers[:] = hnd
        lg.propagate = prop
    logging.captureWarnings(False)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any attempt to resolve or connect is recorded and refused."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1:] or args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One PostgreSQL cluster on loopback for the session (see tests/local_servers.py)."""
    from tests.local_servers import PostgresServer

    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: object) -> str:
    """A fresh, empty PostgreSQL database of its own for this test."""
    from tests.local_servers import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A request log's URL: a fresh SQLite file, then a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[object]:
    """A `redis-server` on loopback for this test, without persistence."""
    from tests.local_servers import RedisServer

    server = RedisServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()
