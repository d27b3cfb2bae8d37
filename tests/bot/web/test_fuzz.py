"""Property: whatever a client sends to the API, the answer is below 500, and a refusal is a
JSON error and a `rejected` row; nothing is logged as an error.

The real server (`WebAdapter`) runs on its own event loop in a thread, so Hypothesis can
drive it from a plain test with `http.client`, which sends header bytes as given.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.web.server import WebAdapter
from core.services import Services
from tests.bot.web.conftest import png_bytes
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(300)


@dataclass
class Threaded:
    port: int
    services: Services
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@pytest.fixture
def threaded_server(tmp_path: Path) -> Iterator[Threaded]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    # A body that stops arriving is refused after 2 s (408), well inside the client's timeout.
    config = make_config(tmp_path, web={"port": 0, "body_timeout_s": 2.0},
                         jobs={"per_user_per_hour": 5})

    async def start() -> tuple[WebAdapter, Services]:
        services = await Services.create(config)
        adapter = WebAdapter(services)
        await adapter.start()
        return adapter, services

    started: Future[tuple[WebAdapter, Services]] = asyncio.run_coroutine_threadsafe(start(),
                                                                                   loop)
    adapter, services = started.result(60)
    port = int(adapter.url.rsplit(":", 1)[1].rstrip("/"))
    server = Threaded(port, services, loop)
    try:
        yield server
    finally:
        server.call(adapter.stop())
        server.call(services.close())
        server.call(_cancel_the_rest())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _cancel_the_rest() -> None:
    """End what is left on the server's loop (aiohttp lingers up to 10 s reading the rest of
    a body nobody read) before the loop closes."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


CHARSETS = st.sampled_from(["utf-8", "UTF-8", "latin-1", "utf-16", "ascii", "base64", "rot13",
                            "zlib", "idna", "utf-7", "unicode_escape", "undefined", "x-nope",
                            "", '"utf-8"', "utf 8", "a" * 300])
TYPES = st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                         "multipart/form-data", "multipart/form-data; boundary=zz",
                         "multipart/form-data; boundary=", "text/plain", "", "image/png",
                         "application/json; charset", "*/*", ";;;", "multipart/mixed; b=1"])
# Header values: visible Latin-1 bytes (obs-text included), never CR, LF or NUL.
HEADER_BYTES = st.binary(max_size=300).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))
HEADERS = st.dictionaries(
    st.sampled_from(["Authorization", "Cookie", "Content-Encoding", "Accept-Language",
                     "X-Anything", "Content-Disposition", "Range", "If-None-Match"]),
    st.one_of(HEADER_BYTES, st.sampled_from([b"gzip", b"deflate", b"br", b"Bearer \xff\xfe",
                                             b"sonify_uid=\xff", b"sonify_uid=" + b"a" * 45])),
    max_size=3)
# Links that never leave the machine: refused as private, or not links at all.
URLS = st.sampled_from(["http://127.0.0.1/a.png", "http://10.0.0.1/x", "ftp://x/a.png",
                        "not a url", "http://[::1]/", "http://0x7f.1/a.png", ""])
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), URLS),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["url", "seconds", "seed", "x"]),
                                            inner, max_size=4)),
    max_leaves=20)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """(Content-Type, body): half of them coherent, so the deeper checks are reached too."""
    coherent = {"multipart/form-data; boundary=zz": "multipart",
                "application/json": draw(st.sampled_from(["json", "bignum", "deep"])),
                "application/x-www-form-urlencoded": "form"}
    choice = draw(st.integers(0, 3))
    if choice == 0:  # an upload as the page sends it, with options of any kind
        options = draw(st.lists(st.tuples(st.sampled_from([b"seconds", b"seed"]),
                                          st.sampled_from([b"2", b"1e999", b"9" * 400, b"-1",
                                                           b"7", b"", b"\xff"])), max_size=2))
        fields = b"".join(b'--zz\r\nContent-Disposition: form-data; name="' + name
                          + b'"\r\n\r\n' + value + b"\r\n" for name, value in options)
        return "multipart/form-data; boundary=zz", (
            fields + b'--zz\r\nContent-Disposition: form-data; name="image"; '
            b'filename="a.png"\r\n\r\n' + png_bytes() + b"\r\n--zz--\r\n")
    if choice == 1:
        ctype = draw(st.sampled_from(sorted(coherent)))
        return ctype, draw(bodies(coherent[ctype]))
    return draw(TYPES), draw(bodies())


