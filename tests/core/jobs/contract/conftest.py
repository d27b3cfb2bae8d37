"""The contract suite runs every test once per backend: `[local]` and `[redis]`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.jobs.contract.harness import Backend, LocalBackend, RedisBackend
from tests.local_servers import PostgresServer, RedisServer

BACKENDS = ("local", "redis")


@pytest.fixture(scope="package")
def contract_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this suite's own: its outage tests stop and start it."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backend under test, with its servers (a fresh database each test)."""
    if request.param == "redis":
        postgres = request.getfixturevalue("contract_postgres")
        redis = request.getfixturevalue("redis_server")
        assert isinstance(postgres, PostgresServer) and isinstance(redis, RedisServer)
        return RedisBackend(tmp_path, postgres, redis)
    return LocalBackend(tmp_path)
