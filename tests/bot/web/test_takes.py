"""'Another take' and 'Use my words' on the web: new jobs from a result, for its owner only,
through the same limits and refusal rows as every other submission."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from core.jobs.engine import MAX_TEXT_CHARS
from core.user_text import WORDS_MAX_CHARS
from tests.bot.web.conftest import (
    Web,
    WebFactory,
    expect_error,
    last_rows,
    png_bytes,
    read_events,
    row,
    upload_form,
)

pytestmark = pytest.mark.timeout(120)


async def finished_upload(web: Web, **fields: Any) -> tuple[str, dict[str, Any]]:
    """Open the page (for the browser cookie), upload a picture, wait for its `done` view."""
    await web.client.get("/")
    resp = await web.client.post("/api/jobs", data=upload_form(png_bytes(), **fields))
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    events = await read_events(web.client, job_id)
    assert events[-1][0] == "done", events
    return job_id, events[-1][1]


async def test_another_take_keeps_the_caption_and_draws_a_fresh_seed(
        start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2})
    job_id, first = await finished_upload(web, seconds=1.5, seed=7)
    resp = await web.client.post(f"/api/jobs/{job_id}/retake")
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["id"] != job_id and resp.headers["Location"] == f"/api/jobs/{body['id']}"
    assert body["image"] == f"/api/jobs/{body['id']}/image"  # the same picture, shown again
    done = (await read_events(web.client, body["id"]))[-1][1]
    assert done["caption"] == first["caption"] and done["seed"] != 7
    assert done["duration"] == pytest.approx(1.5, abs=0.05)  # the original's options
    view = await (await web.client.get(f"/api/jobs/{body['id']}")).json()
    assert (view["kind"], view["seed"], view["shared"]) == ("retake", done["seed"], False)
    record = await row(web, body["id"])
    assert (record.source_kind, record.caption, record.status) == ("retake", first["caption"],
                                                                   "done")
    assert record.user_id == (await row(web, job_id)).user_id


async def test_use_my_words_renders_them_with_the_results_options(
        start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2})
    job_id, _ = await finished_upload(web, seconds=1.5)
    resp = await web.client.post(f"/api/jobs/{job_id}/words",
                                 json={"words": "  rain on a\n tin   roof "})
    assert resp.status == 202, await resp.text()
    words_id = (await resp.json())["id"]
    assert (await resp.json())["image"] is None  # a sound from words has no picture
    done = (await read_events(web.client, words_id))[-1][1]
    assert done["prompt"] == "rain on a tin roof" and not done["caption"]
    assert done["duration"] == pytest.approx(1.5, abs=0.05)
    record = await row(web, words_id)
    assert (record.source_kind, record.prompt) == ("text", "rain on a tin roof")
    # Another take of a sound from words takes the words again, as the bots do.
    resp = await web.client.post(f"/api/jobs/{words_id}/retake")
    assert resp.status == 202, await resp.text()
    again = (await read_events(web.client, (await resp.json())["id"]))[-1][1]
    assert again["prompt"] == "rain on a tin roof" and again["seed"] != done["seed"]


async def test_someone_elses_result_looks_unknown_and_each_refusal_is_a_row(
        start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2})
    job_id, _ = await finished_upload(web)
    before = len(await last_rows(web))
    unknown = []
    async with aiohttp.ClientSession(cookies={"sonify_uid": "someone-else-0123456789"}) as other:
        for target in (job_id, "AAAAAAAAAAAA"):  # another browser's job, and no job at all
            for tail, kwargs in (("retake", {}), ("words", {"json": {"words": "birds"}})):
                async with other.post(f"{web.origin}/api/jobs/{target}/{tail}",
                                      **kwargs) as resp:
                    unknown.append(await expect_error(resp, 404, "unknown_job"))
    assert all(error == unknown[0] for error in unknown)  # indistinguishable
    rows = (await last_rows(web))[before:]
    # Refusals of one kind within a minute share a row, counted in `times`.
    assert [(r.source_kind, r.status, r.reason, r.times) for r in rows] == [
        ("retake", "rejected", "unknown_job", 4)]


async def test_words_are_bounded_and_refusals_carry_the_catalogue_code(
        start_web: WebFactory) -> None:
    assert WORDS_MAX_CHARS <= MAX_TEXT_CHARS
    web = await start_web(generation={"steps": 2})
    job_id, _ = await finished_upload(web)
    before = len(await last_rows(web))
    path = f"/api/jobs/{job_id}/words"
    long = "a" * (WORDS_MAX_CHARS + 1)
    error = await expect_error(await web.client.post(path, json={"words": long}),
                               400, "words_too_long")
    assert str(WORDS_MAX_CHARS) in error["message"]
    spanish = await expect_error(await web.client.post(
        path, json={"words": long}, headers={"Accept-Language": "es"}), 400, "words_too_long")
    assert spanish["message"].startswith("Tu descripción") and str(WORDS_MAX_CHARS) in \
        spanish["message"]
    # A body far beyond what the longest words need is refused before it is read whole.
    await expect_error(await web.client.post(path, json={"words": "b" * 100_000}),
                       400, "words_too_long")
    await expect_error(await web.client.post(path, json={"words": " \n "}), 400, "no_words")
    await expect_error(await web.client.post(path, json={"text": "birds"}), 400, "no_words")
    await expect_error(await web.client.post(path, data=b"{nope",
                                             headers={"Content-Type": "application/json"}),
                       400, "bad_json")
    # Exactly at the limit is fine.
    ok = await web.client.post(path, json={"words": "c" * WORDS_MAX_CHARS})
    assert ok.status == 202, await ok.text()
    await read_events(web.client, (await ok.json())["id"])
    rows = (await last_rows(web))[before:]
    # Refusals of one kind within a minute are one row with a count.
    assert [(r.source_kind, r.status, r.reason, r.times) for r in rows] == [
        ("text", "rejected", "words_too_long", 3), ("text", "rejected", "no_words", 2),
        ("text", "rejected", "bad_json", 1), ("text", "done", None, 1)]


async def test_takes_pass_the_same_limits_as_pictures(start_web: WebFactory) -> None:
    web = await start_web(generation={"steps": 2}, web={"per_address_per_hour": 2})
    job_id, _ = await finished_upload(web)
    resp = await web.client.post(f"/api/jobs/{job_id}/retake")
    assert resp.status == 202
    await read_events(web.client, (await resp.json())["id"])
    error = await web.client.post(f"/api/jobs/{job_id}/words", json={"words": "birds"})
    await expect_error(error, 429, "address_hourly")
    assert "Retry-After" in error.headers
    last = (await last_rows(web))[-1]
    assert (last.source_kind, last.status, last.reason) == ("text", "rejected", "address_hourly")


async def test_an_unfinished_result_cannot_be_taken_again_yet(start_web: WebFactory) -> None:
    web = await start_web(gated=True, generation={"steps": 2})
    await web.client.get("/")
    resp = await web.client.post("/api/jobs", data=upload_form(png_bytes()))
    job_id = (await resp.json())["id"]
    await expect_error(await web.client.post(f"/api/jobs/{job_id}/retake"), 409, "not_finished")
    await expect_error(await web.client.post(f"/api/jobs/{job_id}/share"), 409, "not_finished")
    last = (await last_rows(web))[-1]
    assert (last.source_kind, last.status, last.reason) == ("retake", "rejected", "not_finished")
    assert web.gated is not None
    web.gated.gate.set()
    assert (await read_events(web.client, job_id))[-1][0] == "done"


def test_every_platform_bounds_words_by_the_one_limit() -> None:
    """One limit (core.user_text.WORDS_MAX_CHARS) for Telegram, Discord's form and the web."""
    from bot.discord.views import words_modal

    modal = words_modal("r1", "en")
    [field] = modal.children
    assert getattr(field, "max_length", None) == WORDS_MAX_CHARS == 300


