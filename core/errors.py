"""Sonify's exception hierarchy.

Every error a chat user can cause or see is a `UserFacingError` carrying a short,
stable reason `code` and the `params` its message needs. Adapters never show
`str(exc)` from anything else: they map a `UserFacingError` to a localised text
with `core.i18n.describe_error` and replace every other exception with the
generic "generation failed" text.
"""

from __future__ import annotations

from typing import Any

# How long a client is asked to wait while the request log is away (HTTP Retry-After).
OUTAGE_RETRY_AFTER_S = 5


class SonifyError(Exception):
    """Base class for every error Sonify raises on purpose."""


class ConfigError(SonifyError):
    """The configuration file or environment is invalid; the message is one line."""


class ModelMissingError(SonifyError):
    """Model weights are neither cached nor reachable; the message says how to fix it."""


class StorageUnavailable(SonifyError):
    """The request log cannot be written: a request cannot be recorded (so it is not taken)."""


class DatabaseUnavailable(StorageUnavailable):
    """The request log's database is away for now (stopped, restarting, unreachable; SQLite
    locked, read-only or failing to write). New requests are refused with "try again in a
    moment"; what ends a request waits it out (`[storage] outage_grace_s`)."""


class DatabaseDamaged(StorageUnavailable):
    """The request log's file is damaged; the message names it and says what to do."""


class RequestLogInUse(SonifyError):
    """Another process owns this request log (one `sonify run` per log with the local
    backend); the message names it and says how to run several processes."""


class QueueUnavailable(SonifyError):
    """Redis (the redis backend's job queue) cannot be reached at start-up; one line."""


class DuplicateRequest(SonifyError):
    """The platform delivered this update or message before; `request_id` is its row."""

    def __init__(self, request_id: str, created_at: float) -> None:
        super().__init__(f"already recorded as {request_id}")
        self.request_id, self.created_at = request_id, created_at


class UserFacingError(SonifyError):
    """An error whose cause the user can understand; `code` selects the localised text."""

    code: str = "failed"

    def __init__(self, message: str, *, code: str | None = None, **params: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.params: dict[str, Any] = params

    @property
    def message(self) -> str:
        return str(self)


class ImageRejected(UserFacingError):
    """The image (or the link to it) cannot be used.

    Codes: ``bad_url``, ``blocked_address``, ``fetch_failed``, ``fetch_status`` (the server
    answered with an HTTP error, ``params['status']``), ``fetch_unreachable`` (no such host, or
    nothing answers), ``fetch_timeout``,
    ``too_large``, ``empty``, ``not_image``, ``unsupported_format``,
    ``too_many_pixels``, ``bad_dimensions``, ``corrupt``.
    """

    code = "not_image"


class VideoRejected(ImageRejected):
    """A moving picture (a video, or an animated GIF, WebP or PNG) cannot be used.

    Codes besides ``too_large`` and ``empty``: ``not_video``, ``unsupported_video`` (a container
    we recognise and refuse, ``params['format']``), ``unsupported_codec`` (``params['codec']``),
    ``video_too_long`` (``params['max_seconds']``), ``video_too_many_frames``
    (``params['max_frames']``), ``video_too_many_pixels``, ``video_bad_dimensions``,
    ``video_no_frames``, ``video_corrupt``.
    """

    code = "not_video"


class BadRequest(UserFacingError):
    """A request option is invalid (e.g. ``seconds`` out of range). Code ``bad_option``."""

    code = "bad_option"


class QueueFull(UserFacingError):
    """The queue is full; ``params['retry_after_s']`` says roughly how long to wait."""

    code = "busy"


class RateLimited(UserFacingError):
    """The user hit a per-user limit; ``params['retry_after_s']`` says when to retry.

    Codes: ``too_many_running`` (concurrent jobs) and ``hourly_limit``.
    """

    code = "hourly_limit"


class GenerationFailed(UserFacingError):
    """A job failed in the worker. Codes: ``failed``, ``timeout``, ``interrupted``."""

    code = "failed"


class ServiceUnavailable(UserFacingError):
    """Requests cannot be recorded for a moment (the request log is away); nothing was taken.
    Code ``unavailable``; ``params['retry_after_s']`` says when to try again."""

    code = "unavailable"


def try_again_soon() -> ServiceUnavailable:
    """What a user is told for a request the request log could not take (StorageUnavailable)."""
    return ServiceUnavailable("the request log is unavailable",
                              retry_after_s=OUTAGE_RETRY_AFTER_S)


class ShuttingDown(UserFacingError):
    """The service is stopping and takes no new work. Code ``shutting_down``."""

    code = "shutting_down"


class SettingRefused(UserFacingError):
    """A chat setting was not changed. Codes: ``setting_bounds`` (``params['lo']``,
    ``params['hi']``: outside what the operator allows), ``setting_choice`` (not one of the
    choices), ``setting_stale`` (the settings changed since the panel was shown),
    ``setting_denied`` (the member may not change them), ``settings_off`` (the operator
    forbids chat settings), ``setting_channel`` (``params['channel']``: the bot cannot see
    or post there)."""

    code = "setting_bounds"
