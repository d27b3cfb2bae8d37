"""Hostile input to the API: every bad request is a JSON 4xx and a `rejected` row, never a 500.

Each reproduction of issue 13 is here as it was sent: numbers Python cannot hold, JSON
nested past the interpreter's stack, charsets that do not exist, an oversized multipart
header, bytes that are not UTF-8 where a token goes, a client hanging up mid-upload.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from core.intake import decode, moving
from tests.bot.web.conftest import (
    ServeFactory,
    WebFactory,
    expect_error,
    last_rows,
    png_bytes,
    raw_http,
    read_events,
    split_response,
    upload_form,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

BOUNDARY = "hardeningboundary"


def multipart(*parts: bytes) -> bytes:
    """A multipart body of raw parts (each: its header lines, a blank line, its content)."""
    body = b"".join(f"--{BOUNDARY}\r\n".encode() + part + b"\r\n" for part in parts)
    return body + f"--{BOUNDARY}--\r\n".encode()


async def test_inputs_that_gave_500s_are_4xx_and_rows(serve: ServeFactory,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    served = await serve()
    caplog.set_level(logging.DEBUG)
    huge = "9" * 400
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        # A 400-digit number for `seconds` (it was an OverflowError), three spellings.
        ("seconds: 400-digit JSON integer",
         {"data": f'{{"url": "http://x/a.png", "seconds": {huge}}}'.encode(),
          "headers": {"Content-Type": "application/json"}}, 400, "bad_seconds"),
        ("seconds: 400-digit JSON float",
         {"data": f'{{"url": "http://x/a.png", "seconds": {huge}.5}}'.encode(),
          "headers": {"Content-Type": "application/json"}}, 400, "bad_seconds"),
        ("seconds: 400-digit form field", {"data": upload_form(png_bytes(), seconds=huge)},
         400, "bad_seconds"),
        ("seed: 400-digit JSON integer",
         {"data": f'{{"url": "http://x/a.png", "seed": {huge}}}'.encode(),
          "headers": {"Content-Type": "application/json"}}, 400, "bad_seed"),
        # JSON nested deeper than Python's recursion limit (it was a RecursionError).
        ("nested JSON", {"data": b"[" * 100_000 + b"]" * 100_000,
                         "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        ("nested JSON object", {"data": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                "headers": {"Content-Type": "application/json"}},
         400, "bad_json"),
        # Unknown charsets in a JSON or form Content-Type (it was a LookupError).
        ("JSON charset unknown", {"data": b'{"url": "http://x/a.png"}',
                                  "headers": {"Content-Type":
                                              "application/json; charset=no-such-charset"}},
         400, "bad_charset"),
        ("form charset unknown", {"data": b"url=http%3A%2F%2Fx%2Fa.png",
                                  "headers": {"Content-Type": "application/x-www-form-urlencoded;"
                                                              " charset=klingon"}},
         400, "bad_charset"),
        ("charset that is not a text encoding", {"data": b'{"url": "x"}', "headers": {
            "Content-Type": "application/json; charset=base64"}}, 400, "bad_charset"),
        ("form that is not UTF-8", {"data": b"url=\xff\xfe\xfd", "headers": {
            "Content-Type": "application/x-www-form-urlencoded"}}, 400, "bad_form"),
        # A multipart part header over 8 KB (it was LineTooLong).
        ("multipart part header over 8 KB", {
            "data": multipart(b'Content-Disposition: form-data; name="image"; filename="'
                              + b"a" * 9000 + b'.png"\r\nContent-Type: image/png\r\n\r\n'
                              + png_bytes()),
            "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}},
         400, "bad_form"),
        ("multipart with a thousand part headers", {
            "data": multipart(b"X-A: b\r\n" * 1000 + b'Content-Disposition: form-data; '
                              b'name="url"\r\n\r\nhttp://x/a.png'),
            "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}},
         400, "bad_form"),
        ("gzip body that is not gzip", {"data": b"definitely not gzip", "headers": {
            "Content-Type": "application/json", "Content-Encoding": "gzip"}}, 400,
         "bad_request"),
    ]
    async with aiohttp.ClientSession() as session:
        for name, request, status, code in cases:
            async with session.post(f"{served.adapter.url}api/jobs", **request) as resp:
                error = await expect_error(resp, status, code)
            assert error["message"], name
    rows = await served.services.request_log.rows_since(0)
    assert {r.status for r in rows} == {"rejected"}
    # Every refusal counts: those of one kind within a minute in one row's `times`.
    assert sorted(r.reason for r in rows for _ in range(r.times)) == sorted(
        code for *_, code in cases)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_raw_bytes_in_the_token_headers_are_401(start_web: WebFactory) -> None:
    """Bytes that are not UTF-8 in `Authorization: Bearer` or the token cookie: 401, not 500."""
    web = await start_web(web={"token": "right-token/+=:0123"})
    port = web.client.server.port
    assert port is not None
    for header in (b"Authorization: Bearer \xff\xfe\x80right-token",
                   b"Authorization: Bearer right-token/+=:0123\xff",
                   b"Cookie: sonify_token=\xff\xfe\xc3\x28"):
        raw = await raw_http(port, b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             + header + b"\r\nConnection: close\r\n\r\n")
        status, headers, body = split_response(raw)
        assert status == 401, raw
        assert headers["content-type"].startswith("application/json")
        assert b'"code": "unauthorized"' in body
    ok = await web.client.get("/api/config",
                              headers={"Authorization": "Bearer right-token/+=:0123"})
    assert ok.status == 200


async def test_every_404_and_405_under_api_and_audio_is_json(start_web: WebFactory) -> None:
    web = await start_web()
    client = web.client
    for path in ("/audio", "/audio/", "/audio/x", "/api", "/api/", "/api/nope", "/audio/x.y.z"):
        await expect_error(await client.get(path), 404, "not_found")
    for method, path in (("POST", "/audio/x.ogg"), ("PUT", "/api/jobs"),
                         ("DELETE", "/api/config"), ("PATCH", "/api/jobs/x")):
        resp = await client.request(method, path)
        await expect_error(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"]
    assert (await client.get("/nothing-here")).status == 404  # the page's paths: plain text


async def test_a_dropped_upload_is_one_info_line(serve: ServeFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A client that hangs up mid-upload: one INFO line and a `rejected` row, no traceback."""
    served = await serve()
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write((f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: 500000\r\n\r\n").encode())
    # "100 Continue" comes once the handler is reading the body.
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 100")
    writer.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
                 + png_bytes()[:200])
    await writer.drain()
    writer.transport.abort()  # hang up mid-body

    def dropped_line() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "went away" in r.getMessage()]

    async def logged() -> bool:
        return bool(dropped_line()) and bool(await served.services.request_log.rows_since(0))

    await wait_for(logged)
    (row,) = await served.services.request_log.rows_since(0)
    assert (row.status, row.reason, row.source_kind) == ("rejected", "dropped", "upload")
    (line,) = dropped_line()
    assert line.levelname == "INFO" and line.name == "sonify.web.access"
    assert line.getMessage().startswith(
        "web POST /api/jobs: the client went away before its request was read")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Traceback" not in caplog.text and " 500 " not in caplog.text


async def test_an_upload_refused_for_limits_is_never_decoded(
        start_web: WebFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap checks come first: a refused upload leaves no trace of its picture."""
    web = await start_web(gated=True, jobs={"per_user_concurrent": 1})
    assert web.gated is not None
    decoded: list[int] = []
    real = decode.decode_image

    def counting(data: bytes, settings: Any) -> Any:
        decoded.append(len(data))
        return real(data, settings)

    monkeypatch.setattr(decode, "decode_image", counting)
    monkeypatch.setattr(moving, "decode_image", counting)  # the upload's door: still or moving
    first = await web.client.post("/api/jobs", data=upload_form(png_bytes(), seed=1))
    assert first.status == 202
    refused = await web.client.post("/api/jobs",
                                    data=upload_form(png_bytes((640, 480)), seed=2))
    await expect_error(refused, 429, "too_many_running")
    web.gated.gate.set()
    assert (await read_events(web.client, (await first.json())["id"]))[-1][0] == "done"
    rows = {r.reason or r.status: r for r in await last_rows(web)}
    assert rows["too_many_running"].image_sha256 is None  # its picture was never decoded
    assert rows["done"].image_sha256 is not None
    assert decoded == [len(png_bytes())]  # secondary: only the accepted upload was decoded