@st.composite
def bodies(draw: st.DrawFn, kind: str | None = None) -> bytes:
    kind = kind or draw(st.sampled_from(["bytes", "json", "deep", "form", "multipart",
                                          "bignum"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 60_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    if kind == "bignum":
        digits = "9" * draw(st.integers(300, 5000))
        field = draw(st.sampled_from(["seconds", "seed"]))
        return f'{{"url": "http://127.0.0.1/a.png", "{field}": {digits}}}'.encode()
    if kind == "form":
        pairs = draw(st.lists(st.tuples(st.sampled_from(["url", "seconds", "seed", "x"]),
                                        st.one_of(st.binary(max_size=50),
                                                  URLS.map(str.encode))), max_size=5))
        return b"&".join(k.encode() + b"=" + v for k, v in pairs)
    header_line = draw(st.sampled_from([b"", b"X-Long: " + b"h" * 9000 + b"\r\n",
                                        b"Content-Type: text/plain; charset=nope\r\n"]))
    name = draw(st.sampled_from([b"image", b"image", b"url", b"seconds", b"seed", b"\xff"]))
    content = draw(st.one_of(st.binary(max_size=500), st.just(png_bytes()),
                             st.sampled_from([b"2", b"1e999", b"9" * 400, b"-1", b"7"])))
    return (b"--zz\r\n" + header_line + b'Content-Disposition: form-data; name="' + name
            + b'"; filename="a.png"\r\n\r\n' + content + b"\r\n--zz--\r\n")


def counted(rows: list[Any]) -> tuple[int, int]:
    """(requests, refusals) in the log: a refusal row counts the refusals folded into it."""
    return (sum(r.times for r in rows),
            sum(r.times for r in rows if r.status == "rejected" and r.reason))


def test_random_requests_never_get_a_500(threaded_server: Threaded,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = threaded_server
    answered: list[int] = []

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE"]),
           path=st.sampled_from(["/api/jobs"] * 6 + ["/api", "/audio", "/api/jobs/x/events",
                                                     "/audio/x.ogg"]),
           sent=requests(), charset=st.one_of(st.none(), st.none(), CHARSETS),
           headers=HEADERS)
    def exchange(method: str, path: str, sent: tuple[str, bytes], charset: str | None,
                 headers: dict[str, bytes]) -> None:
        ctype, body = sent
        # Requests, each refusal counted (those of one kind within a minute share a row).
        rows_before = server.call(server.services.request_log.rows_since(0))
        requests_before, refused_before = counted(rows_before)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            content_type = ctype if charset is None else f"{ctype}; charset={charset}"
            conn.putheader("Content-Type", content_type.encode("latin-1"))
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            text = resp.read()
        finally:
            conn.close()
        assert resp.status < 500, (resp.status, text[:300])
        answered.append(resp.status)
        code = ""
        if resp.status >= 400:
            assert resp.getheader("Content-Type", "").startswith("application/json"), text
            code = json.loads(text)["error"]["code"]
        # Requests HTTP itself cannot carry (e.g. a Content-Encoding the server cannot decode)
        # are refused before any route: JSON too, but no row.
        if method == "POST" and path == "/api/jobs" and code != "unreadable_request":
            requests_now, refused_now = counted(server.call(
                server.services.request_log.rows_since(0)))
            assert requests_now == requests_before + 1, (resp.status, text[:200])
            if resp.status >= 400:
                assert refused_now == refused_before + 1, (resp.status, text[:200])

    exchange()
    assert len(answered) >= 100
    print("fuzz answers:", sorted(Counter(answered).items()))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
