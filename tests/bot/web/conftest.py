"""Web page fixtures: real Services on the tiny models, the app on loopback, an image host."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bot.web.server import create_app
from core.services import Services
from tests.conftest import make_config


def png_bytes(size: tuple[int, int] = (96, 64)) -> bytes:
    """A small picture with some structure (a gradient and a square)."""
    img = Image.new("RGB", size, (30, 90, 160))
    for x in range(size[0]):
        for y in range(size[1] // 2):
            img.putpixel((x, y), (x * 2 % 256, 120, 200 - y))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


class GatedPipeline:
    """The real tiny pipeline, held at the door until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def run(self, inputs: Any, options: Any, progress: Any = None) -> Any:
        self.entered.set()
        self.gate.wait(30)
        return self.inner.run(inputs, options, progress)


@dataclass
class Web:
    """A running web app: its client, the Services behind it, and its base URL."""

    client: TestClient
    services: Services
    gated: GatedPipeline | None = None

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")


WebFactory = Callable[..., Awaitable[Web]]


@pytest.fixture
async def start_web(tmp_path: Path) -> AsyncIterator[WebFactory]:
    """Start the app with `make_config(tmp_path, **sections)`; `gated=True` holds the worker."""
    started: list[Web] = []

    async def start(*, gated: bool = False, **sections: dict[str, Any]) -> Web:
        config = make_config(tmp_path / f"web{len(started)}", **sections)
        holder: dict[str, GatedPipeline] = {}
        factory = None
        if gated:
            from core.models.loading import ModelLoader

            holder["p"] = GatedPipeline(None)

            def factory() -> Any:
                holder["p"].inner = ModelLoader(config).pipeline()
                return holder["p"]

        services = await Services.create(config, pipeline_factory=factory)
        client = TestClient(TestServer(create_app(services)))
        await client.start_server()
        web_ = Web(client, services, holder.get("p"))
        started.append(web_)
        return web_

    yield start
    for web_ in started:
        if web_.gated is not None:
            web_.gated.gate.set()
        await web_.client.close()
        await web_.services.close()


@pytest.fixture
async def image_host() -> AsyncIterator[str]:
    """A second local server with a picture and a text file on it."""
    app = web.Application()
    picture = png_bytes()

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=picture, content_type="image/png")

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="hello, not a picture", content_type="image/png")

    app.router.add_get("/cat.png", cat)
    app.router.add_get("/fake.png", text)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def read_events(client: TestClient, job_id: str, **request: Any
                      ) -> list[tuple[str, dict[str, Any]]]:
    """Read a job's whole event stream: [(event name, data)], as a browser would get it."""
    out: list[tuple[str, dict[str, Any]]] = []
    resp = await client.get(f"/api/jobs/{job_id}/events",
                            timeout=aiohttp.ClientTimeout(total=60), **request)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    name = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
    return out


def upload_form(data: bytes | None = None, filename: str = "cat.png", **fields: Any
                ) -> aiohttp.FormData:
    """A multipart form as the page sends it: the picture (if any) and text fields."""
    form = aiohttp.FormData()
    if data is not None:
        form.add_field("image", data, filename=filename, content_type="image/png")
    for name, value in fields.items():
        form.add_field(name, str(value))
    return form


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with a JSON error body of `code` and a readable message."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.headers["Content-Type"].startswith("application/json"), text
    assert "Traceback" not in text and "<html" not in text.lower()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    assert len(body["error"]["message"]) > 10
    return body["error"]


async def row(web: Web, request_id: str) -> Any:
    """The request-log row of `request_id` (it must exist)."""
    record = await web.services.request_log.get(request_id)
    assert record is not None
    return record


async def last_rows(web: Web) -> list[Any]:
    """Every request-log row of this test's server."""
    return await web.services.request_log.rows_since(0)


async def raw_http(port: int, data: bytes, *, limit_s: float = 10.0) -> bytes:
    """Send `data` as is on a new connection and read until the server closes it.

    For requests an HTTP client library would refuse to send (raw bytes in headers, broken
    framing); send `Connection: close` when a whole answer is expected.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), limit_s)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@dataclass
class Served:
    """The real server (`WebAdapter`: its site, guard and loggers) on a free loopback port."""

    adapter: Any
    services: Services

    @property
    def port(self) -> int:
        return int(self.adapter.url.rsplit(":", 1)[1].rstrip("/"))


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """Start `WebAdapter` with `make_config(tmp_path, web={"port": 0, ...}, **sections)`."""
    from bot.web.server import WebAdapter

    started: list[Served] = []

    async def start(**sections: dict[str, Any]) -> Served:
        sections["web"] = {"port": 0, **sections.get("web", {})}
        services = await Services.create(make_config(tmp_path / f"served{len(started)}",
                                                     **sections))
        adapter = WebAdapter(services)
        served = Served(adapter, services)
        started.append(served)
        await adapter.start()
        return served

    yield start
    for served in started:
        await served.adapter.stop()
        await served.services.close()


async def wait_for(check: Callable[[], Awaitable[bool]], limit_s: float = 10.0) -> None:
    """Poll `check` until it is true; fail after `limit_s` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not await check():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
