"""What a user sees of the results in a real Chromium, at desktop and phone sizes: the new
result in view and focused, its length and seed, results kept across reloads, "Another take"
and "Use my words", share links, the dark scheme, stale errors gone, the waveform.

Screenshots of each land in tests/artifacts/ (`web_<what>_<size>.png`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.bot.web import test_browser
from tests.bot.web.conftest import WebFactory, png_bytes
from tests.bot.web.test_browser import (
    ARTIFACTS,
    AUDIO_DURATION,
    CHROMIUM,
    CHROMIUM_ARGS,
    JOB_VIEW,
)

pytestmark = test_browser.pytestmark  # the same skip (no Chromium) and time limit

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
WEB_TOKEN = "browser-s3cret-token"

# How many pixels of the waveform's canvas are painted.
PAINTED = """
(canvas) => {
  const {width, height} = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let painted = 0;
  const rows = new Set();
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] > 0) { painted++; rows.add(Math.floor((i - 3) / 4 / width)); }
  }
  return {painted, rows: rows.size, width, height};
}
"""

IN_VIEW = """
(el) => {
  const r = el.getBoundingClientRect();
  return r.top >= 0 && r.top < window.innerHeight && r.bottom > 0;
}
"""


class Browser:
    """One Chromium; pages and fresh contexts (other people) at a named size."""

    def __init__(self, chromium: Any, size: str) -> None:
        self.chromium, self.size = chromium, size
        self.problems: list[str] = []  # script errors and console complaints
        self.failed: set[tuple[int, str]] = set()  # (status, path) of answers >= 400

    async def page(self, url: str, **context: Any) -> Any:
        phone = self.size == "phone"
        ctx = await self.chromium.new_context(viewport=SIZES[self.size], is_mobile=phone,
                                              has_touch=phone, **context)
        page = await ctx.new_page()
        page.on("console",
                lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on("response", lambda r: self.failed.add((r.status, urlsplit(r.url).path))
                if r.status >= 400 else None)
        await page.goto(url)
        return page

    def complaints(self) -> list[str]:
        """Console lines other than the browser's own notes of failed loads (see `failed`)."""
        return [p for p in self.problems if not p.startswith("Failed to load resource")]

    async def shot(self, page: Any, what: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"web_{what}_{self.size}.png"),
                              full_page=True)


@asynccontextmanager
async def chromium(size: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Browser(launched, size)
        finally:
            await launched.close()


async def make_sound(page: Any, picture: Path, *, seed: str = "") -> Any:
    """Choose `picture`, send it from the keyboard, and return the new card (not waited on)."""
    await page.set_input_files("#image", str(picture))
    await page.fill("#seed", seed)
    before = await page.locator(".result").count()
    await page.focus("#submit")
    await page.keyboard.press("Enter")
    await page.locator(".result").nth(before).wait_for()
    return page.locator(".result").first


async def done(card: Any) -> None:
    await card.locator("xpath=self::*[@data-status='done']").wait_for(timeout=60_000)


def a_picture(tmp_path: Path) -> Path:
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes((320, 240)))
    return picture


async def expect_new_card_in_view_and_focused(page: Any, card: Any) -> str:
    from playwright.async_api import expect

    await expect(card).to_be_focused()
    assert await card.evaluate(IN_VIEW), await card.bounding_box()
    job_id: str = await card.get_attribute("data-job-id")
    assert await page.evaluate("document.activeElement.dataset.jobId") == job_id
    return job_id