async def test_words_that_are_not_text_are_a_400_on_both_databases(
        start_web: WebFactory, log_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A lone surrogate (both databases) or a NUL (PostgreSQL) in "Use my words" gave a 500:
    now a 400 `words_invalid` with the catalogue text, logged as a refusal row."""
    from core.logs import setup_logging

    web = await start_web(generation={"steps": 2}, storage={"database_url": log_url})
    setup_logging()
    job_id, _ = await finished_upload(web)
    path = f"/api/jobs/{job_id}/words"
    for words in ("\ud800 x", "x\u0000y", "\x1b]0;owned\x07 \x9b2J"):
        error = await expect_error(await web.client.post(path, json={"words": words}),
                                   400, "words_invalid")
        assert error["message"].startswith("Your description holds characters")
    spanish = await expect_error(await web.client.post(
        path, json={"words": "\udfff"}, headers={"Accept-Language": "es"}), 400, "words_invalid")
    assert spanish["message"].startswith("Tu descripción contiene caracteres")
    rows = [r for r in await last_rows(web) if r.status == "rejected"]
    assert [(r.reason, r.times, r.prompt) for r in rows] == [("words_invalid", 4, "\ufffd x")]
    # The page goes on: the same browser's ordinary words are rendered.
    ok = await web.client.post(path, json={"words": "rain on a tin roof"})
    assert ok.status == 202, await ok.text()
    assert (await read_events(web.client, (await ok.json())["id"]))[-1][0] == "done"
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x00" not in err and "\x9b" not in err
    assert "\\ud800 x" in err  # the first refusal's line, escaped
