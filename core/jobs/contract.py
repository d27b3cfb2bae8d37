"""The job engine as adapters see it: one interface, one engine, two backends.

One `Engine` (core/jobs/engine.py) keeps every rule below; a backend's `Transport` says only
where jobs wait and where the limits are counted. `local` (core/jobs/local.py) runs
everything in this process: the embedded default. `redis` (core/distributed/transport.py)
records requests in a shared database and queues them on arq for `sonify worker`
processes, possibly on other machines. Adapters hold a `JobEngine` and cannot tell which
backend it is.

Life of a request. A request whose picture is still to be fetched is first *received*:
`receive` checks the cheap limits (per user, queue bound) and writes its row (status
``received``, with the picture's source) — the durable point — and returns a `Receipt`.
The adapter then fetches and decodes the picture and calls `submit(request, receipt=…)`
(or `refuse(receipt, error)`). A request whose content is at hand goes to `submit` at once.
`submit` serves a cached clip if there is one, else spools the image, marks the row
``queued`` and queues the job fairly between users — or attaches it to an identical job
already in flight, so both are answered from one computation — to be rendered in
batches of compatible jobs.

Semantics adapters can rely on:
- Once `receive` or `submit` has returned, the request is in the request log and will
  be answered — by this process, or after a crash through `on_received` (picture still
  to fetch) and `on_recovered` (re-run, or finished but not yet delivered).
- Every refusal `receive` or `submit` raises (BadRequest, RateLimited, QueueFull,
  ShuttingDown) is already logged as a ``rejected`` row; call `reject` only for
  refusals of your own before anything was recorded, `refuse` after `receive`.
- A request with a `dedupe_key` that was recorded before is not recorded again:
  `receive` returns a receipt marked `duplicate`, `submit` and `reject` raise
  `DuplicateRequest`; the first delivery is (or will be) answered, do nothing more.
- Rows of requests with `answer_owed` track their answer: ``owed`` until the adapter
  calls `mark_delivery(id, "sending")` before it posts and `"sent"` after. After a crash
  every row still owed or sending is handed back through `on_recovered`, with its clip
  or its failure already in the handle; one that was sending may arrive twice.
- Cache key: picture hash (or caption/prompt text) + options + models + seed. For a
  picture without an explicit seed the seed part is "auto", so the same picture
  again is a cache hit (it gets the stored clip and its seed); text jobs always key
  on their actual seed, so "another take" with a fresh seed renders anew.
- Riders (identical requests in flight) and cache hits get their own request id
  and row, with ``cache_hit`` set; cache hits carry ``batch_size`` 0. A rider that
  joins a running job is logged ``running`` at once, with a queue wait of 0.
- Cache hits count towards the hourly limit but not the concurrent one; admins
  skip both per-user limits, not the queue bound. A received request holds a user
  slot and a queue place until it is submitted or refused.
- `JobResult.files` point into the clip cache; a clip used in the last 10 minutes
  is never evicted (see core/jobs/cache.py).
- On `stop`, jobs left queued (or a batch cut short) get `Failed(ShuttingDown)`
  with ``params["resumes"] = True``: their rows stay queued/running and they are
  answered through `on_recovered` after the next start.
- `Done` and `Failed` come only once the row says so; cleaning up (the spooled picture)
  comes after them and never holds them up or changes them.
- While the request log's database is away (`DatabaseUnavailable`, a `StorageUnavailable`:
  stopped, restarting, unreachable; a SQLite file locked or read-only), `receive`, `submit`
  without a receipt and `reject` raise it at once: nothing was recorded, so the adapter asks
  the user to try again in a moment (the web: 503 with Retry-After; Telegram: the update is
  not confirmed, so it comes again). Everything after a request's row exists — queueing a
  received request (`submit` with its receipt), its outcome, its refusal (`refuse`), its
  clean-up, `note_reply`, `mark_delivery` — waits the outage out, retrying for
  `[storage] outage_grace_s`. A job whose outcome still cannot be recorded is handed back
  (`Failed(ShuttingDown)` with ``resumes``, as on `stop`): its row stays unfinished and it
  is answered after the next start (with the redis backend, by the next worker) — never
  told one outcome now and another later. A received request that could not be queued in
  that time stays received, and the next start carries it on.
- One process owns a local request log: the local backend's `start` takes its lease
  (`RequestLogInUse`, naming the holder, while another process has it), held until the
  request log is closed. Readers such as `sonify stats` take none.
- Several processes may share one request log (the redis backend): the limits, the
  queue bound, fairness and identical-request detection then hold across all of them,
  and any of them can read a request's row and clip (`get_request`, `clip_files`) or
  follow a job another one took (`follow`). Each job is answered by the process that
  took it, or by the next process started for its platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from core.errors import UserFacingError
from core.jobs.events import JobHandle
from core.jobs.request import JobRequest, Receipt
from core.records import Delivery, Platform, RequestRecord, SharedResult, SourceKind

RecoveredHandler = Callable[[JobHandle], Awaitable[None]]
ReceivedHandler = Callable[[RequestRecord, Receipt], Awaitable[None]]


class JobEngine(Protocol):
    """Records requests, enforces limits, has them rendered, and takes up what a crash left."""

    @property
    def accepting(self) -> bool:
        """False once stopping: new requests are refused (ShuttingDown)."""

    async def start(self) -> None:
        """Prepare, remember what the last run left, start taking jobs."""

    async def load_models(self) -> None:
        """Load the models before serving, where this process renders (ModelMissingError)."""

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (a deadline)
        """Refuse new jobs; what is left is answered after the next start."""

    def queue_length(self) -> int:
        """Jobs waiting to be rendered (as last known)."""

    async def receive(self, request: JobRequest) -> Receipt:
        """Record a request whose picture is still to be fetched (the durable point)."""

    async def submit(self, request: JobRequest, *, receipt: Receipt | None = None) -> JobHandle:
        """Queue a job whose content is at hand; with `receipt`, the one `receive` recorded."""

    async def refuse(self, receipt: Receipt, error: UserFacingError) -> None:
        """A received request cannot go on (its picture cannot be had)."""

    async def reject(self, *, platform: Platform, user_id: str, chat_id: str,
                     source_kind: SourceKind,
                     error: UserFacingError, lang: str = "en",
                     dedupe_key: str | None = None) -> str:
        """Log a request refused before anything was recorded; returns the row's id."""

    async def note_reply(self, request_id: str, **context: object) -> None:
        """Add to a request's reply context (e.g. the status message shown), for restarts."""

    async def mark_delivery(self, request_id: str, state: Delivery) -> None:
        """How far a request's answer got: "sending" before posting it, "sent" after."""

    def on_recovered(self, platform: str, handler: RecoveredHandler) -> None:
        """Who answers this platform's jobs taken up after a restart."""

    def on_received(self, platform: str, handler: ReceivedHandler) -> None:
        """Who fetches the pictures of this platform's received rows after a restart."""

    async def resume_recovered(self) -> int:
        """Take up what the last run left; returns how many requests went to adapters."""

    async def get_request(self, request_id: str) -> RequestRecord | None:
        """A request's row."""

    async def clip_files(self, record: RequestRecord) -> dict[str, Path] | None:
        """A done request's clip files on this machine, by format (None when gone)."""

    async def follow(self, request_id: str) -> JobHandle | None:
        """A live handle on a job another process took (its events from now on, ending
        with its outcome); None where this backend has no other processes or the request
        is unknown."""


