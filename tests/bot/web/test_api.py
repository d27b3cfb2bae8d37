"""The web page's JSON API on the real engine and tiny models, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
import soundfile as sf
from aiohttp.test_utils import TestClient, TestServer

from bot.web.server import WebAdapter, create_app
from core.services import Services
from tests.bot.web.conftest import (
    WebFactory,
    expect_error,
    last_rows,
    png_bytes,
    read_events,
    row,
    upload_form,
)

pytestmark = pytest.mark.timeout(120)


async def test_upload_streams_progress_and_serves_audio(start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 4})
    page = await web.client.get("/")
    assert page.status == 200
    assert "sonify_uid" in page.cookies  # a per-browser id for the per-user limits

    resp = await web.client.post("/api/jobs", data=upload_form(png_bytes(), seconds=1, seed=7))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and body["position"] >= 1
    assert resp.headers["Cache-Control"] == "no-store"
    job_id = body["id"]

    events = await read_events(web.client, job_id)
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "done"
    assert "started" in names
    steps = [data["progress"] for name, data in events if name == "progress"]
    assert steps and 0 < steps[0] < 1, events
    done = events[-1][1]
    assert done["caption"] and done["prompt"] and done["seed"] == 7
    assert done["audio"] == {"ogg": f"/audio/{job_id}.ogg", "mp3": f"/audio/{job_id}.mp3"}

    # A finished job replays its whole stream for a late subscriber.
    again = await read_events(web.client, job_id)
    assert [n for n, _ in again] == names

    status = await (await web.client.get(f"/api/jobs/{job_id}")).json()
    assert status["status"] == "done" and status["progress"] == 1.0
    assert status["caption"] == done["caption"] and status["error"] is None

    for fmt, mime, fmt_name in (("ogg", "audio/ogg", "OGG"), ("mp3", "audio/mpeg", "MP3")):
        audio = await web.client.get(f"/audio/{job_id}.{fmt}")
        assert audio.status == 200
        assert audio.headers["Content-Type"] == mime
        info = sf.info(io.BytesIO(await audio.read()))
        assert info.format == fmt_name
        assert info.duration == pytest.approx(1.0, abs=0.08)

    preview = await web.client.get(f"/api/jobs/{job_id}/image")
    assert preview.status == 200 and preview.headers["Content-Type"] == "image/jpeg"

    record = await row(web, job_id)
    assert (record.platform, record.source_kind, record.status) == ("web", "upload", "done")
    assert record.user_id.startswith("browser:") and record.seed == 7


async def test_url_job_and_security_headers(start_web: WebFactory, image_host: str) -> None:
    web = await start_web()
    resp = await web.client.post("/api/jobs", json={"url": f"{image_host}/cat.png",
                                                    "seconds": 1.5})
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    events = await read_events(web.client, job_id)
    assert events[-1][0] == "done"
    record = await row(web, job_id)
    assert (record.platform, record.source_kind, record.status) == ("web", "url", "done")
    assert record.options["seconds"] == 1.5
    assert record.user_id == "ip:127.0.0.1"  # no browser cookie: the client address
    # A plain HTML form post (urlencoded) works too.
    resp = await web.client.post("/api/jobs", data={"url": f"{image_host}/cat.png",
                                                    "seconds": "1", "seed": "5"})
    assert resp.status == 202, await resp.text()
    form_id = (await resp.json())["id"]
    assert (await read_events(web.client, form_id))[-1][0] == "done"
    assert (await row(web, form_id)).seed == 5

    for path in ("/", "/static/app.js", "/api/config", f"/api/jobs/{job_id}",
                 f"/audio/{job_id}.ogg", "/api/nope"):
        r = await web.client.get(path)
        assert "default-src 'self'" in r.headers["Content-Security-Policy"], path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "Access-Control-Allow-Origin" not in r.headers
    assert (await web.client.get("/static/app.js")).headers["Content-Type"].startswith(
        "text/javascript")
    # Preflight requests find no CORS support.
    pre = await web.client.options("/api/jobs", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in pre.headers


async def test_intake_errors_are_json_and_logged(start_web: WebFactory, image_host: str) -> None:
    web = await start_web(web={"max_upload_bytes": 20_000})
    client = web.client
    await expect_error(await client.post("/api/jobs", data=upload_form(None, seconds=2)),
                       400, "no_image")
    await expect_error(await client.post("/api/jobs", json={}), 400, "no_image")
    await expect_error(await client.post("/api/jobs", data=upload_form(b"just some text\n" * 20,
                                                                       filename="a.png")),
                       415, "not_image")
    big = png_bytes() + b"\0" * 30_000
    error = await expect_error(await client.post("/api/jobs", data=upload_form(big)),
                               413, "too_large")
    assert "0.02 MB" in error["message"]
    await expect_error(await client.post("/api/jobs", json={"url": "ftp://example.org/a.png"}),
                       422, "bad_url")
    await expect_error(await client.post("/api/jobs", json={"url": f"{image_host}/fake.png"}),
                       415, "not_image")
    await expect_error(await client.post("/api/jobs", data=b"{not json",
                                         headers={"Content-Type": "application/json"}),
                       400, "bad_json")
    await expect_error(await client.post("/api/jobs", data=b"x",
                                         headers={"Content-Type": "text/plain"}),
                       400, "bad_content_type")
    boundary = "multipart/form-data; boundary=zz"
    for ctype, body in (("multipart/form-data", b"no boundary at all"),
                        (boundary, b"garbage without the boundary"),
                        (boundary, b'--zz\r\nContent-Disposition: form-data; name="image"'
                                   b"\r\n\r\ncut short")):
        await expect_error(await client.post("/api/jobs", data=body,
                                             headers={"Content-Type": ctype}),
                           400, "bad_form")
    for seconds in (100, 0, "abc", "nan"):
        await expect_error(await client.post("/api/jobs", data=upload_form(png_bytes(),
                                                                           seconds=seconds)),
                           400, "bad_seconds")
    for seed in (-1, 2**31, "x", 1.5):
        await expect_error(await client.post("/api/jobs", json={"url": f"{image_host}/cat.png",
                                                                "seed": seed}),
                           400, "bad_seed")
    rows = await last_rows(web)
    rejected = [r for r in rows if r.status == "rejected"]
    # Each refusal counts, those of one kind within a minute in one row (`times`).
    assert sum(r.times for r in rejected) == 19 and all(r.platform == "web" for r in rejected)
    reasons = {r.reason for r in rejected}
    assert reasons == {"no_image", "not_image", "too_large", "bad_url", "bad_json",
                       "bad_content_type", "bad_form", "bad_seconds", "bad_seed"}
    assert next(r for r in rejected if r.reason == "too_large").source_kind == "upload"
    assert {r.source_kind for r in rejected if r.reason == "bad_form"} == {"upload"}


async def test_streamed_upload_over_the_limit_is_cut_off(start_web: WebFactory) -> None:
    """Without Content-Length (chunked), the size check happens while reading."""
    web = await start_web(web={"max_upload_bytes": 20_000})
    boundary = "sonifytestboundary"
    data = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"'
            f"\r\nContent-Type: image/png\r\n\r\n").encode()
    data += png_bytes() + b"\0" * 200_000 + f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> Any:
        for i in range(0, len(data), 16_384):
            yield data[i:i + 16_384]

    ctype = f"multipart/form-data; boundary={boundary}"
    resp = await web.client.post("/api/jobs", data=chunks(), headers={"Content-Type": ctype})
    assert "Content-Length" not in resp.request_info.headers
    await expect_error(resp, 413, "too_large")
    # With a Content-Length over the limit, the body is refused before it is read.
    resp = await web.client.post("/api/jobs", data=data, headers={"Content-Type": ctype})
    assert resp.request_info.headers["Content-Length"] == str(len(data))
    await expect_error(resp, 413, "too_large")
    # JSON bodies are bounded too (aiohttp's client_max_size), with the same JSON error.
    resp = await web.client.post("/api/jobs", json={"url": "http://x/" + "a" * 200_000})
    await expect_error(resp, 413, "too_large")


async def test_blocked_private_address(start_web: WebFactory, image_host: str) -> None:
    web = await start_web(images={"allow_private_networks": False})
    await expect_error(await web.client.post("/api/jobs", json={"url": f"{image_host}/cat.png"}),
                       422, "blocked_address")
    (record,) = await last_rows(web)
    assert (record.platform, record.status, record.reason) == ("web", "rejected",
                                                                "blocked_address")


async def test_unknown_ids_formats_and_methods(start_web: WebFactory) -> None:
    web = await start_web()
    client = web.client
    await expect_error(await client.get("/api/jobs/nope"), 404, "unknown_job")
    await expect_error(await client.get("/api/jobs/nope/events"), 404, "unknown_job")
    await expect_error(await client.get("/api/jobs/nope/image"), 404, "unknown_job")
    await expect_error(await client.get("/audio/nope.ogg"), 404, "unknown_job")
    for path in ("/api/whatever", "/api", "/audio/", "/audio/nope", "/audio/a.b.ogg"):
        await expect_error(await client.get(path), 404, "not_found")
    await expect_error(await client.post("/audio/nope.ogg"), 405, "method_not_allowed")
    err = await client.get("/api/jobs")
    await expect_error(err, 405, "method_not_allowed")
    await expect_error(await client.delete("/api/jobs/nope"), 405, "method_not_allowed")

    resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
    job_id = (await resp.json())["id"]
    assert (await read_events(client, job_id))[-1][0] == "done"
    await expect_error(await client.get(f"/audio/{job_id}.wav"), 404, "not_found")
    await expect_error(await client.get(f"/audio/{job_id}.exe"), 404, "not_found")
    # After a restart the job lives only in the request log: still described, still served.
    async with TestClient(TestServer(create_app(web.services))) as fresh:
        view = await (await fresh.get(f"/api/jobs/{job_id}")).json()
        assert view["status"] == "done" and view["caption"]
        assert view["audio"]["ogg"] == f"/audio/{job_id}.ogg"
        audio = await fresh.get(view["audio"]["mp3"])
        assert audio.status == 200 and audio.headers["Content-Type"] == "audio/mpeg"
        await expect_error(await fresh.get(f"/api/jobs/{job_id}/events"), 404, "unknown_job")


async def test_busy_queue_gives_503(start_web: WebFactory) -> None:
    web = await start_web(gated=True, jobs={"max_queue": 1, "per_user_concurrent": 10})
    client = web.client
    assert web.gated is not None
    first = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=1))
    assert first.status == 202
    # Wait until the worker holds the first job, so the queue itself is empty again.
    assert await asyncio.to_thread(web.gated.entered.wait, 30)
    second = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=2))
    assert second.status == 202
    assert (await second.json())["position"] == 1
    third = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=3))
    await expect_error(third, 503, "busy")
    assert int(third.headers["Retry-After"]) >= 1
    web.gated.gate.set()
    for resp in (first, second):
        assert (await read_events(client, (await resp.json())["id"]))[-1][0] == "done"
    rows = await last_rows(web)
    assert sorted(r.status for r in rows) == ["done", "done", "rejected"]


async def test_jobs_kept_over_a_restart_stay_reachable(start_web: WebFactory) -> None:
    """A stopping server ends streams with a reconnect hint (not `failed`); the next one resumes."""
    web = await start_web(gated=True)
    assert web.gated is not None
    client = web.client
    first = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=1))
    assert await asyncio.to_thread(web.gated.entered.wait, 30)
    second = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=2))
    job_id = (await second.json())["id"]
    stream = await client.get(f"/api/jobs/{job_id}/events")
    await web.services.engine.stop(timeout=0)
    web.gated.gate.set()
    text = (await asyncio.wait_for(stream.read(), 10)).decode()
    assert "event: queued" in text and "retry: 3000" in text and "event: failed" not in text
    assert (await row(web, job_id)).status == "queued"  # re-run at the next start
    assert (await row(web, (await first.json())["id"])).status in ("queued", "running")
    await web.services.close()  # the process ends (and its hold on the request log)

    # The next start takes both jobs back; the page finds them under the same ids.
    services = await Services.create(web.services.config.with_section("web", port=0))
    adapter = WebAdapter(services)
    try:
        await adapter.start()
        assert await services.engine.resume_recovered() == 2
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{adapter.url}api/jobs/{job_id}/events") as resp:
                text = await resp.text()
            assert "event: done" in text
            async with session.get(f"{adapter.url}audio/{job_id}.ogg") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
    finally:
        await adapter.stop()
        await services.close()


async def test_per_user_limit_gives_429(start_web: WebFactory) -> None:
    web = await start_web(jobs={"per_user_per_hour": 1})
    client = web.client
    first = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=1))
    assert first.status == 202
    second = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=2))
    error = await expect_error(second, 429, "hourly_limit")
    assert int(second.headers["Retry-After"]) > 60
    assert "per hour" in error["message"]
    # Another browser (its own id cookie, issued by the page) is not held back by the first
    # one's limit. A cookie the client made up is no identity (tests/bot/web/test_identity.py).
    async with aiohttp.ClientSession() as browser:
        async with browser.get(web.origin + "/") as page:
            uid = page.cookies["sonify_uid"].value
    other = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=3),
                              cookies={"sonify_uid": uid})
    assert other.status == 202, await other.text()
    await read_events(client, (await first.json())["id"])
    await read_events(client, (await other.json())["id"], cookies={"sonify_uid": uid})


async def test_internal_errors_stay_json(start_web: WebFactory, monkeypatch: Any,
                                         caplog: Any) -> None:
    web = await start_web()
    client = web.client
    resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
    job_id = (await resp.json())["id"]
    assert (await read_events(client, job_id))[-1][0] == "done"

    async def broken(*_: Any) -> Any:
        raise RuntimeError("database on fire at /secret/path")

    monkeypatch.setattr(web.services.engine, "submit", broken)
    monkeypatch.setattr(web.services.engine, "get_request", broken)
    resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
    error = await expect_error(resp, 500, "failed")
    assert "fire" not in error["message"] and "/secret" not in await resp.text()
    for path in ("/api/jobs/gone-from-memory", "/audio/gone-from-memory.mp3"):
        text = await (await expect_error_resp(client, path, 500)).text()
        assert "fire" not in text and "Traceback" not in text

    # A failure inside an open event stream (headers already sent) ends it instead of hanging.
    def bad_event(*_: Any) -> Any:
        raise RuntimeError("serializer on fire")

    monkeypatch.setattr("bot.web.api.event_data", bad_event)
    stream = await client.get(f"/api/jobs/{job_id}/events",
                              timeout=aiohttp.ClientTimeout(total=10))
    assert stream.status == 200
    assert "event:" not in (await stream.read()).decode()
    assert f"event stream of {job_id} failed" in caplog.text
    view = await client.get(f"/api/jobs/{job_id}")  # the job itself is untouched
    assert view.status == 200 and (await view.json())["status"] == "done"


async def expect_error_resp(client: TestClient, path: str, status: int) -> Any:
    """GET `path`; it answers `status` with the JSON error shape."""
    resp = await client.get(path)
    await expect_error(resp, status, "failed")
    return resp


async def test_a_job_refused_during_shutdown_is_a_rejected_row(start_web: WebFactory) -> None:
    """The engine stops first on shutdown; an upload arriving then is a 503 and a row."""
    web = await start_web()
    await web.services.engine.stop(1.0)
    resp = await web.client.post("/api/jobs", data=upload_form(png_bytes()),
                                 headers={"Accept-Language": "es-ES,es;q=0.9"})
    error = await expect_error(resp, 503, "shutting_down")
    assert error["message"] == "El bot se está reiniciando. Inténtalo de nuevo en un minuto."
    assert [(r.status, r.reason, r.source_kind) for r in await last_rows(web)] == [
        ("rejected", "shutting_down", "upload")]
