"""A request log that cannot be opened is one StorageUnavailable line, its password hidden."""

from __future__ import annotations

import socket

import pytest

from core.errors import StorageUnavailable
from core.storage.request_log import RequestLog, cannot_open


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_that_is_not_there_is_one_line() -> None:
    port = closed_port()
    with pytest.raises(StorageUnavailable) as caught:
        await RequestLog.open(f"postgresql+asyncpg://sonify:p%40ss:word@127.0.0.1:{port}/db")
    message = str(caught.value)
    assert message.startswith(
        f"cannot open the request log at postgresql+asyncpg://sonify:***@127.0.0.1:{port}/db: ")
    assert "\n" not in message and "ss:word" not in message and "p%40ss" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_drivers_own_words_are_masked_too() -> None:
    url = "postgresql+asyncpg://sonify:p%40ss:word@db.example/db"
    quoted = OSError("could not connect with dsn 'postgresql://sonify:p%40ss%3aword@db.example'"
                     "\n  (password 'p@ss:word' rejected)")
    message = cannot_open(url, quoted)
    assert message == ("cannot open the request log at postgresql+asyncpg://sonify:***@"
                       "db.example/db: could not connect with dsn "
                       "'postgresql://sonify:***@db.example' (password '***' rejected)")
