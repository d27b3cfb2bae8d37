"""A steady load on a running `sonify run`'s web API, as browsers make it, every answer kept.

Used by the outage tests: pictures are posted at a fixed rate (each in its own task, so a
slow answer does not slow the load) by a few browsers, accepted jobs are looked at in turn,
and afterwards every accepted job is followed until it is done.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from PIL import Image


def png(n: int) -> bytes:
    """A distinct small picture per number (so no two requests share a clip)."""
    pixels = np.random.default_rng(5000 + n).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: which request, its status, its error code and Retry-After if any."""

    method: str
    status: int
    code: str | None
    retry_after: str | None
    at: float  # time.monotonic()


@dataclass
class SteadyLoad:
    """POST a picture every `1 / rate` s from the browsers in turn; GET an accepted job's
    status at the same pace."""

    base: str
    rate: float
    browsers: list[aiohttp.ClientSession]
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    accepted_at: dict[str, float] = field(default_factory=dict)
    _posts: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, base: str, rate: float, browsers: int) -> SteadyLoad:
        """Browsers that opened the page (each has its own identity cookie)."""
        sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
                    for _ in range(browsers)]
        for session in sessions:
            async with session.get(base + "/") as page:
                assert page.status == 200
        return cls(base, rate, sessions)

    async def close(self) -> None:
        for task in self._posts:
            task.cancel()
        await asyncio.gather(*self._posts, return_exceptions=True)
        for session in self.browsers:
            await session.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; posts still waiting for their answer are then awaited."""
        n = 0
        while not stop.is_set():
            session = self.browsers[n % len(self.browsers)]
            task = asyncio.create_task(self._post(session, n))
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)
            if self.accepted:
                job_id = list(self.accepted)[n % len(self.accepted)]
                await self.look(job_id)
            n += 1
            try:
                await asyncio.wait_for(stop.wait(), 1.0 / self.rate)
            except TimeoutError:
                pass
        await asyncio.gather(*self._posts, return_exceptions=True)

    async def _post(self, session: aiohttp.ClientSession, n: int) -> None:
        form = aiohttp.FormData()
        form.add_field("image", png(n), filename=f"p{n}.png", content_type="image/png")
        async with session.post(self.base + "/api/jobs", data=form) as resp:
            body = await resp.json(content_type=None)
            self._keep("POST", resp, body)
            if resp.status == 202:
                self.accepted[body["id"]] = session
                self.accepted_at[body["id"]] = time.monotonic()
                self._changed.set()

    async def look(self, job_id: str) -> dict[str, Any]:
        """GET an accepted job's view (as its browser), keeping the answer."""
        session = self.accepted[job_id]
        async with session.get(f"{self.base}/api/jobs/{job_id}") as resp:
            body = await resp.json(content_type=None)
            self._keep("GET", resp, body)
            return body if resp.status == 200 else {}

    def _keep(self, method: str, resp: aiohttp.ClientResponse, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        self.answers.append(Answer(method, resp.status, code, resp.headers.get("Retry-After"),
                                   time.monotonic()))

    async def accepted_more(self, count: int) -> None:
        """Until `count` more jobs than now have been accepted."""
        target = len(self.accepted) + count
        while len(self.accepted) < target:
            self._changed.clear()
            await self._changed.wait()

    async def all_done(self) -> dict[str, float]:
        """Follow every accepted job until its view says done; when each was first seen so."""
        done: dict[str, float] = {}
        while len(done) < len(self.accepted):
            for job_id in self.accepted:
                if job_id not in done:
                    view = await self.look(job_id)
                    if view.get("status") == "done":
                        done[job_id] = time.monotonic()
                    else:
                        assert view.get("status") in (None, "queued", "running"), view
            await asyncio.sleep(0.2)  # polling, as the page does
        return done

    def statuses(self, method: str) -> set[int]:
        return {a.status for a in self.answers if a.method == method}