async def expect_waveform(card: Any) -> None:
    canvas = card.locator("canvas.wave")
    await card.locator("canvas.wave[data-drawn='1']").wait_for(timeout=15_000)
    assert await canvas.is_visible()
    painted = await canvas.evaluate(PAINTED)
    # Bars of several heights: drawn from the clip, not a flat line or an empty canvas.
    assert painted["painted"] > 200 and painted["rows"] > 4, painted


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_a_new_result_is_in_view_focused_and_shows_its_length_seed_and_waveform(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(generation={"steps": 2, "seconds": 2.0})
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url("/")))
        # Hold the upload in flight, to see where the keyboard focus is while it is sent.
        release = asyncio.Event()

        async def hold(route: Any) -> None:
            await release.wait()
            await route.continue_()

        await page.route("**/api/jobs", hold)
        await page.set_input_files("#image", str(a_picture(tmp_path)))
        await page.fill("#seed", "42")
        await page.focus("#submit")
        await page.keyboard.press("Enter")
        await page.locator("#submit[aria-disabled='true']").wait_for()
        assert await page.evaluate("document.activeElement.id") == "submit"  # not <body>
        assert await page.text_content("#submit") == "Sending…"
        await page.keyboard.press("Enter")  # pressed again while sending: still one request
        release.set()
        card = page.locator(".result").first
        await card.wait_for()
        job_id = await expect_new_card_in_view_and_focused(page, card)
        assert "Sent." in (await page.text_content("#announce") or "")
        assert await page.get_attribute("#submit", "aria-disabled") == "false"
        await done(card)
        assert await page.locator(".result").count() == 1
        assert await card.locator(".facts").text_content() == "Length 2 s · seed 42"
        view = await page.evaluate(JOB_VIEW, job_id)
        assert (view["seed"], view["duration"]) == (42, pytest.approx(2.0, abs=0.05))
        await expect_waveform(card)
        await browser.shot(page, "new_result")
    assert not browser.problems and not browser.failed, (browser.problems, browser.failed)


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_results_come_back_after_a_reload_and_unfinished_ones_go_on(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(gated=True, generation={"steps": 2, "seconds": 1.0})
    picture = a_picture(tmp_path)
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url("/")))
        card = await make_sound(page, picture, seed="7")
        first = await card.get_attribute("data-job-id")
        # A result the server does not know (expired, or another browser's): dropped quietly.
        await page.evaluate("""() => localStorage.setItem("sonify.results", JSON.stringify(
            [{id: "AAAAAAAAAAAA"}, ...JSON.parse(localStorage.getItem("sonify.results"))]))""")
        await page.reload()
        card = page.locator(f'.result[data-job-id="{first}"]')
        await card.wait_for()
        assert await card.get_attribute("data-status") in ("queued", "running")
        assert await page.locator(".result").count() == 1
        assert "AAAAAAAAAAAA" not in await page.evaluate(
            "localStorage.getItem('sonify.results')")
        assert web.gated is not None
        web.gated.gate.set()  # the worker goes on: the reloaded card follows the job to its end
        await done(card)
        caption = (await card.locator(".caption").text_content() or "").strip()
        assert caption
        second = await (await make_sound(page, picture, seed="8")).get_attribute("data-job-id")
        await done(page.locator(".result").first)

        await page.reload()
        cards = page.locator(".result")
        await cards.nth(1).wait_for()
        assert [await cards.nth(i).get_attribute("data-job-id") for i in range(2)] == \
            [second, first]  # newest first, as before the reload
        older = cards.nth(1)
        await done(older)
        assert (await older.locator(".caption").text_content() or "").strip() == caption
        assert await older.locator(".facts").text_content() == "Length 1 s · seed 7"
        audio = await older.locator("audio").evaluate(AUDIO_DURATION)
        assert audio["src"].endswith(f"/audio/{first}.ogg")
        assert await older.locator(".retake").is_visible()
        assert await page.locator("#no-results").is_hidden()
        await browser.shot(page, "after_reload")
    assert not browser.complaints(), browser.problems
    # The unknown result's 404 is the only failed load.
    assert browser.failed == {(404, "/api/jobs/AAAAAAAAAAAA")}, browser.failed


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_another_take_and_use_my_words_make_new_results_in_view(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(generation={"steps": 2, "seconds": 1.0})
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url("/")))
        original = await make_sound(page, a_picture(tmp_path), seed="5")
        original_id = await original.get_attribute("data-job-id")
        await done(original)
        caption = (await original.locator(".caption").text_content() or "").strip()

        await original.locator(".retake").click()
        await page.locator(".result").nth(1).wait_for()
        take = page.locator(".result").first
        take_id = await expect_new_card_in_view_and_focused(page, take)
        assert take_id != original_id
        await done(take)
        assert (await take.locator(".caption").text_content() or "").strip() == caption
        facts = await take.locator(".facts").text_content() or ""
        assert re.fullmatch(r"Length 1 s · seed \d+", facts) and facts != "Length 1 s · seed 5"

        original = page.locator(f'.result[data-job-id="{original_id}"]')
        await original.locator(".words-open").click()
        words = original.locator(".words-input")
        assert await words.evaluate("el => el === document.activeElement")
        assert await words.get_attribute("maxlength") == "300"
        await page.keyboard.press("Enter")  # nothing typed: told so on the card, nothing sent
        alert = original.locator(".job-error")
        await alert.filter(has_text="Type a few words").wait_for()
        await page.keyboard.type("rain on a tin roof")
        assert await alert.is_hidden()  # typing clears it
        await page.keyboard.press("Enter")
        await page.locator(".result").nth(2).wait_for()
        mine = page.locator(".result").first
        await expect_new_card_in_view_and_focused(page, mine)
        await done(mine)
        # The words are the result's caption; the picture and its caption stay as context.
        assert await mine.locator(".caption").text_content() == "rain on a tin roof"
        assert await mine.locator(".prompt").text_content() == (
            f"Your words, instead of the caption: {caption}")
        assert await mine.locator(".preview").evaluate("img => img.naturalWidth") > 0
        assert await original.locator(".words-form").is_hidden()
        await browser.shot(page, "takes")
    assert not browser.problems and not browser.failed, (browser.problems, browser.failed)


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_a_share_link_opens_for_anyone_until_sharing_stops(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(web={"token": WEB_TOKEN}, generation={"steps": 2, "seconds": 1.5})
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url(f"/?token={WEB_TOKEN}")))
        card = await make_sound(page, a_picture(tmp_path), seed="3")
        await done(card)
        caption = (await card.locator(".caption").text_content() or "").strip()
        await card.locator(".share-open").click()
        link_box = card.locator(".share-url")
        await link_box.wait_for()
        link = await link_box.input_value()
        assert re.fullmatch(re.escape(web.origin) + r"/s/[A-Za-z0-9_-]{32}", link), link
        assert await card.locator(".share-open").is_hidden()

        # Someone else, with only the link: another browser profile, no token, no cookie.
        visitor = await browser.page(link)
        assert (await visitor.locator(".caption").text_content() or "").strip() == caption
        assert await visitor.locator(".facts").text_content() == "Length 1.5 s · seed 3"
        audio = await visitor.locator("audio").evaluate(AUDIO_DURATION)
        assert audio["duration"] == pytest.approx(1.5, abs=0.1)
        assert await visitor.locator(".preview").evaluate("img => img.naturalWidth") > 0
        assert await visitor.evaluate(
            "getComputedStyle(document.body).backgroundColor") == "rgb(246, 245, 242)"
        await browser.shot(visitor, "shared_page")
        home = await visitor.request.get(web.origin + "/")
        assert home.status == 401  # the link opens the shared result, not the service

        await page.reload()  # the owner's browser still shows the link it made
        card = page.locator(".result").first
        await done(card)
        assert await card.locator(".share-url").input_value() == link
        await browser.shot(page, "sharing")
        await card.locator(".share-stop").click()
        await card.locator(".card-note").filter(has_text="Sharing stopped").wait_for()
        assert await card.locator(".share-box").is_hidden()
        assert await card.locator(".share-open").is_visible()

        gone = await visitor.goto(link)
        assert gone is not None and gone.status == 404
        assert "This link doesn't work" in (await visitor.text_content("h1") or "")
        assert caption not in (await visitor.content())
        await browser.shot(visitor, "shared_page_revoked")
    assert not browser.complaints(), browser.problems
    # The revoked link's own 404 is the only failed load of a page (the browser's own look
    # for /favicon.ico from the revoked page, 401 behind the token, is not one of them).
    assert browser.failed == {(404, urlsplit(link).path)}, browser.failed


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _rgb(css: str) -> tuple[int, int, int]:
    found = re.match(r"rgba?\((\d+), (\d+), (\d+)", css)
    assert found, css
    return int(found[1]), int(found[2]), int(found[3])


