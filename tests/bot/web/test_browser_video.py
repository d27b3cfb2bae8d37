"""A video uploaded on the web page comes back as a <video> that plays, in a real Chromium."""

from __future__ import annotations

from pathlib import Path

from tests.bot.web import test_browser
from tests.bot.web.conftest import WebFactory
from tests.bot.web.test_browser_features import chromium, done, make_sound
from tests.core.audio.test_video import probe
from tests.core.intake.video_fixtures import encode_video

pytestmark = test_browser.pytestmark  # the same skip (no Chromium) and time limit

PLAYS = """
async (video) => {
  if (video.readyState < 2) {
    await new Promise((ok, fail) => {
      video.addEventListener("loadeddata", ok, {once: true});
      video.addEventListener("error", () => fail(new Error("video error " +
        (video.error && video.error.code))), {once: true});
    });
  }
  const ready = video.readyState;
  video.muted = true;  // autoplay rules: a muted video may play without a gesture
  await video.play();
  const start = video.currentTime;
  await new Promise((ok) => setTimeout(ok, 400));
  return {ready, start, now: video.currentTime, duration: video.duration,
          width: video.videoWidth, height: video.videoHeight};
}
"""


async def test_an_mp4_upload_comes_back_as_a_playing_video(start_web: WebFactory,
                                                           tmp_path: Path) -> None:
    web = await start_web(generation={"steps": 2})
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(encode_video(frames=30, rate=15, size=(160, 120)))  # 2 s
    async with chromium("desktop") as browser:
        page = await browser.page(str(web.client.make_url("/")))
        assert "video/mp4" in (await page.get_attribute("#image", "accept") or "")
        card = await make_sound(page, clip)
        await done(card)
        video = card.locator("video.video-player")
        assert await video.is_visible()
        assert not await card.locator("audio.player").is_visible()  # the video has the sound
        seen = await video.evaluate(PLAYS)
        assert seen["ready"] >= 2, seen
        assert seen["now"] > seen["start"], seen
        assert abs(seen["duration"] - 2.0) < 0.1 and (seen["width"], seen["height"]) == (160, 120)
        mp4 = card.locator("a.dl-mp4")
        assert await mp4.is_visible() and await card.locator("a.dl-ogg").is_visible()
        href = await mp4.get_attribute("href")
        assert browser.complaints() == []
        # What "Download MP4" saves (the browser's cookie says whose job it is).
        response = await page.request.get(str(web.client.make_url(href)))
        assert response.headers["content-type"] == "video/mp4"
        data = await response.body()
        # Shared, the result plays as a video for anyone with the link.
        job_id = await card.get_attribute("data-job-id")
        share = await page.request.post(str(web.client.make_url(f"/api/jobs/{job_id}/share")),
                                        headers={"Origin": web.origin})
        assert share.status == 201, await share.text()
        visitor = await browser.page(str(web.client.make_url((await share.json())["url"])))
        shared = await visitor.locator("video.video-player").evaluate(PLAYS)
        assert shared["ready"] >= 2 and shared["now"] > shared["start"], shared
        assert await visitor.locator("a.dl-mp4").is_visible()
        assert browser.complaints() == []
    answer = probe(data)  # one video and one audio stream, as long
    assert len(answer.frame_times) == 30
    assert abs(answer.audio_seconds - answer.video_seconds) <= 0.1
