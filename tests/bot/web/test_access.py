"""Who may use the page: the token, same-origin writes, the host check, private jobs."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.web.server import WebAdapter, create_app
from core.services import Services
from tests.bot.web.conftest import (
    WebFactory,
    expect_error,
    last_rows,
    png_bytes,
    read_events,
    upload_form,
)
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(120)


async def test_token_is_required_when_configured(start_web: WebFactory) -> None:
    token = "s3cret-web-token"
    web = await start_web(web={"token": token})
    client = web.client
    for path in ("/api/config", "/api/jobs/x", "/audio/x.ogg"):
        resp = await client.get(path)
        await expect_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    await expect_error(await client.get("/api/config",
                                        headers={"Authorization": "Bearer wrong"}),
                       401, "unauthorized")
    await expect_error(await client.post("/api/jobs", data=upload_form(png_bytes())),
                       401, "unauthorized")
    ok = await client.get("/api/config", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200
    assert (await client.get("/")).status == 401
    assert (await client.get("/?token=wrong")).status == 401
    assert token not in await (await client.get("/?token=wrong")).text()

    entry = await client.get(f"/?token={token}", allow_redirects=False)
    assert entry.status == 303 and entry.headers["Location"] == "/"
    cookie = entry.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    assert (await client.get("/")).status == 200  # the cookie now opens the page
    resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
    assert resp.status == 202
    assert (await read_events(client, (await resp.json())["id"]))[-1][0] == "done"
    assert all(token not in str(tuple(r)) for r in await last_rows(web))


async def test_cross_origin_writes_and_foreign_hosts_are_refused(start_web: WebFactory) -> None:
    web = await start_web()
    client = web.client
    resp = await client.post("/api/jobs", data=upload_form(png_bytes()),
                             headers={"Origin": "http://evil.example"})
    await expect_error(resp, 403, "cross_origin")
    resp = await client.post("/api/jobs", json={"url": "http://x/a.png"},
                             headers={"Origin": "null"})
    await expect_error(resp, 403, "cross_origin")
    resp = await client.post("/api/jobs", json={"url": "http://x/a.png"},
                             headers={"Sec-Fetch-Site": "cross-site"})
    await expect_error(resp, 403, "cross_origin")
    # DNS rebinding: a foreign name resolving to 127.0.0.1 gets nothing.
    await expect_error(await client.get("/api/config", headers={"Host": "evil.example"}),
                       403, "bad_host")
    same = await client.post("/api/jobs", data=upload_form(png_bytes()),
                             headers={"Origin": web.origin})
    assert same.status == 202, await same.text()
    await read_events(client, (await same.json())["id"])
    assert [r.status for r in await last_rows(web)] == ["done"]


async def test_jobs_are_private_to_their_browser(start_web: WebFactory) -> None:
    """Knowing a job id is not enough: status, events, preview and audio are the owner's."""
    web = await start_web()
    client = web.client
    uid = (await client.get("/")).cookies["sonify_uid"].value
    resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
    job_id = (await resp.json())["id"]
    assert (await read_events(client, job_id))[-1][0] == "done"
    paths = (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/events", f"/api/jobs/{job_id}/image",
             f"/audio/{job_id}.ogg", f"/audio/{job_id}.mp3")
    for path in paths:
        assert (await client.get(path)).status == 200, path

    strangers = (aiohttp.ClientSession(cookies={"sonify_uid": "someone-else-0123456789"}),
                 aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))  # a bare API client
    for session in strangers:
        async with session:
            for path in paths:
                async with session.get(web.origin + path) as other:
                    await expect_error(other, 404, "unknown_job")

    # After a restart the job lives only in the request log: still the owner's alone.
    async with TestClient(TestServer(create_app(web.services))) as fresh:
        own = await fresh.get(f"/api/jobs/{job_id}", cookies={"sonify_uid": uid})
        assert own.status == 200 and (await own.json())["status"] == "done"
        audio = await fresh.get(f"/audio/{job_id}.ogg", cookies={"sonify_uid": uid})
        assert audio.status == 200
        for path in (f"/api/jobs/{job_id}", f"/audio/{job_id}.ogg"):
            await expect_error(await fresh.get(path), 404, "unknown_job")


async def test_adapter_prints_its_address_and_never_logs_the_token(
        tmp_path: Any, capsys: Any, caplog: Any) -> None:
    token = "another-s3cret-token"
    config = make_config(tmp_path, web={"port": 0, "token": token})
    services = await Services.create(config)
    adapter = WebAdapter(services)
    caplog.set_level(logging.DEBUG)
    try:
        await adapter.start()
        assert adapter.name == "web"
        assert adapter.url.startswith("http://127.0.0.1:") and adapter.url.endswith("/")
        assert f"Sonify web page: {adapter.url}" in capsys.readouterr().out
        # Once: printed, and not logged again beside it.
        assert not any("Sonify web page" in r.getMessage() for r in caplog.records)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{adapter.url}?token={token}") as resp:
                assert resp.status == 200  # followed the redirect with the cookie
            async with session.get(f"{adapter.url}api/config") as resp:
                assert resp.status == 200
    finally:
        await adapter.stop()
        await services.close()
    assert "web GET / 303" in caplog.text  # requests are logged, without their query
    assert token not in caplog.text
