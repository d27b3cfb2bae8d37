"""The page in a real headless Chromium: upload, live progress, caption, playable audio, errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.bot.web.conftest import WebFactory, png_bytes

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.timeout(120),
    # CI installs Chromium (.ci/run), so there a missing browser fails instead of skipping.
    pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                              "(apt-get install -y chromium)"),
]

# Records every value the progress bars take, as the DOM shows them.
WATCH_PROGRESS = """
window.__progress = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.matches && r.target.matches("progress")) window.__progress.push(r.target.value);
  }
}).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["value"]});
"""

AUDIO_DURATION = """
(audio) => new Promise((resolve, reject) => {
  const done = () => resolve({duration: audio.duration, src: audio.currentSrc});
  if (audio.readyState >= 1 && isFinite(audio.duration)) return done();
  audio.addEventListener("loadedmetadata", done, {once: true});
  audio.addEventListener("error", () => reject(new Error("audio error")), {once: true});
  setTimeout(() => reject(new Error("no metadata after 15 s")), 15000);
})
"""


JOB_VIEW = """
async (id) => (await fetch("/api/jobs/" + id, {credentials: "same-origin"})).json()
"""


async def test_page_upload_progress_audio_and_error(start_web: WebFactory, image_host: str,
                                                     tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    web = await start_web(generation={"steps": 8, "seconds": 2.0})
    url = str(web.client.make_url("/"))
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes((320, 240)))
    notes = tmp_path / "notes.png"  # lies about its type: the server sniffs the bytes
    notes.write_text("shopping list: eggs, milk, bread\n" * 5)
    problems: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(url)
            assert await page.title() == "Sonify — hear a picture"
            await check_accessibility(page)
            await page.evaluate(WATCH_PROGRESS)

            await page.set_input_files("#image", str(picture))
            assert "picture.png" in await page.text_content("#file-name")
            await page.fill("#seed", "42")
            await page.click("#submit")
            card = page.locator(".result").first
            await card.locator(".preview").wait_for()
            await page.wait_for_selector('.result[data-status="done"]', timeout=60_000)

            values: list[float] = await page.evaluate("window.__progress")
            assert any(0 < v < 100 for v in values), values
            caption = (await card.locator(".caption").text_content() or "").strip()
            assert caption
            assert await card.locator(".status").text_content() in ("Done", "Done (from cache)")
            assert await card.locator(".preview").evaluate("img => img.naturalWidth") > 0
            audio: dict[str, Any] = await card.locator("audio").evaluate(AUDIO_DURATION)
            assert audio["src"].endswith(".ogg")
            assert audio["duration"] == pytest.approx(2.0, abs=0.1)
            ogg = await card.locator(".dl-ogg").get_attribute("href")
            mp3 = await card.locator(".dl-mp3").get_attribute("href")
            job_id = await card.get_attribute("data-job-id")
            assert (ogg, mp3) == (f"/audio/{job_id}.ogg", f"/audio/{job_id}.mp3")

            # A second picture, by link and by keyboard only (Enter submits the form):
            # it stacks on top with its own caption and clip; the first card is untouched.
            await page.fill("#seed", "")
            await page.focus("#url")
            await page.keyboard.type(f"{image_host}/cat.png")
            await page.keyboard.press("Enter")
            await page.locator('.result[data-status="done"]').nth(1).wait_for(timeout=30_000)
            newest, older = page.locator(".result").first, page.locator(".result").nth(1)
            new_id = await newest.get_attribute("data-job-id")
            assert new_id != job_id
            assert await older.get_attribute("data-job-id") == job_id
            for card_, id_ in ((newest, new_id), (older, job_id)):
                # Each card shows what the API says about *its* job (with this browser's cookie).
                view = await page.evaluate(JOB_VIEW, id_)
                assert (await card_.locator(".caption").text_content() or "").strip() == \
                    view["caption"].strip()
                src = await card_.locator("audio").evaluate(AUDIO_DURATION)
                assert src["src"].endswith(f"/audio/{id_}.ogg")
            assert (await older.locator(".caption").text_content() or "").strip() == caption
            await page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)

            # A file that is not a picture: a readable message next to the form, no new card.
            await page.set_input_files("#image", str(notes))
            await page.click("#submit")
            alert = page.locator("#form-error[role=alert]")
            await alert.filter(has_text="isn't an image").wait_for(timeout=15_000)
            assert await page.locator(".result").count() == 2
            await page.screenshot(path=str(ARTIFACTS / "web_page_error.png"), full_page=True)

            # Phone-sized screen: nothing sticks out sideways.
            await page.set_viewport_size({"width": 375, "height": 740})
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375
            await page.screenshot(path=str(ARTIFACTS / "web_page_phone.png"), full_page=True)
        finally:
            await browser.close()
    # Only the deliberate refusal (HTTP 415) may show up; no CSP violation, no script error.
    assert all("415" in text for text in problems), problems


async def check_accessibility(page: Any) -> None:
    """Every control has a label; the drop zone's file input is reachable by keyboard."""
    unlabelled = await page.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".filter(el => !el.labels || el.labels.length === 0).map(el => el.id)")
    assert unlabelled == []
    for _ in range(3):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "image":
            break
    assert await page.evaluate("document.activeElement.id") == "image"
    outline = await page.evaluate(
        "getComputedStyle(document.getElementById('drop-zone')).outlineStyle")
    assert outline == "solid"  # the visible focus ring sits on the drop zone
