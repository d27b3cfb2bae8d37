"""Two web processes behind one address (the redis backend): a job sent to one is followed
live, and its clip fetched, from the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from bot.web.server import create_app
from core.services import Services
from tests.bot.web.conftest import png_bytes, read_events, upload_form
from tests.core.distributed.support import redis_config, render_worker
from tests.local_servers import RedisServer


async def test_a_job_sent_to_one_web_process_is_followed_from_the_other(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    web = {"per_address_concurrent": 0, "per_address_per_hour": 0}
    configs = [redis_config(tmp_path / name, postgres_url, redis_server.url).with_section(
        "web", enabled="true", **web) for name in ("web-a", "web-b")]
    services = [await Services.create(config) for config in configs]
    clients = [TestClient(TestServer(create_app(s))) for s in services]
    try:
        for client in clients:
            await client.start_server()
        first, second = clients
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(str(first.make_url("/"))) as page:
                cookie = page.cookies["sonify_uid"].value
            async with browser.post(str(first.make_url("/api/jobs")),
                                    data=upload_form(png_bytes(), seed=5)) as resp:
                assert resp.status == 202
                job_id = (await resp.json())["id"]
        worker_cfg = redis_config(tmp_path / "worker", postgres_url, redis_server.url)
        async with render_worker(worker_cfg, tiny_pipeline):
            events = await read_events(second, job_id, cookies={"sonify_uid": cookie})
        names = [name for name, _ in events]
        assert names[0] == "queued" and names[-1] == "done", names
        assert "started" in names
        done = events[-1][1]
        resp = await second.get(done["audio"]["ogg"], cookies={"sonify_uid": cookie})
        assert resp.status == 200 and (await resp.read())[:4] == b"OggS"
        # Someone else's browser cannot follow it from either process.
        resp = await second.get(f"/api/jobs/{job_id}/events")
        assert resp.status == 404
    finally:
        for client in clients:
            await client.close()
        for service in services:
            await service.close()