# Each text colour against the surface it sits on, read from the rendered page.
COLOURS = """
() => {
  const css = (sel, prop) => getComputedStyle(document.querySelector(sel))[prop];
  const card = css(".result", "backgroundColor");
  return {
    body: [css("body", "color"), css("body", "backgroundColor")],
    help: [css("#form-help", "color"), css("#job-form", "backgroundColor")],
    intro: [css(".site-header p", "color"), css("body", "backgroundColor")],
    caption: [css(".result .caption", "color"), card],
    facts: [css(".result .facts", "color"), card],
    link: [css(".result .dl-ogg", "color"), card],
    button: [css("#submit", "color"), css("#submit", "backgroundColor")],
    card_button: [css(".result .retake", "color"), css(".result .retake", "backgroundColor")],
    error: [css("#form-error", "color"), css("#form-error", "backgroundColor")],
    field: [css("#url", "color"), css("#url", "backgroundColor")],
    placeholder: [getComputedStyle(document.querySelector("#seed"), "::placeholder").color,
                  css("#seed", "backgroundColor")],
    hint: [css(".hint", "color"), css("#job-form", "backgroundColor")],
    drop_title: [css(".drop-title", "color"), css("#drop-zone", "backgroundColor")],
    drop_hint: [css(".drop-hint", "color"), css("#drop-zone", "backgroundColor")],
    status: [css(".result .status", "color"), card],
    prompt: [css(".result .prompt", "color"), card],
  };
}
"""


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_the_page_follows_the_browsers_dark_scheme_with_readable_contrast(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(generation={"steps": 2, "seconds": 1.0})
    async with chromium(size) as browser:
        for scheme in ("light", "dark"):
            page = await browser.page(str(web.client.make_url("/")), color_scheme=scheme)
            card = await make_sound(page, a_picture(tmp_path))
            await done(card)
            await page.fill("#url", "not a link")
            await page.click("#submit")
            await page.locator("#form-error").filter(has_text="link").wait_for()
            background = _rgb(await page.evaluate(
                "getComputedStyle(document.body).backgroundColor"))
            if scheme == "dark":
                assert _luminance(background) < 0.02, background
                assert await page.evaluate(
                    "getComputedStyle(document.documentElement).colorScheme") == "dark"
            else:
                assert _luminance(background) > 0.8, background
            colours: dict[str, list[str]] = await page.evaluate(COLOURS)
            for name, (text, surface) in colours.items():
                assert _contrast(text, surface) >= 4.5, (scheme, name, text, surface)
            await expect_waveform(card)
            await browser.shot(page, f"{scheme}_scheme")
    assert not browser.complaints(), browser.problems
    assert browser.failed == {(422, "/api/jobs")}, browser.failed


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_an_old_error_goes_when_a_new_picture_or_link_is_chosen(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    web = await start_web(generation={"steps": 2, "seconds": 1.0})
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list: eggs, milk, bread\n" * 5)
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url("/")))
        alert = page.locator("#form-error")
        await page.set_input_files("#image", str(notes))
        await page.click("#submit")
        await alert.filter(has_text="isn't an image").wait_for(timeout=15_000)
        await browser.shot(page, "error")
        await page.set_input_files("#image", str(a_picture(tmp_path)))
        assert await alert.is_hidden() and await alert.text_content() == ""
        await browser.shot(page, "error_cleared")

        await page.set_input_files("#image", str(notes))
        await page.click("#submit")
        await alert.filter(has_text="isn't an image").wait_for(timeout=15_000)
        await page.fill("#url", "https://example.org/")
        assert await alert.is_hidden()
        assert await page.locator(".result").count() == 0
    assert not browser.complaints(), browser.problems
    assert browser.failed == {(415, "/api/jobs")}, browser.failed


