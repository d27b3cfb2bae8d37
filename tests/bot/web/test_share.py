"""Share links: unguessable, opened without the page's token, revocable, stored as a hash."""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile as sf
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from sqlalchemy import select

from bot.web.server import create_app
from core.storage.tables import metadata, shares
from tests.bot.web.conftest import (
    ServeFactory,
    Web,
    WebFactory,
    expect_error,
    png_bytes,
    read_events,
    upload_form,
)

pytestmark = pytest.mark.timeout(120)

TOKEN = "page-s3cret-token"
OWNER = {"Authorization": f"Bearer {TOKEN}"}


async def owned_result(web: Web, **request: Any) -> tuple[str, dict[str, Any]]:
    await web.client.get("/", **request)  # the browser cookie
    resp = await web.client.post("/api/jobs", data=upload_form(png_bytes((200, 120))),
                                 **request)
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    events = await read_events(web.client, job_id, **request)
    assert events[-1][0] == "done"
    return job_id, events[-1][1]


async def share(web: Web, job_id: str, **request: Any) -> str:
    resp = await web.client.post(f"/api/jobs/{job_id}/share", **request)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["url"] == f"/s/{body['token']}"
    assert len(body["token"]) >= 22  # secrets.token_urlsafe(16) or more
    return str(body["token"])


async def test_a_shared_result_opens_with_the_link_alone_until_it_is_revoked(
        start_web: WebFactory) -> None:
    web = await start_web(web={"token": TOKEN}, generation={"steps": 2, "seconds": 1.5})
    job_id, done = await owned_result(web, headers=OWNER)
    token = await share(web, job_id, headers=OWNER)
    view = await (await web.client.get(f"/api/jobs/{job_id}", headers=OWNER)).json()
    assert view["shared"] is True

    # A visitor with nothing but the link: no page token, no cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as visitor:
        async with visitor.get(f"{web.origin}/s/{token}") as page:
            assert page.status == 200
            text = await page.text()
            assert page.headers["Cache-Control"] == "no-store"
            assert "noindex" in page.headers["X-Robots-Tag"]
            assert "Set-Cookie" not in page.headers
        assert html.escape(done["caption"]) in text
        assert f'src="/s/{token}/sound.ogg"' in text and "<audio" in text
        assert f'src="/s/{token}/picture.jpg"' in text
        assert f"seed {done['seed']}" in text and "Length 1.5 s" in text
        assert job_id not in text.replace(f"sonify-{job_id}", "")  # no way back to the API
        for asset, check in (("style.css", lambda b: b"--bg" in b),
                             ("favicon.svg", lambda b: b"<svg" in b),
                             ("picture.jpg", lambda b: Image.open(io.BytesIO(b)).format
                              == "JPEG"),
                             ("sound.ogg", lambda b: sf.info(io.BytesIO(b)).format == "OGG"),
                             ("sound.mp3", lambda b: sf.info(io.BytesIO(b)).format == "MP3")):
            async with visitor.get(f"{web.origin}/s/{token}/{asset}") as resp:
                assert resp.status == 200, asset
                assert check(await resp.read()), asset
        # The link opens the shared page and nothing else.
        for path in ("/", "/static/app.js", "/api/config", f"/api/jobs/{job_id}",
                     f"/audio/{job_id}.ogg", f"/api/jobs/{job_id}/image",
                     f"/s/{token}/app.js"):
            async with visitor.get(web.origin + path) as resp:
                assert resp.status == 401, path
        async with visitor.post(f"{web.origin}/s/{token}") as resp:
            assert resp.status == 401
        mistyped = token[:-1] + ("A" if token[-1] != "A" else "B")
        async with visitor.get(f"{web.origin}/s/{mistyped}") as resp:
            assert resp.status == 404  # a mistyped link: nothing
            assert html.escape("This link doesn't work") in await resp.text()

        # Revoked: the link and every asset under it answer 404, like a link never made.
        resp = await web.client.delete(f"/api/jobs/{job_id}/share", headers=OWNER)
        assert resp.status == 204
        for path in ("", "/picture.jpg", "/sound.ogg", "/style.css"):
            async with visitor.get(f"{web.origin}/s/{token}{path}") as gone:
                assert gone.status == 404, path
    view = await (await web.client.get(f"/api/jobs/{job_id}", headers=OWNER)).json()
    assert view["shared"] is False

    # Sharing again makes a new link; it ends the one before.
    first, second = await share(web, job_id, headers=OWNER), await share(web, job_id,
                                                                          headers=OWNER)
    assert first != second
    assert (await web.client.get(f"/s/{first}")).status == 404
    assert (await web.client.get(f"/s/{second}")).status == 200


async def test_only_the_owner_can_share_or_revoke(start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2})
    job_id, _ = await owned_result(web)
    token = await share(web, job_id)
    async with aiohttp.ClientSession(cookies={"sonify_uid": "someone-else-0123456789"}) as other:
        for target in (job_id, "AAAAAAAAAAAA"):
            async with other.post(f"{web.origin}/api/jobs/{target}/share") as resp:
                await expect_error(resp, 404, "unknown_job")
            async with other.delete(f"{web.origin}/api/jobs/{target}/share") as resp:
                await expect_error(resp, 404, "unknown_job")
        async with other.get(f"{web.origin}/s/{token}") as resp:
            assert resp.status == 200  # still shared: a stranger could not end it
    # Revoking is a write: another site cannot make the owner's browser do it.
    resp = await web.client.delete(f"/api/jobs/{job_id}/share",
                                   headers={"Origin": "http://evil.example"})
    await expect_error(resp, 403, "cross_origin")
    assert (await web.client.get(f"/s/{token}")).status == 200


