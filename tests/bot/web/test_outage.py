"""The web API while its SQLite request log cannot be written (`chattr +i`, for real): a
JSON 503 with Retry-After in the browser's language — never a 500 — and the same process
takes requests again as soon as the file can be written."""

from __future__ import annotations

from core.storage.migrate import sqlite_file
from tests.bot.web.conftest import WebFactory, expect_error, png_bytes, read_events, upload_form
from tests.local_servers import Unwritable, sqlite_files


async def test_while_the_log_cannot_be_written_the_api_says_503_and_recovers(
        start_web: WebFactory) -> None:
    web = await start_web()
    database = sqlite_file(web.services.config.database_url)
    assert database is not None
    Unwritable.check(database.parent)
    client = web.client
    fault = sqlite_files(database)
    fault.apply()
    try:
        resp = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=1))
        error = await expect_error(resp, 503, "unavailable")
        assert resp.headers["Retry-After"] == "5"
        assert error["message"] == ("I can't take new requests for a moment. Please try again "
                                    "in about 5 s.")
        resp = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=2),
                                 headers={"Accept-Language": "es"})
        error = await expect_error(resp, 503, "unavailable")
        assert error["message"].startswith("No puedo aceptar peticiones nuevas")
    finally:
        fault.restore()
    resp = await client.post("/api/jobs", data=upload_form(png_bytes(), seed=3))
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    assert (await read_events(client, job_id))[-1][0] == "done"