LONG_WORD = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch" * 3  # 174 letters


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_the_rough_edges_a_newcomer_hit_are_gone(
        start_web: WebFactory, tmp_path: Path, size: str) -> None:
    """An accepted "Another take" clears an old form error; Escape closes the words form; a
    long word wraps inside its card; the share page of the user's words does not say a
    picture was described."""
    web = await start_web(generation={"steps": 2, "seconds": 1.0})
    async with chromium(size) as browser:
        page = await browser.page(str(web.client.make_url("/")))
        card = await make_sound(page, a_picture(tmp_path))
        await done(card)
        alert = page.locator("#form-error")
        await page.click("#submit")  # nothing chosen: the form complains
        await alert.filter(has_text="Choose").wait_for()
        await card.locator(".retake").click()
        await page.locator(".result").nth(1).wait_for()
        assert await alert.text_content() == "" and await alert.is_hidden()

        await card.locator(".words-open").click()
        await page.keyboard.type("half a thought")
        await page.keyboard.press("Escape")
        assert await card.locator(".words-form").is_hidden()
        assert await card.locator(".words-open").get_attribute("aria-expanded") == "false"
        assert await page.evaluate("document.activeElement.classList.contains('words-open')")

        await card.locator(".words-open").click()
        await card.locator(".words-input").fill(LONG_WORD)
        await page.keyboard.press("Enter")
        await page.locator(".result").nth(2).wait_for()
        mine = page.locator(".result").first
        await done(mine)
        shown = await mine.locator(".caption").text_content() or ""
        assert shown.startswith("Llanfair") and " " not in shown and len(shown) > 60, shown
        fits = await mine.evaluate(
            "el => el.scrollWidth <= el.clientWidth && "
            "el.querySelector('.caption').getBoundingClientRect().right <= "
            "el.getBoundingClientRect().right")
        assert fits, await mine.bounding_box()
        await browser.shot(page, "long_word")

        from playwright.async_api import expect

        await mine.locator(".share-open").click()
        await expect(mine.locator(".share-url")).to_have_value(re.compile(r".*/s/\S+"))
        link = await mine.locator(".share-url").input_value()
        visitor = await browser.page(link)
        intro = await visitor.locator(".site-header p").text_content() or ""
        assert intro == ("Someone shared this sound with you. Sonify turned their own words "
                         "into a short sound clip.")
        assert (await visitor.locator(".caption").text_content() or "").strip() == shown
    assert not browser.complaints(), browser.problems