class ShareLinks(Protocol):
    """Public links to finished results (the web page's "Share"): one unguessable, revocable
    link per result; only each token's SHA-256 is stored, so the token is shown once."""

    async def create(self, request_id: str, preview: bytes | None = None) -> str:
        """A new link's token, replacing any earlier link of the result (`preview`: a small
        JPEG kept with it; None keeps the earlier link's)."""

    async def find(self, token: str) -> SharedResult | None:
        """What a token opens; None when it was never made or was revoked."""

    async def is_shared(self, request_id: str) -> bool:
        """The result has a live link."""

    async def revoke(self, request_id: str) -> bool:
        """End every link of the result; False when there was none."""


class ChannelCursors(Protocol):
    """The last message handled per channel, so a restart reads back what came since."""

    async def known(self, platform: str) -> list[tuple[str, str, bool]]:
        """(channel id, last message id handled, private) of every channel seen."""

    async def advance(self, platform: str, channel_id: str, last_id: str, *,
                      is_private: bool = False, only_new: bool = False) -> None:
        """`last_id` is handled, unless a later one is already; `only_new`: only start a
        cursor for a channel that has none."""


class ServiceKeys(Protocol):
    """Random keys made once and shared by every process of the service."""

    async def service_key(self, name: str, size: int = 32) -> bytes:
        """The key called `name` (`size` random bytes, made on first use)."""
