"""The real server's edges: slow and idle clients, connections per address, and the logs.

These run `WebAdapter` itself (its site, connection guard and loggers) on a loopback port,
with raw sockets where a client library would be too polite.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from core.config import secret_values
from core.logs import setup_logging
from core.secrecy import web_cookie_value
from tests.bot.web.conftest import ServeFactory, raw_http, split_response

pytestmark = pytest.mark.timeout(120)

GET = b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def closed_after(reader: asyncio.StreamReader, since: float | None = None,
                       limit_s: float = 5.0) -> float:
    """Seconds from `since` (default: now) until the server closes the connection (reading
    and dropping whatever it sends)."""
    loop = asyncio.get_running_loop()
    started = loop.time() if since is None else since
    async with asyncio.timeout(limit_s):
        while await reader.read(65_536):
            pass
    return loop.time() - started


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (status line, headers, Content-Length body); its status."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def test_slow_and_idle_clients_are_cut_off(serve: ServeFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Five clients that never finish their headers, and idle ones, are all closed in time."""
    served = await serve(web={"header_timeout_s": 0.5, "keepalive_timeout_s": 2.0})
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(5)]
    idle = await asyncio.open_connection("127.0.0.1", served.port)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        """A byte of headers every 0.1 s: never done, never quiet (a slowloris)."""
        writer.write(b"GET /api/config HTTP/1.1\r\n")
        try:
            for _ in range(100):
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    trickles = [asyncio.create_task(trickle(w)) for _, w in slow]
    # The header deadline (0.5 s from the first byte) ends the slow ones, long before the
    # 2 s idle timeout; the silent one is closed by the idle timeout.
    cut = await asyncio.gather(*(closed_after(r, started) for r, _ in slow))
    assert all(0.4 < t < 1.5 for t in cut), cut
    idle_cut = await closed_after(idle[0], started)
    assert 1.9 < idle_cut < 3.5, idle_cut
    for task in trickles:
        task.cancel()
    for _, writer in (*slow, idle):
        writer.close()
    assert sum("request headers not complete within 0.5 s" in r.getMessage()
               for r in caplog.records) == 5

    # Between requests, an idle keep-alive connection is closed after keepalive_timeout_s.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(GET)
    assert await read_response(reader) == 200
    assert 1.9 < await closed_after(reader) < 3.5
    writer.close()

    # A normal client is untouched by all this.
    async with aiohttp.ClientSession() as session, \
            session.get(f"{served.adapter.url}api/config") as resp:
        assert resp.status == 200