async def test_enter_and_space_on_the_upload_zone_open_the_file_chooser(
        start_web: WebFactory) -> None:
    """The hint says "press to choose a file": from the keyboard, Enter and Space on the
    focused upload zone open the chooser. Desktop only: keys are not a phone's way (a tap is),
    and Chromium's phone emulation opens no chooser for them. What the user gets in Chromium,
    whose own file input answers both keys (it passes without app.js's key handler too, which
    is there for browsers that do not)."""
    web = await start_web()
    async with chromium("desktop") as browser:
        page = await browser.page(str(web.client.make_url("/")))
        # A listener for the page's whole life: Playwright intercepts choosers from when the
        # first one is added, and a press before that would open none (headless) — the cause
        # of an earlier version of this check that passed only sometimes under load.
        opened: list[Any] = []
        page.on("filechooser", lambda chooser: opened.append(chooser))
        await page.evaluate("1")  # a round trip: the interception is on before any key
        for key in ("Enter", "Space"):
            await page.focus("#image")
            async with page.expect_file_chooser(timeout=60_000) as chooser:
                await page.keyboard.press(key)
            assert await (await chooser.value).element.evaluate("el => el.id") == "image", key
            assert opened, key
            await (await chooser.value).set_files([])  # chosen nothing, as Escape in the dialog
    assert not browser.complaints(), browser.problems
