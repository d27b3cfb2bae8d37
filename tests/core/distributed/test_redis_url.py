"""`[jobs] redis_url`: a password that a URL must percent-encode reaches Redis decoded."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError

from core.config import secret_values
from core.distributed.redis_queue import connect, redis_settings
from core.errors import ConfigError, QueueUnavailable
from core.logs import setup_logging
from tests.core.distributed.support import adapter_engine, redis_config, render_worker
from tests.core.jobs.engine_support import text_request
from tests.local_servers import RedisServer

pytestmark = pytest.mark.timeout(180)

# Every character a URL gives a meaning to: "@" ends the login, "/" the host, "%" starts an
# escape, "#" a fragment, "?" a query — each must be written %-encoded in the URL.
PASSWORD = "Sound@Proof/100%#quiet?yes"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, password=PASSWORD)
    try:
        yield server.start()
    finally:
        server.stop()


def test_the_url_is_read_the_way_redis_py_reads_it() -> None:
    encoded = quote(PASSWORD, safe="")
    settings = redis_settings(f"redis://worker:{encoded}@redis.example:6380/3")
    assert (settings.host, settings.port, settings.database) == ("redis.example", 6380, 3)
    assert (settings.username, settings.password, settings.ssl) == ("worker", PASSWORD, False)
    # Lower-case escapes and a password given as a query parameter read the same.
    lower = re.sub(r"%[0-9A-F]{2}", lambda escape: escape.group().lower(), encoded)
    assert lower != encoded
    query = redis_settings(f"rediss://redis.example/0?password={lower}&db=2")
    assert (query.password, query.database, query.ssl) == (PASSWORD, 2, True)
    assert redis_settings("unix:///run/redis.sock?db=1").unix_socket_path == "/run/redis.sock"
    with pytest.raises(ConfigError, match=r"\[jobs\] redis_url"):
        redis_settings("http://redis.example/0")


async def test_arq_alone_would_send_the_password_still_encoded(
        locked_redis: RedisServer) -> None:
    """Why redis_settings exists: arq's own reading fails against the same server."""
    settings = RedisSettings.from_dsn(locked_redis.url)
    settings.conn_retries = 0
    assert settings.password != PASSWORD
    with pytest.raises((AuthenticationError, ResponseError)):
        await create_pool(settings)


async def test_connect_authenticates_with_the_decoded_password(
        locked_redis: RedisServer) -> None:
    pool = await connect(locked_redis.url)
    try:
        assert await pool.ping()
        await pool.set("sonify:probe", b"1")
    finally:
        await pool.aclose()
    # The key is there for a client that gives the password as it is.
    plain = Redis(host="127.0.0.1", port=locked_redis.port, password=PASSWORD)
    try:
        assert await plain.get("sonify:probe") == b"1"
    finally:
        await plain.aclose()


async def test_a_wrong_password_is_one_line_without_the_password(
        locked_redis: RedisServer) -> None:
    wrong = locked_redis.url.replace("quiet", "loud")
    with pytest.raises(QueueUnavailable) as failure:
        await connect(wrong)
    message = str(failure.value)
    assert "\n" not in message and "127.0.0.1" in message
    assert "Proof" not in message and "loud" not in message


async def test_the_redis_backend_renders_through_a_password_protected_redis(
        tmp_path: Path, postgres_url: str, locked_redis: RedisServer, tiny_pipeline: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    adapter_cfg = redis_config(tmp_path / "adapter", postgres_url, locked_redis.url)
    worker_cfg = redis_config(tmp_path / "worker", postgres_url, locked_redis.url)
    setup_logging(secret_values(adapter_cfg))
    async with adapter_engine(adapter_cfg) as engine, \
            render_worker(worker_cfg, tiny_pipeline, name="gpu-a"):
        handle = await engine.submit(text_request(adapter_cfg, "u1", "rain on a tin roof"))
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.files["ogg"].read_bytes()[:4] == b"OggS"
        logging.getLogger("probe").warning("redis at %s", locked_redis.url)
    err = capsys.readouterr().err
    assert "redis at redis://:***@127.0.0.1" in err
    for spelling in (PASSWORD, quote(PASSWORD, safe=""), "Proof", "quiet"):
        assert spelling not in err, spelling