async def test_the_token_is_in_no_row_no_file_and_no_log_line(
        serve: ServeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    served = await serve(generation={"steps": 2})
    caplog.set_level(logging.DEBUG)
    base = served.adapter.url.rstrip("/")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(base + "/"):
            pass
        async with browser.post(base + "/api/jobs", data=upload_form(png_bytes())) as resp:
            job_id = (await resp.json())["id"]
        async with browser.get(f"{base}/api/jobs/{job_id}/events") as resp:
            await resp.read()
        async with browser.post(f"{base}/api/jobs/{job_id}/share") as resp:
            token = (await resp.json())["token"]
        for path in ("", "/picture.jpg", "/sound.ogg", "/sound.mp3", "/style.css", "/nope"):
            async with browser.get(f"{base}/s/{token}{path}") as resp:
                assert resp.status == (404 if path == "/nope" else 200), path

        # Stored: the hash, nothing else of the token.
        request_log = served.services.request_log
        async with request_log.db.connect() as conn:
            stored = (await conn.execute(select(shares))).all()
            assert [(r.token_hash, r.request_id) for r in stored] == [
                (hashlib.sha256(token.encode()).hexdigest(), job_id)]
            for table in metadata.sorted_tables:
                for found in (await conn.execute(select(table))).all():
                    assert token not in repr(tuple(found)), table.name

        # A failure while a shared page is served is logged by its route, not its path.
        async def broken(_: str) -> None:
            raise RuntimeError("the database went away")

        original = request_log.share_links.find
        request_log.share_links.find = broken  # type: ignore[method-assign]
        try:
            async with browser.get(f"{base}/s/{token}") as resp:
                assert resp.status == 500
        finally:
            request_log.share_links.find = original  # type: ignore[method-assign]
        async with browser.delete(f"{base}/api/jobs/{job_id}/share") as resp:
            assert resp.status == 204
        async with browser.get(f"{base}/s/{token}") as resp:
            assert resp.status == 404

    assert "web GET /s/{token} 200" in caplog.text  # the access log has the route
    assert "web GET /s/{token}/sound.ogg 200" in caplog.text
    assert "web request GET /s/{token} failed" in caplog.text
    assert token not in caplog.text
    # Nor in any file of the service: the database (and its write-ahead log), the cache.
    database = Path(str(served.services.request_log.db.url.database))
    data_dir = Path(served.services.config.storage.data_dir)
    searched = await asyncio.to_thread(_files_holding, token, database.parent, data_dir)
    assert database in searched and len(searched) > 3
    assert not [name for name, holds in searched.items() if holds]


def _files_holding(secret: str, *folders: Path) -> dict[Path, bool]:
    """Every file under `folders`, and whether its bytes hold `secret`."""
    files = {p for folder in folders for p in folder.rglob("*") if p.is_file()}
    return {p: secret.encode() in p.read_bytes() for p in files}


async def test_the_shared_page_keeps_its_picture_after_a_restart(start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2})
    job_id, done = await owned_result(web)
    token = await share(web, job_id)
    words = await web.client.post(f"/api/jobs/{job_id}/words", json={"words": "a <b>bell</b>"})
    words_id = (await words.json())["id"]
    await read_events(web.client, words_id)
    words_token = await share(web, words_id)

    # A new app over the same request log: previews in memory are gone, the link is not.
    async with TestClient(TestServer(create_app(web.services))) as fresh:
        page = await (await fresh.get(f"/s/{token}", headers={"Accept-Language": "es"})).text()
        assert html.escape(done["caption"]) in page and "semilla" in page
        assert 'lang="es"' in page
        picture = await fresh.get(f"/s/{token}/picture.jpg")
        assert picture.status == 200 and picture.headers["Content-Type"] == "image/jpeg"
        # Sharing again after the restart keeps the picture the first link had.
        resp = await fresh.post(f"/api/jobs/{job_id}/share",
                                cookies=web.client.session.cookie_jar.filter_cookies(
                                    web.client.make_url("/")))
        again = (await resp.json())["token"]
        assert (await fresh.get(f"/s/{again}/picture.jpg")).status == 200

        # A sound from words: the words (escaped), no picture.
        page = await (await fresh.get(f"/s/{words_token}")).text()
        assert "a &lt;b&gt;bell&lt;/b&gt;" in page and "<b>" not in page
        assert "picture.jpg" not in page
        assert (await fresh.get(f"/s/{words_token}/picture.jpg")).status == 404


async def test_share_links_round_trip_on_sqlite_and_postgresql(log_url: str) -> None:
    from core.storage.request_log import RequestLog

    request_log = await RequestLog.open(log_url)
    try:
        links = request_log.share_links
        token = await links.create("job-1", b"\xff\xd8jpeg")
        found = await links.find(token)
        assert found is not None and (found.request_id, found.preview) == ("job-1", b"\xff\xd8jpeg")
        assert await links.is_shared("job-1") and not await links.is_shared("job-2")
        renewed = await links.create("job-1")  # a new link keeps the picture, ends the old one
        assert await links.find(token) is None
        assert (await links.find(renewed)).preview == b"\xff\xd8jpeg"  # type: ignore[union-attr]
        assert await links.revoke("job-1") and not await links.revoke("job-1")
        assert await links.find(renewed) is None and not await links.is_shared("job-1")
    finally:
        await request_log.close()
