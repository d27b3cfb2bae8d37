"""Share links: the owner of a finished result makes it public under an unguessable link,
and can end it.

- `POST /api/jobs/{id}/share` (the owner only): a new link `/s/<token>`, replacing any earlier
  one of that result; the token has 192 random bits and only its sha256 is stored
  (`ShareLinks` of core/jobs/contract.py), so the answer to this call is the one place it is
  ever shown — the owner's browser keeps it to show the link again.
- `DELETE /api/jobs/{id}/share` (the owner only): the link stops working (404).
- `GET /s/<token>`: the shared page — the picture (its small preview, kept with the link),
  the caption (or the user's words), the clip's length and seed, a player and downloads.
  It and its assets (`/s/<token>/style.css`, `favicon.svg`, `picture.jpg`, `sound.ogg`,
  `sound.mp3`, a video's `video.mp4`) are the only things served without the page's token:
  see `is_share_path`, which the access guard in `bot.web.server` asks. Nothing else of the
  service is reachable with a link, and an unknown, mistyped or revoked one looks the same:
  404.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from aiohttp import web

from bot.common.answers import VIDEO_FILE
from bot.web.jobs import AUDIO_TYPES, MEDIA_TYPES, WebError, clip_response, json_response
from bot.web.state import SERVICES, live_job, owned_record, unknown_job
from bot.web.texts import STATIC_DIR, fill, request_language
from core.i18n import t
from core.records import RequestRecord, RequestStatus, SharedResult, SourceKind

# Assets of a shared page, each under its link: a visitor needs nothing outside it.
SHARE_ASSETS = {"style.css": "text/css", "favicon.svg": "image/svg+xml",
                "picture.jpg": "image/jpeg", "sound.ogg": AUDIO_TYPES["ogg"],
                "sound.mp3": AUDIO_TYPES["mp3"], "video.mp4": MEDIA_TYPES[VIDEO_FILE]}
_TOKEN = r"[A-Za-z0-9_-]{22,128}"  # secrets.token_urlsafe of 16 bytes or more
_ASSET_NAMES = "|".join(re.escape(name) for name in SHARE_ASSETS)
_SHARE_PATH = re.compile(rf"/s/{_TOKEN}(?:/(?:{_ASSET_NAMES}))?")
# A shared page must not be kept by a cache after its owner ends the link, nor indexed.
SHARE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}


def is_share_path(path: str) -> bool:
    """A shared page or one of its assets: reachable with the link alone."""
    return _SHARE_PATH.fullmatch(path) is not None


async def create_share(request: web.Request) -> web.Response:
    """POST /api/jobs/{id}/share: a new link to a finished result of this browser."""
    services = request.app[SERVICES]
    record = await owned_record(request, request.match_info["id"])
    if record is None:
        raise unknown_job()
    if record.status != RequestStatus.DONE:
        raise WebError(409, "not_finished")
    # The preview lives in this process's memory only; kept with the link, the shared page
    # still shows the picture after a restart (and a new link keeps the earlier one's).
    job = live_job(request, record.id)
    # A sound from the user's words was not made from the picture shown beside it on their
    # page (context there): the visitor gets the words alone.
    preview = job.preview if job and record.source_kind != SourceKind.TEXT else None
    token = await services.share_links.create(record.id, preview)
    return json_response({"token": token, "url": f"/s/{token}"}, status=201)


async def revoke_share(request: web.Request) -> web.Response:
    """DELETE /api/jobs/{id}/share: the result's link stops working."""
    record = await owned_record(request, request.match_info["id"])
    if record is None:
        raise unknown_job()
    await request.app[SERVICES].share_links.revoke(record.id)
    return web.Response(status=204)


async def _shared(request: web.Request) -> tuple[SharedResult, RequestRecord] | None:
    """The live link in the path and the finished request it shows, or None."""
    services = request.app[SERVICES]
    shared = await services.share_links.find(request.match_info["token"])
    if shared is None:
        return None
    record = await services.engine.get_request(shared.request_id)
    if record is None or record.status != RequestStatus.DONE:
        return None
    return shared, record


def _number(value: float, lang: str) -> str:
    text = f"{value:.1f}".removesuffix(".0")
    return text.replace(".", ",") if lang == "es" else text