async def test_connections_per_address_are_capped(serve: ServeFactory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    served = await serve(web={"max_connections_per_address": 3, "keepalive_timeout_s": 30.0})
    caplog.set_level(logging.INFO)
    held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
    # The fourth (and fifth) get a JSON 429 at once, whatever they send, and are closed.
    for _ in range(2):
        raw = await raw_http(served.port, GET, limit_s=5.0)
        status, headers, body = split_response(raw)
        assert status == 429 and headers["retry-after"] == "5"
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    # The held ones still work (keep-alive: two requests on the first).
    reader, writer = held[0]
    for _ in range(2):
        writer.write(GET)
        assert await read_response(reader) == 200
    # One closed: a new connection is admitted again.
    for _, w in held:
        w.close()
        await w.wait_closed()

    async def admitted() -> bool:
        raw = await raw_http(served.port, GET[:-2] + b"Connection: close\r\n\r\n", limit_s=5.0)
        return split_response(raw)[0] == 200

    for _ in range(50):
        if await admitted():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("no connection admitted after the held ones closed")
    refusals = [r for r in caplog.records if "refusing connections from 127.0.0.1" in
                r.getMessage()]
    assert len(refusals) == 1  # logged once a minute per address, not per connection


TOKEN = "Ab/cD+eF=gH:ij/KL+mn=OP:qr"  # every character a URL treats specially: / + = :


def spellings(secret: str) -> set[str]:
    """The forms a secret took in the attack: as is, percent-encoded in either case or only
    in part, form-encoded; and their pieces of 8 characters (a line cut short)."""
    upper = quote(secret, safe="")
    forms = {secret, upper, upper.lower(), quote(secret),
             quote_plus(secret), secret.replace("+", "%2B"), secret.replace("+", "%2b"),
             secret.replace("/", "%2f"), "".join(f"%{ord(c):02x}" for c in secret)}
    forms.add("".join(f"%{ord(c):02x}" if c in "/+=:" else c for c in secret))
    return {form[i:i + 8] for form in forms for i in range(len(form) - 7)}


def leaked(text: str, secret: str) -> list[str]:
    return sorted(piece for piece in spellings(secret) if piece in text)


async def test_no_spelling_of_the_token_or_its_cookie_reaches_a_log(
        capsys: pytest.CaptureFixture[str], serve: ServeFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    """The attack on the logs, replayed: the token in every spelling the server accepts or
    quotes, in request lines too long or too broken to parse, and the cookie made from it.

    `caplog` sees every record before any handler's masking filter, so these assertions hold
    without `core.logs`' masking: the raw bytes never reach a log record at all. The stderr
    check on top goes through `setup_logging` (the masking filter) as `sonify run` does.
    (`capsys` comes first so that its stream outlives the server's teardown, which logs.)
    """
    served = await serve(web={"token": TOKEN})
    setup_logging(secret_values(served.services.config), level=logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    cookie = web_cookie_value(TOKEN)
    lower = "".join(f"%{ord(c):02x}" for c in TOKEN)
    plus_only = TOKEN.replace("+", "%2B")
    url = served.adapter.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        for given in (lower, plus_only):  # both are the token to the server
            async with session.get(f"{url}?token={given}", allow_redirects=False) as resp:
                assert resp.status == 303
        async with session.get(f"{url}api/config") as resp:
            assert resp.status == 200  # the cookie made from the token
        async with session.get(f"{url}{lower}/{quote(TOKEN, safe='')}") as resp:
            assert resp.status == 404  # the token in a path nobody serves
    host = b"Host: 127.0.0.1\r\n"
    attacks = [
        # A request line too long to parse: the parser's message quotes its start.
        b"GET /?token=" + lower.encode() + b"&pad=" + b"x" * 9000 + b" HTTP/1.1\r\n" + host,
        b"GET /?token=" + TOKEN.encode() + b"x" * 9000 + b" HTTP/1.1\r\n" + host,
        # A broken request line and a broken header right after the token and the cookie.
        b"GET /?token=" + TOKEN.encode() + b" HTTP/1.1 junk\r\n" + host,
        b"GET /?token=" + plus_only.encode() + b"\x01 HTTP/1.1\r\n" + host,
        b"GET /api/config HTTP/1.1\r\n" + host + b"Cookie: sonify_token=" + cookie.encode()
        + b"\r\nBroken header line\r\n",
        b"GET /api/config HTTP/1.1\r\n" + host + b"Authorization: Bearer " + TOKEN.encode()
        + b"\r\nX: " + b"y" * 9000 + b"\r\n",
        b"GET /api/config HTTP/1.1\r\n" + host + b"Cookie: sonify_token=" + cookie.encode()
        + b"y" * 9000 + b"\r\n",
    ]
    for attack in attacks:
        raw = await raw_http(served.port, attack + b"Connection: close\r\n\r\n")
        status, headers, body = split_response(raw)
        assert status == 400, raw[:200]
        # Not aiohttp's plain-text echo of the parser's message: the API's JSON shape.
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "unreadable_request"
        assert not leaked(body.decode(), TOKEN) and not leaked(body.decode(), cookie)
    await served.adapter.stop()
    records = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "malformed request" in records  # the parser's refusals are still reported
    assert not leaked(records, TOKEN)
    assert not leaked(records, cookie)
    err = capsys.readouterr().err
    assert "web GET / 303" in err and "malformed request" in err
    assert not leaked(err, TOKEN) and not leaked(err, cookie)


async def test_a_body_that_stops_arriving_is_a_408(serve: ServeFactory) -> None:
    """A paused upload, and a deflate body aiohttp fails only at its end (its read would wait
    forever), are refused after `body_timeout_s` with a 408 and a `rejected` row."""
    served = await serve(web={"body_timeout_s": 1.0})
    loop = asyncio.get_running_loop()
    bodies = {"paused upload": ("application/json", "", b'{"url": "http://', 100),
              "deflate that fails at its end": ("application/x-www-form-urlencoded",
                                                "Content-Encoding: deflate\r\n",
                                                b"seed=\x17}\xa5\x02\xd1", 10)}
    for name, (ctype, extra, body, length) in bodies.items():
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                     f"{extra}Content-Length: {length}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.1)  # the body comes after the headers, as on a real network
        started = loop.time()
        writer.write(body)
        await writer.drain()
        assert await read_response(reader) == 408, name
        assert 0.9 < loop.time() - started < 3.0, name
        writer.close()
    rows = await served.services.request_log.rows_since(0)
    assert [(r.status, r.reason, r.times) for r in rows] == [("rejected", "request_timeout", 2)]
