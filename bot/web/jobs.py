"""The web page's view of jobs (recent handles, previews, JSON form) and its JSON errors."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.common.answers import VIDEO_FILE, video_notes, video_of
from bot.web.texts import describe, web_message
from core.errors import (
    ImageRejected,
    QueueFull,
    RateLimited,
    ServiceUnavailable,
    ShuttingDown,
    UserFacingError,
)
from core.jobs.events import Done, Failed, JobEvent, JobHandle, Progress, Queued, Started
from core.records import RequestRecord

AUDIO_TYPES = {"ogg": "audio/ogg", "mp3": "audio/mpeg"}
# A clip's files as /audio/{id}.{fmt} serves them: its sound, and a moving picture's MP4.
MEDIA_TYPES = {**AUDIO_TYPES, VIDEO_FILE: "video/mp4"}
PREVIEW_SIDE = 512


class WebError(Exception):
    """An HTTP-level refusal (404, 401, 403…) whose text is the catalogue's `web.error.<code>`."""

    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.headers = status, code, headers or {}


def error_body(code: str, lang: str) -> dict[str, Any]:
    """The JSON error shape every /api and /audio failure uses, for a web-only code."""
    return {"error": {"code": code, "message": web_message(code, lang)}}


def clip_response(path: Path, job_id: str, fmt: str, headers: dict[str, str]
                  ) -> web.FileResponse:
    """A job's clip file, to play or save under its job's name (404 once it is gone)."""
    if not path.is_file():
        raise WebError(404, "audio_gone")
    name = f"sonify-{job_id}.{fmt}"
    return web.FileResponse(path, headers={**headers, "Content-Type": MEDIA_TYPES[fmt],
                                           "Content-Disposition": f'inline; filename="{name}"'})


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    """A JSON body with exactly `application/json` (no HTML anywhere in the API)."""
    return web.Response(text=json.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def status_for(error: UserFacingError) -> int:
    """The HTTP status of a user-facing error."""
    if isinstance(error, QueueFull | ShuttingDown | ServiceUnavailable):
        return 503
    if isinstance(error, RateLimited):
        return 429
    if error.code == "request_timeout":
        return 408
    if isinstance(error, ImageRejected):
        return {"too_large": 413, "not_image": 415, "unsupported_format": 415}.get(error.code,
                                                                                    422)
    return 400


def retry_after(error: UserFacingError) -> int | None:
    """Seconds for a Retry-After header, for errors that mean 'try again later'."""
    if isinstance(error, QueueFull | RateLimited | ShuttingDown | ServiceUnavailable):
        return max(1, math.ceil(float(error.params.get("retry_after_s", 60))))
    return None


def error_response(error: UserFacingError, lang: str) -> web.Response:
    """A JSON error response for a user-facing error, with Retry-After where it helps."""
    headers = {}
    wait = retry_after(error)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    return json_response({"error": describe(error, lang)}, status=status_for(error),
                         headers=headers)


def make_preview(image: Any) -> bytes:
    """A small JPEG of the decoded picture, so the page never loads the user's link itself."""
    thumb = image.copy()
    thumb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    thumb.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


@dataclass
class WebJob:
    """A job the page follows, with the preview of its picture."""

    handle: JobHandle
    preview: bytes | None = None


class JobRegistry:
    """Recent jobs of this process, oldest evicted first once `capacity` is exceeded."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._jobs: OrderedDict[str, WebJob] = OrderedDict()

    def add(self, handle: JobHandle, preview: bytes | None = None) -> WebJob:
        job = WebJob(handle, preview)
        self._jobs[handle.id] = job
        self._jobs.move_to_end(handle.id)
        while len(self._jobs) > self.capacity:
            # Prefer evicting finished jobs; a running one keeps its stream alive anyway.
            victim = next((k for k, j in self._jobs.items() if j.handle.finished), None)
            self._jobs.pop(victim if victim is not None else next(iter(self._jobs)))
        return job

    def get(self, job_id: str) -> WebJob | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)


async def preview_of(image: Any) -> bytes | None:
    """`make_preview` off the event loop; a preview is a nicety, so failures give None."""
    try:
        return await asyncio.to_thread(make_preview, image)
    except Exception:
        return None


def audio_urls(job_id: str) -> dict[str, str]:
    """The per-job clip URLs: new id, new URL, so no browser cache serves an older clip."""
    return {fmt: f"/audio/{job_id}.{fmt}" for fmt in AUDIO_TYPES}


def video_url(job_id: str, files: Iterable[str]) -> str | None:
    """Where a moving picture's answer (the MP4 with its sound) plays, if there is one."""
    return f"/audio/{job_id}.{VIDEO_FILE}" if VIDEO_FILE in files else None


def event_name(event: JobEvent) -> str:
    """The server-sent event name of a job event."""
    return {Queued: "queued", Started: "started", Progress: "progress",
            Done: "done", Failed: "failed"}[type(event)]


def job_view(job: WebJob, lang: str) -> dict[str, Any]:
    """What GET /api/jobs/{id} answers (and the `done`/`failed` events carry)."""
    handle = job.handle
    view: dict[str, Any] = {
        "id": handle.id, "status": "queued", "position": None, "progress": 0.0,
        "caption": None, "prompt": None, "seed": handle.request.seed, "duration": None,
        "cache_hit": False, "audio": None, "error": None,
        "image": f"/api/jobs/{handle.id}/image" if job.preview else None,
        "kind": handle.request.source_kind, "video": None, "notes": [],
    }
    # The last event says it all: positions and progress only move forward.
    event = handle.last_event
    if isinstance(event, Queued):
        view["position"] = event.position
    elif isinstance(event, Started):
        view.update(status="running", position=0)
    elif isinstance(event, Progress):
        view.update(status="running", position=0,
                    progress=round(event.step / event.total, 4) if event.total else 0.0)
    elif isinstance(event, Done):
        result = event.result
        view.update(status="done", position=0, progress=1.0, caption=result.caption,
                    prompt=result.prompt, seed=result.seed,
                    duration=round(result.duration_s, 3), cache_hit=result.cache_hit,
                    audio={f: u for f, u in audio_urls(handle.id).items() if f in result.files},
                    video=video_url(handle.id, result.files) if video_of(result) else None,
                    notes=video_notes(result, lang))
    elif isinstance(event, Failed):
        view.update(status="failed", error=describe(event.error, lang))
    return view


def event_data(job: WebJob, event: JobEvent, lang: str) -> dict[str, Any]:
    """The JSON payload of one server-sent event."""
    if isinstance(event, Queued):
        return {"id": job.handle.id, "position": event.position}
    if isinstance(event, Started):
        return {"id": job.handle.id, "batch_size": event.batch_size}
    if isinstance(event, Progress):
        share = event.step / event.total if event.total else 0.0
        return {"id": job.handle.id, "step": event.step, "total": event.total,
                "progress": round(share, 4)}
    return job_view(job, lang)


def record_view(record: RequestRecord, lang: str,
                clip_files: dict[str, Path] | None) -> dict[str, Any]:
    """GET /api/jobs/{id} for a job this process does not hold (from the request log);
    `clip_files`: its clip on this machine, if it is done and its clip still exists."""
    status = {"done": "done", "queued": "queued", "running": "running"}.get(record.status,
                                                                            "failed")
    files = {fmt: path for fmt, path in (clip_files or {}).items() if fmt in MEDIA_TYPES}
    view: dict[str, Any] = {
        "id": record.id, "status": status, "position": None,
        "progress": 1.0 if status == "done" else 0.0, "caption": record.caption,
        "prompt": record.prompt, "seed": record.seed, "duration": record.duration_s,
        "cache_hit": bool(record.cache_hit), "image": None, "error": None,
        "kind": record.source_kind,
        "audio": {fmt: url for fmt, url in audio_urls(record.id).items() if fmt in files} or None,
        "video": video_url(record.id, files), "notes": [],
    }
    if status == "failed":
        code = str(record.reason or "failed")
        view["error"] = describe(UserFacingError(code, code=code), lang)
    elif status == "done" and not view["audio"]:
        view["error"] = error_body("audio_gone", lang)["error"]
    return view