def _share_markup(base: str, shared: SharedResult, record: RequestRecord, lang: str,
                  clip: dict[str, Path]) -> dict[str, str]:
    """The HTML fragments of a shared page (every text in it escaped here)."""
    words = record.caption or record.prompt or ""
    picture = (f'<img class="preview" src="{base}/picture.jpg" alt="'
               f'{html.escape(t("web.preview_alt_shared", lang))}" width="160" height="160">'
               if shared.preview else "")
    if clip:
        sources = "".join(f'<source src="{base}/sound.{fmt}" type="{AUDIO_TYPES[fmt]}">'
                          for fmt in AUDIO_TYPES if fmt in clip)
        label = html.escape(t("web.sound_of", lang, caption=words))
        links = "".join(
            f'<a class="dl-{fmt}" href="{base}/sound.{fmt}" download="sonify-{record.id}.{fmt}">'
            f'{html.escape(t(f"web.download_{fmt}", lang))}</a>'
            for fmt in AUDIO_TYPES if fmt in clip)
        if VIDEO_FILE in clip:  # a moving picture's answer: the video carries the sound
            links += (f'<a class="dl-mp4" href="{base}/video.mp4" '
                      f'download="sonify-{record.id}.mp4">'
                      f'{html.escape(t("web.download_mp4", lang))}</a>')
            player = (f'<video class="video-player" controls playsinline preload="metadata" '
                      f'src="{base}/video.mp4" aria-label="{label}"></video>'
                      f'<p class="downloads">{links}</p>')
        else:
            player = (f'<audio class="player" controls preload="metadata" '
                      f'aria-label="{label}">{sources}</audio><p class="downloads">{links}</p>')
    else:
        player = f'<p class="error">{html.escape(t("web.error.audio_gone", lang))}</p>'
    facts = ""
    if record.duration_s is not None and record.seed is not None:
        facts = html.escape(t("web.clip_facts", lang, seconds=_number(record.duration_s, lang),
                              seed=record.seed))
    return {"picture": picture, "player": player, "facts": facts,
            "card_class": "" if shared.preview else " no-picture"}


async def share_page(request: web.Request) -> web.Response:
    """GET /s/{token}: the shared result, or a plain 404 page once the link is gone."""
    lang = request_language(request)
    found = await _shared(request)
    if found is None:
        page = fill("share_gone.html", lang, {"lang": lang})
        return web.Response(text=page, status=404, content_type="text/html", charset="utf-8",
                            headers=SHARE_HEADERS)
    shared, record = found
    clip = await request.app[SERVICES].engine.clip_files(record) or {}
    base = f"/s/{request.match_info['token']}"
    markup = _share_markup(base, shared, record, lang, clip)
    caption = record.caption or record.prompt or ""
    # A result of the user's own words was not made from a description of a picture.
    words = record.source_kind == SourceKind.TEXT
    intro = t("web.share_intro_words" if words else "web.share_intro", lang)
    page = fill("share.html", lang, {"lang": lang, "base": base, "caption": caption,
                                     "intro": intro}, markup)
    return web.Response(text=page, content_type="text/html", charset="utf-8",
                        headers={**SHARE_HEADERS, "Vary": "Accept-Language"})


async def share_asset(request: web.Request) -> web.StreamResponse:
    """GET /s/{token}/{asset}: what the shared page loads, while its link is live."""
    asset = request.match_info["asset"]
    found = await _shared(request) if asset in SHARE_ASSETS else None
    if found is None:
        raise WebError(404, "not_found")
    shared, record = found
    headers = {**SHARE_HEADERS, "Content-Type": SHARE_ASSETS[asset]}
    if asset in ("style.css", "favicon.svg"):
        return web.FileResponse(STATIC_DIR / asset, headers=headers)
    if asset == "picture.jpg":
        if shared.preview is None:
            raise WebError(404, "not_found")
        return web.Response(body=shared.preview, headers=headers)
    fmt = VIDEO_FILE if asset == "video.mp4" else asset.removeprefix("sound.")
    path = (await request.app[SERVICES].engine.clip_files(record) or {}).get(fmt)
    if path is None:
        raise WebError(404, "audio_gone")
    return clip_response(path, record.id, fmt, SHARE_HEADERS)


def add_share_routes(app: web.Application) -> None:
    app.router.add_post("/api/jobs/{id}/share", create_share)
    app.router.add_delete("/api/jobs/{id}/share", revoke_share)
    app.router.add_get("/s/{token:" + _TOKEN + "}", share_page)
    app.router.add_get("/s/{token:" + _TOKEN + "}/{asset}", share_asset)
